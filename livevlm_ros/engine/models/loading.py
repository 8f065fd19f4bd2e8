"""Load a video LLM by tiny-model name, hub id or local directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .base import VideoLLM
from .checkpoint import check_checkpoint, resolve_checkpoint
from .llava_onevision import LlavaOnevisionVideoLLM
from .smolvlm import SmolVLMImageSequenceLLM, SmolVLMVideoLLM
from .tiny import (
    TINY_LLAVA_ONEVISION,
    TINY_MODELS,
    TINY_PREFIX,
    TINY_SMOLVLM,
    build_tiny_llava_onevision,
    build_tiny_smolvlm,
)

LOG = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: transformers ``model_type`` -> (adapter class, transformers model class name): LLaVA-OneVision,
#: SmolVLM2, SmolVLM v1 (Idefics3 classes).
SUPPORTED_MODEL_TYPES = {
    "llava_onevision": (LlavaOnevisionVideoLLM, "LlavaOnevisionForConditionalGeneration"),
    "smolvlm": (SmolVLMVideoLLM, "SmolVLMForConditionalGeneration"),
    "idefics3": (SmolVLMImageSequenceLLM, "Idefics3ForConditionalGeneration"),
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
            Looked up locally first (directory, then the hub cache); the hub is contacted only for an
            ``owner/name`` id that is in neither, and never with ``HF_HUB_OFFLINE=1``.
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


def _load_pretrained(name: str, device: torch.device, dtype: torch.dtype) -> VideoLLM:
    if name.startswith(TINY_PREFIX) and not os.path.exists(name):
        raise ModelLoadError(f"{name!r} is not a built-in test model; those are {', '.join(TINY_MODELS)}")
    directory = resolve_checkpoint(name, not_found_hint=f", nor one of the built-in test models {TINY_MODELS}")
    return load_checkpoint_directory(name, directory, device, dtype)


def load_checkpoint_directory(name: str, directory: Path, device: torch.device, dtype: torch.dtype) -> VideoLLM:
    """Load the checked checkpoint in ``directory`` (the local copy of ``name``) as a streaming adapter.

    Everything that can be checked without the weights is checked first (files, model type, chat
    template, tokenizer, image processor); then the weights load, and every parameter of the model
    must come from them (a missing tensor would otherwise stay randomly initialised).

    Raises:
        ModelLoadError: what was found in ``directory`` and what was expected.
    """
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    files = check_checkpoint(directory, SUPPORTED_MODEL_TYPES)
    adapter_cls, class_name = SUPPORTED_MODEL_TYPES[files.config["model_type"]]
    template = adapter_cls.checkpoint_chat_template(directory)
    weights = ", ".join(w.name for w in files.weights)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of {directory} (tokenizer.json / tokenizer_config.json): "
                             f"{exc}") from exc
    try:
        image_processor = AutoImageProcessor.from_pretrained(directory, backend="pil", trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"could not load the image processor of {directory} (preprocessor_config.json or "
                             f"processor_config.json): {exc}") from exc
    try:
        net, info = getattr(transformers, class_name).from_pretrained(
            directory, dtype=dtype, trust_remote_code=False, attn_implementation="sdpa", output_loading_info=True
        )
    except Exception as exc:  # config values the class rejects, tensors of the wrong shape, unreadable weights
        raise ModelLoadError(f"could not load {class_name} from {directory} ({weights}): {exc}") from exc
    _check_loading_info(directory, weights, info)
    try:
        adapter = adapter_cls(name=name, model=net.to(device), tokenizer=tokenizer, image_processor=image_processor,
                              chat_template=template.text, chat_template_source=template.source, is_tiny=False)
    except ModelLoadError:
        raise
    except Exception as exc:  # a config or tokenizer without what the family's layout needs
        raise ModelLoadError(f"{directory} loaded as {class_name}, but not in the layout the {adapter_cls.family} "
                             f"adapter expects: {type(exc).__name__}: {exc}") from exc
    LOG.info("loaded %s from %s (%s, chat template from %s) on %s as %s", name, directory, class_name,
             template.source, device, dtype)
    return adapter


def _check_loading_info(directory: Path, weights: str, info: dict) -> None:
    """Raise when the weights left model parameters uninitialised or had tensors of the wrong shape."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing:
        raise ModelLoadError(
            f"the weights in {directory} ({weights}) lack {len(missing)} tensor(s) the model needs, e.g. "
            f"{', '.join(missing[:3])}; expected a complete checkpoint of this architecture"
        )
    if mismatched:
        raise ModelLoadError(f"the weights in {directory} ({weights}) have tensors of the wrong shape: {mismatched[:3]}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        LOG.warning("%s: %d tensor(s) in the weights are not used by the model, e.g. %s", directory, len(unexpected),
                    ", ".join(unexpected[:3]))
