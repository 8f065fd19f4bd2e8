"""The stream against the model's own transformers processor path: pixels, prompt ids, first-token logits.

The engine prepares frames with the checkpoint's image processor on the PIL backend and builds the
prompt itself; transformers' processors (``AutoProcessor``) prepare videos with torchvision. This
benchmark runs the same real frames both ways through the two full-size layouts of
:mod:`.layouts` (LLaVA-OneVision-0.5B, random weights; SmolVLM-256M with the real SmolLM2-135M
language model and SmolVLM2's video prompt) and prints:

* pixels: largest difference between the two preprocessings, in grey levels of the input;
* prompt: token counts, and whether the ids are identical (SmolVLM2: apart from the video intro);
* first-token logits of the stream (``memory="full"``, no retrieval) against the model's forward on
  the processor's inputs: largest absolute difference, ``KL(P_processor || P_stream)``, same argmax;
  for SmolVLM2 separately for the pixels alone (stream given the processor's intro) and for the intro.

Needs torchvision, which the project does not install (see docs/ENGINE.md for the scratch venv):
``python -m livevlm_ros.bench.processor_fidelity [--video V] [--frames 8] [--clips 3] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from livevlm_ros.engine import EngineConfig, LiveVLMStream
from livevlm_ros.engine.models.smolvlm import STREAM_INTRO

from .intro_effect import processor_intro

QUESTION = "What is happening on the road?"


def video_clips(path: str, clips: int, count: int, fps: float = 1.0, spacing_s: float = 10.0) -> list:
    """``clips`` lists of ``count`` RGB frames ``1/fps`` apart from the video at ``path``, starting
    ``spacing_s`` apart (0, 10, 20 s ...)."""
    from livevlm_ros.io.sources import open_source

    frames = [(t, rgb) for t, rgb in open_source(path, fps=fps)]
    out = []
    for k in range(clips):
        clip = [rgb for t, rgb in frames if t >= k * spacing_s][:count]
        if len(clip) < count:
            raise SystemExit(f"{path} is too short for {clips} clips of {count} frames")
        out.append(clip)
    return out


def _stream_logits(model, frames, times, question=QUESTION) -> torch.Tensor:
    stream = LiveVLMStream(model, EngineConfig(memory="full", retrieval="none", clip_frames=len(frames)))
    for frame, t in zip(frames, times):
        stream.ingest(frame, t)
    return stream.first_token_logits(question).float()


def _compare(reference: torch.Tensor, other: torch.Tensor) -> dict:
    ref, oth = torch.log_softmax(reference, -1), torch.log_softmax(other, -1)
    return {"max_abs_logit_diff": float((reference - other).abs().max()),
            "kl_nats": float((ref.exp() * (ref - oth)).sum()),
            "same_argmax": int(reference.argmax()) == int(other.argmax())}


def _grey_levels(a: torch.Tensor, b: torch.Tensor, std: Sequence[float]) -> float:
    """Largest difference of two normalized pixel tensors ``[..., 3, H, W]``, in 0-255 input grey levels."""
    scale = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0
    return float(((a.float() - b.float()).abs() * scale).max())


def llava_onevision(clips: list) -> list:
    """One row per clip: the LLaVA-OneVision-0.5B layout, stream against processor."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    from .layouts import _OV_GRID, build_llava_onevision_05b

    model = build_llava_onevision_05b(dtype="float32")
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": 384, "width": 384}, image_grid_pinpoints=_OV_GRID,
                                                     image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=model.tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3,
                                                     image_std=[0.5] * 3, resample=3),
        chat_template=model.chat_template, num_image_tokens=729, vision_feature_select_strategy="full")
    return [_llava_clip(model, processor, frames) for frames in clips]


def _llava_clip(model, processor, frames: list) -> dict:
    times = [float(t) for t in range(len(frames))]
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(text=text, videos=[np.stack(frames)], return_tensors="pt")
    oracle = model.oracle_inputs(frames, times, QUESTION, None)
    with torch.inference_mode():
        processor_logits = model.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                       pixel_values_videos=inputs["pixel_values_videos"]).logits[0, -1].float()
    stream = _stream_logits(model, frames, times)
    return {"layout": "llava-onevision-0.5b (random weights)", "frames": len(frames),
            "pixels_max_grey_levels": _grey_levels(oracle["pixel_values_videos"], inputs["pixel_values_videos"], [0.5] * 3),
            "prompt_tokens_stream": int(oracle["input_ids"].shape[1]),
            "prompt_tokens_processor": int(inputs["input_ids"].shape[1]),
            "prompt_ids_identical": torch.equal(oracle["input_ids"], inputs["input_ids"]),
            "logits_stream_vs_processor": _compare(processor_logits, stream)}


def smolvlm2(clips: list) -> list:
    """One row per clip: the SmolVLM-256M layout (real LM) with SmolVLM2's video prompt."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    from .layouts import build_smolvlm_256m

    model = build_smolvlm_256m(dtype="float32", chat_template=DEFAULT_CHAT_TEMPLATE)
    size = {"longest_edge": 512}
    common = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=1, do_image_splitting=False, max_image_size=size)
    processor = SmolVLMProcessor(image_processor=SmolVLMImageProcessor(size=size, **common), tokenizer=model.tokenizer,
                                 video_processor=SmolVLMVideoProcessor(size=size, **common), image_seq_len=64)
    return [_smolvlm2_clip(model, processor, frames) for frames in clips]


def _smolvlm2_clip(model, processor, frames: list) -> dict:
    from transformers.video_utils import VideoMetadata

    n = len(frames)
    times = [float(t) for t in range(n)]
    metadata = VideoMetadata(total_num_frames=n, fps=1.0, frames_indices=list(range(n)), duration=float(n))
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(text=text, videos=[np.stack(frames)], video_metadata=[metadata], do_sample_frames=False,
                       return_tensors="pt")
    with torch.inference_mode():
        processor_logits = model.model(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values",
                                                                 "pixel_attention_mask")}).logits[0, -1].float()
    intro = processor_intro(n, float(n))
    model.intro = intro
    with_processor_intro = model.oracle_inputs(frames, times, QUESTION, None)["input_ids"]
    stream_processor_intro = _stream_logits(model, frames, times)
    model.intro = STREAM_INTRO
    stream_ids = model.oracle_inputs(frames, times, QUESTION, None)["input_ids"]
    stream_default = _stream_logits(model, frames, times)
    pixels, _ = model.preprocess_frames(frames)
    return {"layout": "smolvlm-256m (real SmolLM2-135M LM, random vision tower), SmolVLM2 video prompt",
            "frames": n,
            "pixels_max_grey_levels": _grey_levels(pixels, inputs["pixel_values"], [0.5] * 3),
            "prompt_tokens_stream": int(stream_ids.shape[1]),
            "prompt_tokens_processor": int(inputs["input_ids"].shape[1]),
            "intro_tokens": {"stream": len(model.tokenize(STREAM_INTRO)), "processor": len(model.tokenize(intro))},
            "prompt_ids_identical_given_the_processor_intro": torch.equal(with_processor_intro, inputs["input_ids"]),
            "logits_pixels_only": _compare(processor_logits, stream_processor_intro),
            "logits_intro_only": _compare(stream_processor_intro, stream_default),
            "logits_stream_vs_processor": _compare(processor_logits, stream_default)}


def _worst(rows: list) -> dict:
    """Per layout, the largest pixel and logit differences and the smallest argmax agreement over the clips."""
    worst = {}
    for row in rows:
        entry = worst.setdefault(row["layout"], {})
        for key, value in row.items():
            if key.startswith("pixels"):
                entry[key] = max(entry.get(key, 0.0), value)
            elif key.startswith("logits"):
                agg = entry.setdefault(key, {"max_abs_logit_diff": 0.0, "kl_nats": 0.0, "same_argmax": 0, "clips": 0})
                agg["max_abs_logit_diff"] = max(agg["max_abs_logit_diff"], value["max_abs_logit_diff"])
                agg["kl_nats"] = max(agg["kl_nats"], value["kl_nats"])
                agg["same_argmax"] += int(value["same_argmax"])
                agg["clips"] += 1
    return worst


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m livevlm_ros.bench.processor_fidelity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default="../shared/data/videos/car-detection.mp4")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (1 s apart)")
    parser.add_argument("--clips", type=int, default=3, help="clips, starting 10 s apart")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        raise SystemExit("needs torchvision (transformers' video processors use it); see docs/ENGINE.md")
    torch.manual_seed(0)
    clips = video_clips(args.video, args.clips, args.frames)
    rows = llava_onevision(clips) + smolvlm2(clips)
    result = {"video": args.video, "torch": torch.__version__, "clips": args.clips, "rows": rows,
              "worst": _worst(rows)}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
