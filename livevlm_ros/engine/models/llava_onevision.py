"""LLaVA-OneVision (SigLIP + Qwen2) as a streaming video LLM.

Video layout of the model (transformers ``LlavaOnevisionModel.get_video_features``): each frame
is resized to the vision tower's square input, encoded, projected and bilinearly pooled 2x
(27x27 -> 14x14 = 196 tokens for the 384 px checkpoints); one ``image_newline`` embedding
follows the *last* frame. The chat template puts ``<video>`` before the question, so the
prompt splits cleanly into prefix / frames / (newline + question suffix).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from transformers.image_utils import SizeDict

from .base import QUESTION_MARKER, FrameEmbedding, QuestionEmbedding, VideoLLM


class LlavaOnevisionVideoLLM(VideoLLM):
    """Adapter for ``LlavaOnevisionForConditionalGeneration``."""

    family = "llava_onevision"

    def __init__(self, **kwargs) -> None:
        model = kwargs["model"]
        super().__init__(language_model=model.model.language_model, **kwargs)
        config = model.config
        self._vision_layer = config.vision_feature_layer
        self._select_strategy = config.vision_feature_select_strategy
        self.video_token = getattr(self.tokenizer, "video_token", None) or "<video>"
        self.media_placeholder = self.video_token
        vision = config.vision_config
        self.frame_size = SizeDict(height=vision.image_size, width=vision.image_size)
        side = vision.image_size // vision.patch_size
        self.tokens_per_frame = ((side + 1) // 2) ** 2
        self.max_tokens_per_frame = self.tokens_per_frame
        self.check_prompt()

    # ----------------------------------------------------------------- prompt
    def prefix_text(self, system_prompt: Optional[str]) -> str:
        return self.split_prompt(system_prompt)[0]

    def question_text(self, question: str, system_prompt: Optional[str]) -> str:
        return self.split_prompt(system_prompt)[1].replace(QUESTION_MARKER, question)

    def question_embeds(self, question: str, system_prompt: Optional[str]) -> QuestionEmbedding:
        """``image_newline`` (closes the video) followed by the question suffix's token embeddings."""
        newline = self.model.model.image_newline.to(self.dtype)[None, :]
        text = super().question_embeds(question, system_prompt)
        own = torch.cat([torch.zeros(1, dtype=torch.bool, device=self.device), text.own])
        return QuestionEmbedding(torch.cat([newline, text.embeds], dim=0), own)

    # ----------------------------------------------------------------- vision
    def preprocess_frames(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """``[1, n, 3, S, S]`` pixel values: the video path of the model (square resize, rescale, normalize).

        Uses the checkpoint's own image processor (PIL backend) for each step.
        """
        proc = self.image_processor
        pixels = []
        for frame in frames:
            chw = np.ascontiguousarray(frame.transpose(2, 0, 1))
            chw = proc.resize(chw, size=self.frame_size, resample=proc.resample)
            chw = proc.rescale(chw, proc.rescale_factor)
            chw = proc.normalize(chw, proc.image_mean, proc.image_std)
            pixels.append(torch.from_numpy(np.ascontiguousarray(chw)))
        return torch.stack(pixels)[None].to(device=self.device, dtype=self.dtype)

    def encode_frames(self, frames: Sequence[np.ndarray], times_s: Sequence[float]) -> list[FrameEmbedding]:
        pixels = self.preprocess_frames(frames)
        features = self.model.model.get_video_features(
            pixel_values_videos=pixels,
            vision_feature_layer=self._vision_layer,
            vision_feature_select_strategy=self._select_strategy,
        ).pooler_output[0, :-1]  # drop the trailing image_newline: it belongs after the *last* frame
        return [FrameEmbedding.all_vision(f) for f in features.reshape(len(frames), -1, features.shape[-1])]

    def oracle_inputs(self, frames, times_s, question, system_prompt) -> dict:
        n_tokens = len(frames) * self.tokens_per_frame + 1
        text = self.render_prompt(question, system_prompt).replace(self.video_token, self.video_token * n_tokens)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": torch.ones_like(ids).to(self.device),
            "pixel_values_videos": self.preprocess_frames(frames),
        }
