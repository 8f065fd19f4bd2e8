"""SmolVLM2 and SmolVLM (SigLIP + pixel-shuffle connector + SmolLM2/Llama) as streaming video LLMs.

Each frame is one global image (no splitting into crops): SigLIP features, pixel shuffle and the
connector give ``image_seq_len`` tokens (64 for the 512 px checkpoints), written
``<fake_token_around_image><global-img><image>*N<fake_token_around_image>``.

* **SmolVLM2** (``model_type`` smolvlm, :class:`SmolVLMVideoLLM`): the layout of transformers'
  ``SmolVLMProcessor`` for a video. The conversation is rendered with the processor's own
  ``DEFAULT_CHAT_TEMPLATE``, as the processor does for every conversation holding a video (the
  hub repos' ``chat_template.json`` renders nothing for a video item). Each frame is announced by
  ``"\\nFrame from MM:SS:"``; ``"\\n\\n"`` closes the video. The processor's video intro names the
  frame count and duration, unknown while streaming: see :data:`STREAM_INTRO`.
* **SmolVLM** v1 (``model_type`` idefics3, :class:`SmolVLMImageSequenceLLM`): that model has no
  video path; the frames are what ``Idefics3Processor`` produces for a sequence of images in one
  user turn: the checkpoint's template with one ``<image>`` per frame, each expanded to the global
  image prompt, nothing between them, no time text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from transformers.models.smolvlm.processing_smolvlm import (
    DEFAULT_CHAT_TEMPLATE,
    DEFAULT_MEDIA_OUTTRO,
    FRAME_TIMESTAMP_MESSAGE,
    get_image_prompt_string,
)

from .base import QUESTION_MARKER, FrameEmbedding, VideoLLM
from .chat_template import ChatTemplate

#: SmolVLM2's streaming video intro: the processor's ``DEFAULT_VIDEO_INTRO`` ("...series of {N} frames
#: from a {H:MM:SS} [H:MM:SS] video.") without the count and duration, which a stream does not know
#: when the intro is prefilled. The choice is measured in docs/ENGINE.md ("SmolVLM2's video intro").
STREAM_INTRO = "You are provided the following series of frames from a live camera stream.\n"
#: Where SmolVLM2's video template comes from (the processor's fallback for conversations with a video).
VIDEO_TEMPLATE_SOURCE = "transformers SmolVLMProcessor.DEFAULT_CHAT_TEMPLATE (its template for videos)"


def frame_time_text(seconds: float) -> str:
    """``"\\nFrame from MM:SS:"`` for a time since the stream start (s), as SmolVLM2 writes it."""
    seconds = max(0.0, float(seconds))
    return FRAME_TIMESTAMP_MESSAGE.format(timestamp=f"{int(seconds // 60):02d}:{int(seconds % 60):02d}")


class _SmolVLMFamily(VideoLLM):
    """Vision path shared by SmolVLM2 and SmolVLM: one global image per frame."""

    def __init__(self, **kwargs) -> None:
        model = kwargs["model"]
        super().__init__(language_model=model.model.text_model, **kwargs)
        config = model.config
        vision = config.vision_config
        self.image_token_id = int(config.image_token_id)
        self.image_seq_len = (vision.image_size // vision.patch_size) ** 2 // (config.scale_factor**2)
        tok = self.tokenizer
        self.image_prompt = get_image_prompt_string(
            0,
            0,
            self.image_seq_len,
            fake_token_around_image=getattr(tok, "fake_image_token", "<fake_token_around_image>"),
            image_token=getattr(tok, "image_token", "<image>"),
            global_image_token=getattr(tok, "global_image_token", "<global-img>"),
        )
        # the time text grows with the time; 10 hours of stream is a safe upper bound for sizing
        self.max_tokens_per_frame = len(self.tokenize(self.frame_text(36000.0)))
        self.check_prompt()

    # ----------------------------------------------------------------- layout (per family)
    def frame_text(self, seconds: float) -> str:
        """The text of one frame at ``seconds`` since the stream start, image tokens included."""
        raise NotImplementedError

    def video_text(self, times_s: Sequence[float]) -> str:
        """The text of consecutive frames at ``times_s`` (what the oracle prompt holds between prefix and question)."""
        return "".join(self.frame_text(t) for t in times_s)

    # ----------------------------------------------------------------- vision
    def preprocess_frames(self, frames: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixel_values [1, n, 3, S, S]`` and ``pixel_attention_mask [1, n, S, S]``: one global image per frame."""
        out = self.image_processor(images=[list(frames)], do_image_splitting=False, return_tensors="pt")
        pixels = out["pixel_values"].to(device=self.device, dtype=self.dtype)
        mask = out["pixel_attention_mask"].to(device=self.device)
        return pixels, mask

    def encode_frames(self, frames: Sequence[np.ndarray], times_s: Sequence[float]) -> list[FrameEmbedding]:
        pixels, mask = self.preprocess_frames(frames)
        features = self.model.model.get_image_features(pixel_values=pixels, pixel_attention_mask=mask).pooler_output[0]
        features = features.reshape(len(frames), -1, features.shape[-1])
        result = []
        for feature, t in zip(features, times_s):
            ids = torch.tensor(self.tokenize(self.frame_text(t)), device=self.device)
            embeds = self.embed_tokens(ids)
            vision = ids == self.image_token_id
            embeds[vision] = feature.to(embeds.dtype)
            result.append(FrameEmbedding(embeds, vision))
        return result

    def oracle_inputs(self, frames, times_s, question, system_prompt) -> dict:
        text = self.prefix_text(system_prompt) + self.video_text(times_s) + self.question_text(question, system_prompt)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        pixels, mask = self.preprocess_frames(frames)
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": torch.ones_like(ids).to(self.device),
            "pixel_values": pixels,
            "pixel_attention_mask": mask,
        }


class SmolVLMVideoLLM(_SmolVLMFamily):
    """SmolVLM2 (``SmolVLMForConditionalGeneration``): the processor's video layout, streamed.

    Attributes:
        intro: text between the chat header and the first frame (:data:`STREAM_INTRO`).
    """

    family = "smolvlm"

    def __init__(self, *, intro: str = STREAM_INTRO, **kwargs) -> None:
        self.intro = intro
        super().__init__(**kwargs)

    @classmethod
    def checkpoint_chat_template(cls, directory: Path) -> ChatTemplate:
        """``SmolVLMProcessor.DEFAULT_CHAT_TEMPLATE``: the processor renders every conversation that holds a
        video with it, whatever the checkpoint's own template (the hub repos' template has no video item)."""
        return ChatTemplate(DEFAULT_CHAT_TEMPLATE, VIDEO_TEMPLATE_SOURCE)

    def frame_text(self, seconds: float) -> str:
        return frame_time_text(seconds) + self.image_prompt

    def prefix_text(self, system_prompt: Optional[str]) -> str:
        return self.split_prompt(system_prompt)[0] + self.intro

    def question_text(self, question: str, system_prompt: Optional[str]) -> str:
        return DEFAULT_MEDIA_OUTTRO + self.split_prompt(system_prompt)[1].replace(QUESTION_MARKER, question)


class SmolVLMImageSequenceLLM(_SmolVLMFamily):
    """SmolVLM v1 (``Idefics3ForConditionalGeneration``): frames as a sequence of images in one user turn."""

    family = "idefics3"
    media_item = "image"
    media_placeholder = "<image>"  # Idefics3Processor's image token (fixed, whatever the tokenizer says)

    def frame_text(self, seconds: float) -> str:
        return self.image_prompt

    def prefix_text(self, system_prompt: Optional[str]) -> str:
        return self.split_prompt(system_prompt)[0]

    def question_text(self, question: str, system_prompt: Optional[str]) -> str:
        return self.split_prompt(system_prompt)[1].replace(QUESTION_MARKER, question)
