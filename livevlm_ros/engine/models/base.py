"""The model-family interface the streaming engine drives.

A :class:`VideoLLM` wraps one transformers vision-language model and exposes exactly what
streaming needs: the prompt split around the video (prefix / per-frame / question suffix),
per-frame embeddings from the model's own vision tower and projector, and handles on the
language model's decoder layers, final norm, LM head and rotary embedding. The engine runs
the decoder layers itself (see :mod:`livevlm_ros.engine.decoder`) so it can keep pre-RoPE keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InvalidFrameError, ModelLoadError
from .chat_template import ChatTemplate, processor_chat_template

#: Split marker placed where the question goes when rendering a chat template.
QUESTION_MARKER = "\u0000LIVEVLM_QUESTION\u0000"


@dataclass
class FrameEmbedding:
    """Language-model input of one frame.

    Attributes:
        embeds: ``[n, hidden]`` input embeddings, in prompt order (time text, delimiters, image tokens).
        vision: ``[n]`` bool, True for the image tokens (the output of the vision tower and projector);
            False for *structure* tokens (SmolVLM2's ``Frame from MM:SS:`` text, image delimiters). The
            memory never evicts a frame's structure tokens while any of its vision tokens remain.
    """

    embeds: torch.Tensor
    vision: torch.Tensor

    @classmethod
    def all_vision(cls, embeds: torch.Tensor) -> "FrameEmbedding":
        """A frame whose every token is content (LLaVA-OneVision frames, caption "frames" of a text proxy)."""
        return cls(embeds, torch.ones(embeds.shape[0], dtype=torch.bool, device=embeds.device))


@dataclass
class QuestionEmbedding:
    """Language-model input of everything after the last frame, up to the answer's start.

    Attributes:
        embeds: ``[q, hidden]`` (video outro, chat-template text, the question, the assistant header).
        own: ``[q]`` bool, True for the tokens of the question text itself (retrieval pools over these).
    """

    embeds: torch.Tensor
    own: torch.Tensor


def check_frame(frame: np.ndarray) -> None:
    """Raise :class:`InvalidFrameError` unless ``frame`` is RGB ``uint8`` ``(H, W, 3)`` with H, W > 0."""
    if not isinstance(frame, np.ndarray):
        raise InvalidFrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise InvalidFrameError(f"frame must have dtype uint8, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InvalidFrameError(f"frame must have shape (H, W, 3) (RGB), got {tuple(frame.shape)}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InvalidFrameError(f"frame is empty: shape {tuple(frame.shape)}")


def split_chat_prompt(rendered: str, placeholder: str, source: str = "the model's chat template") -> tuple[str, str]:
    """Split a rendered chat prompt into (text before the media placeholder, text after it with the question).

    Args:
        rendered: the template rendered for one user turn holding one media item and :data:`QUESTION_MARKER`.
        placeholder: what the template writes for the media item (``<video>``, ``<image>``).
        source: where the template came from, for the error message.

    Raises:
        ModelLoadError: the template did not render the placeholder once, then the question once.
    """
    if rendered.count(placeholder) != 1 or rendered.count(QUESTION_MARKER) != 1:
        shown = rendered.replace(QUESTION_MARKER, "<question>")
        raise ModelLoadError(
            f"the chat template from {source} must render one {placeholder!r} for the media item and the question "
            f"once; it rendered {rendered.count(placeholder)} {placeholder!r} and "
            f"{rendered.count(QUESTION_MARKER)} question(s): {shown!r}"
        )
    before, after = rendered.split(placeholder)
    if QUESTION_MARKER not in after:
        raise ModelLoadError(f"the chat template from {source} places the question before the media; not supported")
    return before, after


class VideoLLM:
    """A loaded video LLM and the pieces of it the streaming engine uses.

    Subclasses set the family-specific parts: :meth:`encode_frames`, :meth:`question_embeds`
    and the prompt texts. Everything runs under ``torch.inference_mode``.

    Attributes:
        name: the id, path or tiny-model name it was loaded from.
        is_tiny: True for the built-in random-weight models (answers mean nothing).
        model: the transformers ``*ForConditionalGeneration`` module (eval mode).
        tokenizer / image_processor: the model's own processors.
        chat_template / chat_template_source: the Jinja template rendered for the conversation, and where
            it came from (a checkpoint file, a processor default, or built-in).
        layers: the language model's decoder layers (Qwen2 / Llama layout).
        final_norm, lm_head, rotary_emb, embed_tokens: language-model modules.
    """

    family: str = ""
    #: Upper bound of the tokens one frame takes in the language model (set by each family).
    max_tokens_per_frame: int = 0
    #: The content item the frames take in the chat conversation, and what the template renders for it.
    media_item: str = "video"
    media_placeholder: str = "<video>"

    def __init__(
        self,
        *,
        name: str,
        model: nn.Module,
        language_model: nn.Module,
        tokenizer,
        image_processor,
        chat_template: str,
        is_tiny: bool,
        chat_template_source: str = "built-in",
    ) -> None:
        self.name = name
        self.is_tiny = is_tiny
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.chat_template_source = chat_template_source
        self.language_model = language_model
        self.layers = language_model.layers
        self.final_norm = language_model.norm
        self.rotary_emb = language_model.rotary_emb
        self.embed_tokens = language_model.embed_tokens
        self.lm_head = model.lm_head
        text_config = language_model.config
        self.text_config = text_config
        self.num_layers = len(self.layers)
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.num_heads = text_config.num_attention_heads
        self.num_kv_heads = text_config.num_key_value_heads
        self.max_position_embeddings = int(text_config.max_position_embeddings)
        self._check_supported_layers()
        self.eos_token_ids = self._collect_eos_ids()
        #: question_text(QUESTION_MARKER, system_prompt) per system prompt: the chat template is
        #: rendered once, not once per question.
        self._question_templates: dict[Optional[str], str] = {}

    @classmethod
    def checkpoint_chat_template(cls, directory: Path) -> ChatTemplate:
        """The template this family's processor renders the frames' conversation with, for checkpoint
        ``directory`` (default: the checkpoint's own processor template)."""
        return processor_chat_template(directory)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.embed_tokens.weight.shape[1]

    # ----------------------------------------------------------------- checks
    def _check_supported_layers(self) -> None:
        attn = self.layers[0].self_attn
        for required in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if not hasattr(attn, required):
                raise ModelLoadError(f"{self.name}: attention module lacks {required}; unsupported language model")
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            raise ModelLoadError(f"{self.name}: attention with q/k norms is not supported (Qwen2/Llama layouts only)")
        layer_types = getattr(self.text_config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise ModelLoadError(f"{self.name}: sliding-window attention layers are not supported: {set(layer_types)}")

    def _collect_eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if source is None:
                continue
            ids.update(source if isinstance(source, (list, tuple)) else [source])
        if not ids:
            raise ModelLoadError(f"{self.name}: no end-of-sequence token in the tokenizer or generation config")
        return frozenset(int(i) for i in ids)

    # ----------------------------------------------------------------- text helpers
    def embed_text(self, text: str) -> torch.Tensor:
        """Token embeddings ``[n, hidden]`` of ``text`` (no BOS added)."""
        return self.embed_ids(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def tokenize_marking(self, text: str, span: tuple[int, int]) -> tuple[list[int], list[bool]]:
        """Token ids of ``text`` and, per token, whether it overlaps the characters ``text[span[0]:span[1]]``.

        The text is tokenized as one string (so ids equal :meth:`tokenize`), and the span is found
        through the fast tokenizer's offset mapping.
        """
        if not text:
            return [], []
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        start, end = span
        marks = [begin < end and stop > start for begin, stop in encoded["offset_mapping"]]
        return list(encoded["input_ids"]), marks

    def embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        index = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        return self.embed_tokens(index)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def render_prompt(self, question: str, system_prompt: Optional[str]) -> str:
        """The model's chat template rendered for one user turn: the media item, then ``question``.

        Raises:
            ModelLoadError: the template cannot render such a turn (naming the template's source).
        """
        messages = []
        if system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
        messages.append({"role": "user", "content": [{"type": self.media_item}, {"type": "text", "text": question}]})
        try:
            return self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja2 errors, or a text-only template meeting list contents (TypeError)
            raise ModelLoadError(
                f"{self.name}: the chat template from {self.chat_template_source} cannot render a user turn with a "
                f"{self.media_item} item and a question: {type(exc).__name__}: {exc}"
            ) from exc

    def split_prompt(self, system_prompt: Optional[str]) -> tuple[str, str]:
        """(text before the first frame, text after the last frame with :data:`QUESTION_MARKER`), as the
        template renders them around the media item."""
        rendered = self.render_prompt(QUESTION_MARKER, system_prompt)
        return split_chat_prompt(rendered, self.media_placeholder, self.chat_template_source)

    def check_prompt(self) -> None:
        """Render the prompt once, so that a template that cannot place the frames fails at load time.

        Raises:
            ModelLoadError: as :meth:`render_prompt` and :func:`split_chat_prompt`.
        """
        self.prefix_text(None)
        self.question_text("?", None)

    # ----------------------------------------------------------------- family-specific
    def prefix_text(self, system_prompt: Optional[str]) -> str:
        """Text before the first frame (system prompt, chat-template header, video intro)."""
        raise NotImplementedError

    def question_text(self, question: str, system_prompt: Optional[str]) -> str:
        """Text after the last frame: video outro, the question and the assistant header."""
        raise NotImplementedError

    def question_embeds(self, question: str, system_prompt: Optional[str]) -> QuestionEmbedding:
        """Embeddings of everything after the last frame, ending at the answer's start, with the
        question's own tokens marked."""
        template = self._question_templates.get(system_prompt)
        if template is None:
            template = self._question_templates[system_prompt] = self.question_text(QUESTION_MARKER, system_prompt)
        start = template.index(QUESTION_MARKER)
        text = template.replace(QUESTION_MARKER, question)
        ids, own = self.tokenize_marking(text, (start, start + len(question)))
        return QuestionEmbedding(self.embed_ids(ids), torch.tensor(own, dtype=torch.bool, device=self.device))

    def encode_frames(self, frames: Sequence[np.ndarray], times_s: Sequence[float]) -> list[FrameEmbedding]:
        """Embeddings of each frame (time text, if any, then vision tokens), through the model's vision tower.

        Args:
            frames: RGB ``uint8`` arrays ``(H, W, 3)``, already validated.
            times_s: each frame's time since the start of the stream (s), for time text.
        """
        raise NotImplementedError

    def oracle_inputs(self, frames: Sequence[np.ndarray], times_s: Sequence[float], question: str,
                      system_prompt: Optional[str]) -> dict:
        """Inputs for ``model.generate`` describing the same prompt the stream builds (tests' oracle)."""
        raise NotImplementedError

    def describe(self) -> str:
        kind = "RANDOM-WEIGHT tiny test model" if self.is_tiny else "pretrained"
        return (
            f"{self.name} ({self.family}, {kind}, {self.num_layers} layers, {self.num_kv_heads} KV heads x "
            f"{self.head_dim}, max positions {self.max_position_embeddings}, {self.dtype}, {self.device})"
        )
