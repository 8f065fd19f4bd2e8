"""SmolVLM / SmolVLM2 (SigLIP + pixel-shuffle connector + SmolLM2/Llama) as a streaming video LLM.

Video layout of the model (transformers ``SmolVLMProcessor``): every frame is one global image,
announced by a time text ``"\\nFrame from MM:SS:"`` followed by
``<fake_token_around_image><global-img><image>*N<fake_token_around_image>``. We keep the
per-frame time text; the video intro, which in the offline processor names the frame count
and duration, becomes a streaming intro that names neither (they are unknown while streaming).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from transformers.models.smolvlm.processing_smolvlm import (
    DEFAULT_MEDIA_OUTTRO,
    FRAME_TIMESTAMP_MESSAGE,
    get_image_prompt_string,
)

from .base import QUESTION_MARKER, FrameEmbedding, VideoLLM, split_chat_prompt

STREAM_INTRO = "You are provided the following series of frames from a live camera stream.\n"


def frame_time_text(seconds: float) -> str:
    """``"\\nFrame from MM:SS:"`` for a time since the stream start (s), as SmolVLM2 writes it."""
    seconds = max(0.0, float(seconds))
    return FRAME_TIMESTAMP_MESSAGE.format(timestamp=f"{int(seconds // 60):02d}:{int(seconds % 60):02d}")


class SmolVLMVideoLLM(VideoLLM):
    """Adapter for ``SmolVLMForConditionalGeneration`` and ``Idefics3ForConditionalGeneration``."""

    family = "smolvlm"

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
        self.video_placeholder = "<video>"
        # the time text grows with the time; 10 hours of stream is a safe upper bound for sizing
        self.max_tokens_per_frame = len(self.tokenize(frame_time_text(36000.0) + self.image_prompt))

    # ----------------------------------------------------------------- prompt
    def _split(self, system_prompt: Optional[str]) -> tuple[str, str]:
        return split_chat_prompt(self.render_prompt(QUESTION_MARKER, system_prompt), self.video_placeholder)

    def prefix_text(self, system_prompt: Optional[str]) -> str:
        return self._split(system_prompt)[0] + STREAM_INTRO

    def question_text(self, question: str, system_prompt: Optional[str]) -> str:
        return DEFAULT_MEDIA_OUTTRO + self._split(system_prompt)[1].replace(QUESTION_MARKER, question)

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
            ids = torch.tensor(self.tokenize(frame_time_text(t) + self.image_prompt), device=self.device)
            embeds = self.embed_tokens(ids)
            vision = ids == self.image_token_id
            embeds[vision] = feature.to(embeds.dtype)
            result.append(FrameEmbedding(embeds, vision))
        return result

    def oracle_inputs(self, frames, times_s, question, system_prompt) -> dict:
        video = "".join(frame_time_text(t) + self.image_prompt for t in times_s)
        text = self.prefix_text(system_prompt) + video + self.question_text(question, system_prompt)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        pixels, mask = self.preprocess_frames(frames)
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": torch.ones_like(ids).to(self.device),
            "pixel_values": pixels,
            "pixel_attention_mask": mask,
        }
