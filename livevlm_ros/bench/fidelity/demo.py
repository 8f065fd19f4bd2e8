"""Watch the memory work with real weights: ``livevlm_bench --fidelity-demo`` (about a minute on 2 cores).

A captioned stream (TEXT CAPTIONS standing in for video frames: NOT images) goes into real
SmolLM2-135M-Instruct twice, once with full KV and once under a 20% memory budget (VSB + PaR,
the engine defaults; a memory this short is under PaR's floor, so the answer reads all of it).
Then it asks about the early, middle and late events and prints, per question, the ground truth,
the full-KV answer and the compressed-memory answer, with how many of the event's tokens the
compressed memory still holds.
"""

from __future__ import annotations

import sys
from typing import TextIO

from livevlm_ros.engine import EngineConfig

from . import models, probes, runner
from .streams import make_stream

DEMO_SEED = 3
DEMO_LENGTH = runner.StreamLength("5x", 48, 0.2)
ANSWER_TOKENS = 12


def main(out: TextIO = sys.stdout, seed: int = DEMO_SEED) -> None:
    model = models.load(models.SMOLLM2)
    stream_def = make_stream(seed, DEMO_LENGTH.frames)
    size = runner.engine_sizes(model, DEMO_LENGTH, runner.StudySettings())
    base = EngineConfig(budget_tokens=size["budget_tokens"], clip_frames=size["clip_frames"],
                        max_new_tokens=ANSWER_TOKENS)
    print("TEXT CAPTIONS standing in for video frames (NOT images); real SmolLM2-135M-Instruct weights.", file=out)
    owner = stream_def.event_of_frame()
    for index, (caption, t) in enumerate(zip(stream_def.captions, stream_def.times)):
        mark = f"  <- event {stream_def.events[owner[index]].position}" if owner[index] >= 0 else ""
        print(f"  [{t:4.0f} s] {caption}{mark}", file=out)
    full = probes.ingest(model, base.replace(memory="full", retrieval="none"), stream_def)
    small = probes.ingest(model, base, stream_def)
    stats = small.stats()
    print(f"\nstream: {size['stream_tokens']} tokens; compressed memory: budget {small.budget} tokens "
          f"({100 * small.budget / size['stream_tokens']:.0f}%), memory={base.memory}, retrieval={base.retrieval} "
          f"(memories under retrieval_min_tokens={base.retrieval_min_tokens} are read whole), "
          f"clip {base.clip_frames} frames; long-term coverage by tenth of the stream (oldest first): "
          + " ".join(f"{c:.2f}" for c in stats.coverage), file=out)
    counts = probes.frame_token_counts(model, stream_def)
    kept = probes.retention(small, stream_def, counts)
    label = f"{base.memory}+{base.retrieval}"
    for question, share in zip(stream_def.questions, kept.per_layer):
        print(f"\nQ ({question.event.position} event, frames {question.event.first}-{question.event.last}): "
              f"{question.text}\n  {'ground truth':<13}: {question.event.colour}", file=out)
        for name, stream in (("full KV", full), (label, small)):
            scores = probes.option_scores(stream, question)
            pick = question.options[max(range(len(scores)), key=scores.__getitem__)]
            print(f"  {name:<13}: {stream.ask(question.text).answer!r:<32} option picked: {pick}", file=out)
        print(f"  event tokens still in compressed memory: {100 * sum(share) / len(share):.0f}% (mean over layers)",
              file=out)
