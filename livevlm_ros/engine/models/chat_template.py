"""The chat template a checkpoint's processor uses, found the way transformers' processor finds it.

``ProcessorMixin.from_pretrained`` (transformers 5.23) takes, in this order:

1. a ``chat_template`` entry of ``processor_config.json`` (the 2024 llava-hf layout);
2. ``chat_template.json`` (``{"chat_template": ...}``, the 4.4x layout); it may not be combined
   with ``additional_chat_templates/*.jinja``;
3. ``chat_template.jinja`` as the default template, plus ``additional_chat_templates/*.jinja``
   as named ones (the layout transformers 5 saves).

A dict of named templates resolves to its ``"default"`` entry. The tokenizer's own template
(``tokenizer_config.json``) is never used by a processor: for these checkpoints it is the language
model's text-only template, which cannot place a video. Family-specific overrides (SmolVLM's
processor swaps in its own template for any conversation holding a video) live in the adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..errors import ModelLoadError
from .checkpoint import processor_config, read_json

PROCESSOR_CONFIG = "processor_config.json"
LEGACY_TEMPLATE_FILE = "chat_template.json"
TEMPLATE_FILE = "chat_template.jinja"
TEMPLATE_DIR = "additional_chat_templates"


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and where it came from (named in every error about it)."""

    text: str
    source: str


def processor_chat_template(directory: Path) -> ChatTemplate:
    """The chat template transformers' processor would load from checkpoint ``directory``.

    Raises:
        ModelLoadError: no template file (saying what the tokenizer config holds instead), a template
            entry that is not text, conflicting template files, or named templates without a default.
    """
    entry = (processor_config(directory) or {}).get("chat_template")
    if entry is not None:
        return _resolve(entry, f"{directory / PROCESSOR_CONFIG} (chat_template)")
    named = {p.stem: p for p in sorted((directory / TEMPLATE_DIR).glob("*.jinja"))}
    legacy = directory / LEGACY_TEMPLATE_FILE
    if legacy.is_file():
        if named:
            raise ModelLoadError(
                f"{directory} has both {LEGACY_TEMPLATE_FILE} and {TEMPLATE_DIR}/*.jinja; transformers refuses this "
                f"mix: keep one (a {TEMPLATE_FILE} file replaces {LEGACY_TEMPLATE_FILE})")
        content = read_json(legacy)
        if not isinstance(content, dict) or "chat_template" not in content:
            raise ModelLoadError(f"{legacy} has no 'chat_template' entry; expected {{\"chat_template\": \"...\"}}")
        return _resolve(content["chat_template"], str(legacy))
    templates = {name: _read_text(path) for name, path in named.items()}
    if (directory / TEMPLATE_FILE).is_file():
        templates["default"] = _read_text(directory / TEMPLATE_FILE)
    if templates:
        return _resolve(templates, str(directory / (TEMPLATE_FILE if "default" in templates else TEMPLATE_DIR)))
    tokenizer_config = directory / "tokenizer_config.json"
    has_text_template = tokenizer_config.is_file() and "chat_template" in (read_json(tokenizer_config) or {})
    raise ModelLoadError(
        f"{directory} has no processor chat template: expected {TEMPLATE_FILE}, {LEGACY_TEMPLATE_FILE} or a "
        f"'chat_template' entry in {PROCESSOR_CONFIG}"
        + (" (tokenizer_config.json has only the language model's text template, which cannot place a video)"
           if has_text_template else ""))


def _resolve(value: Union[str, dict, None], source: str) -> ChatTemplate:
    if isinstance(value, dict):
        if "default" not in value:
            raise ModelLoadError(f"{source} holds named chat templates {sorted(value)} but none named 'default'")
        value = value["default"]
    if isinstance(value, list):  # the tokenizer-config style list of {"name", "template"}
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        return _resolve(named, source)
    if not isinstance(value, str) or not value.strip():
        raise ModelLoadError(f"{source}: the chat template must be non-empty text, got {type(value).__name__}")
    return ChatTemplate(value, source)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
