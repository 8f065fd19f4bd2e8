"""Load a video LLM by tiny-model name, hub id or local directory."""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

import torch

from ..errors import ModelLoadError
from .base import VideoLLM
from .llava_onevision import LlavaOnevisionVideoLLM
from .smolvlm import SmolVLMVideoLLM
from .tiny import TINY_LLAVA_ONEVISION, TINY_MODELS, TINY_SMOLVLM, build_tiny_llava_onevision, build_tiny_smolvlm

LOG = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: transformers ``model_type`` -> (adapter class, transformers model class name).
SUPPORTED_MODEL_TYPES = {
    "llava_onevision": (LlavaOnevisionVideoLLM, "LlavaOnevisionForConditionalGeneration"),
    "smolvlm": (SmolVLMVideoLLM, "SmolVLMForConditionalGeneration"),
    "idefics3": (SmolVLMVideoLLM, "Idefics3ForConditionalGeneration"),
}

_TINY_BUILDERS = {
    TINY_LLAVA_ONEVISION: (LlavaOnevisionVideoLLM, build_tiny_llava_onevision),
    TINY_SMOLVLM: (SmolVLMVideoLLM, build_tiny_smolvlm),
}


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; a clear error where CUDA is absent."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif resolved.type != "cpu":
        raise ModelLoadError(f"unsupported device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return resolved


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_video_llm(model: str, device: str = "cpu", dtype: str = "float32") -> VideoLLM:
    """Load a video LLM for streaming.

    Args:
        model: ``tiny-llava-onevision`` / ``tiny-smolvlm`` (random weights, tests only), a Hugging Face
            hub id (e.g. ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf``,
            ``HuggingFaceTB/SmolVLM2-256M-Video-Instruct``) or a local directory holding such a checkpoint.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32``, ``float16`` or ``bfloat16``.

    Raises:
        ModelLoadError: naming the id/path and what was expected.
    """
    if not isinstance(model, str) or not model.strip():
        raise ModelLoadError("no model given: pass a tiny model name, a hub id or a local directory")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if model in _TINY_BUILDERS:
        adapter_cls, builder = _TINY_BUILDERS[model]
        net, tokenizer, image_processor, template = builder()
        net = net.to(device=torch_device, dtype=torch_dtype)
        return adapter_cls(name=model, model=net, tokenizer=tokenizer, image_processor=image_processor,
                           chat_template=template, is_tiny=True)
    return _load_pretrained(model, torch_device, torch_dtype)


def _load_pretrained(model: str, device: torch.device, dtype: torch.dtype) -> VideoLLM:
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    if os.path.exists(model):
        if not os.path.isdir(model):
            raise ModelLoadError(f"{model!r} is a file; expected a checkpoint directory (config.json + weights)")
    elif model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelLoadError(f"model directory {model!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError/ValueError/HF errors here
        raise ModelLoadError(
            f"could not load a model config from {model!r}: {exc}. Expected a local checkpoint directory or a "
            f"Hugging Face hub id reachable from this machine (set HF_HUB_OFFLINE=1 to use the local cache only), "
            f"or one of the built-in test models {TINY_MODELS}."
        ) from exc
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{model!r} is a {model_type!r} model; supported model types: {sorted(SUPPORTED_MODEL_TYPES)} "
            "(LLaVA-OneVision, SmolVLM/SmolVLM2, Idefics3)"
        )
    adapter_cls, class_name = SUPPORTED_MODEL_TYPES[model_type]
    try:
        net = getattr(transformers, class_name).from_pretrained(
            model, dtype=dtype, trust_remote_code=False, attn_implementation="sdpa"
        )
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
        image_processor = AutoImageProcessor.from_pretrained(model, backend="pil", trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"could not load the weights or processors of {model!r}: {exc}") from exc
    template = _chat_template(model, tokenizer)
    LOG.info("loaded %s (%s) on %s as %s", model, class_name, device, dtype)
    return adapter_cls(name=model, model=net.to(device), tokenizer=tokenizer, image_processor=image_processor,
                       chat_template=template, is_tiny=False)


def _chat_template(model: str, tokenizer) -> Optional[str]:
    """The processor's chat template (``chat_template.json``/``.jinja``), else the tokenizer's."""
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        try:
            path = cached_file(model, filename, _raise_exceptions_for_missing_entries=False)
        except Exception:  # hub unreachable: fall back to the tokenizer's template
            path = None
        if path:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise ModelLoadError(f"{model!r} has no chat template (chat_template.jinja/json or tokenizer template)")
