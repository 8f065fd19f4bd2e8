"""Fidelity with real weights, measured through a TEXT PROXY of a video stream.

No real VLM weights exist here, so images cannot be judged. What can be measured is what each
memory policy does to a *real* language model reading a stream through the same engine path:
the real SmolLM2-135M-Instruct (inside the SmolVLM-256M layout, see :mod:`.layouts`) is fed a
stream of "frames", each frame being the token embeddings of one timestamped scene caption
(``LiveVLMStream.ingest_embeddings``), then asked about objects seen early, in the middle or
late in the stream. Captions and questions come from a seeded generator (:func:`make_stream`):

* filler frames: ``"[MM:SS] The road is empty."`` and similar (no colours, no objects);
* needle frames: ``"[MM:SS] A van arrives. Its colour is purple."`` (object and colour drawn
  without repetition within a stream); by default ONE needle per stream, placed in the early,
  middle or late third in turn (SmolLM2-135M answers with the *latest* colour when a stream
  holds several, so more needles would measure its recency bias, not the memory);
* one question per needle: ``"What color was the van? Answer with one word."``

Scores (per policy and budget):

* **accuracy**: the first colour word of the policy's own greedy answer equals the needle's
  colour (chance = 1 / number of colours);
* **first-token KL**: ``KL(P_full || P_policy)`` in nats of the next-token distribution at the
  first answer position (the inputs are identical there, only memory differs);
* **answer KL**: the same, averaged over the tokens of the full-KV greedy answer, every policy
  being teacher-forced on that answer (nats per token).

This is a proxy: text tokens are not vision tokens (fewer, more distinct, no spatial
redundancy), so it measures retention of specific facts under compression, not video QA.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from livevlm_ros.engine import EngineConfig, LiveVLMStream

from .policies import policy_config

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "grey")
OBJECTS = ("car", "truck", "bicycle", "dog", "cat", "bus", "umbrella", "kite", "ball", "bag", "hat", "bird", "van",
           "horse", "chair", "boat", "motorcycle", "balloon", "box", "coat")
FILLERS = ("The road is empty.", "Nothing moves.", "Rain falls on the street.", "The scene is quiet.",
           "A tree sways in the wind.")
NEEDLE = "A {object} arrives. Its colour is {colour}."
QUESTION = "What color was the {object}? Answer with one word."
SECONDS_PER_FRAME = 2.0
POSITIONS = ("early", "middle", "late")
ANSWER_TOKENS = 8


@dataclass(frozen=True)
class ProxyQuestion:
    """One question: the object asked about, the answer colour, the needle's frame and third."""

    text: str
    object: str
    colour: str
    frame: int
    position: str


@dataclass(frozen=True)
class ProxyStream:
    """Captions (one per frame), their stream times (s) and the questions about them."""

    seed: int
    captions: tuple
    times: tuple
    questions: tuple


def timestamp_text(seconds: float) -> str:
    return f"[{int(seconds // 60):02d}:{int(seconds % 60):02d}]"


def make_stream(seed: int, frames: int = 64, needles: int = 1) -> ProxyStream:
    """A seeded caption stream with ``needles`` (1-3) coloured objects, one question per needle.

    Needle ``k`` falls in third ``(seed + k) % 3`` of the stream (early / middle / late), at a
    uniformly drawn frame of it, so consecutive seeds rotate through the three positions.
    """
    if not 1 <= needles <= len(POSITIONS) or frames < 3 * len(POSITIONS):
        raise ValueError(f"need 1-3 needles and >= 9 frames, got {needles} needles in {frames} frames")
    rng = random.Random(seed)
    objects = rng.sample(OBJECTS, needles)
    colours = rng.sample(COLOURS, needles)
    bounds = [round(i * frames / 3) for i in range(4)]
    thirds = [(seed + k) % 3 for k in range(needles)]
    needle_frames = [rng.randrange(bounds[third], bounds[third + 1]) for third in thirds]
    captions, times, questions = [], [], []
    for index in range(frames):
        t = index * SECONDS_PER_FRAME
        times.append(t)
        if index in needle_frames:
            k = needle_frames.index(index)
            captions.append(f"{timestamp_text(t)} {NEEDLE.format(object=objects[k], colour=colours[k])}")
            questions.append(ProxyQuestion(QUESTION.format(object=objects[k]), objects[k], colours[k], index,
                                           POSITIONS[thirds[k]]))
        else:
            captions.append(f"{timestamp_text(t)} {rng.choice(FILLERS)}")
    return ProxyStream(seed, tuple(captions), tuple(times), tuple(questions))


def predicted_colour(answer: str) -> Optional[str]:
    """The first colour word of ``answer`` (case-insensitive), or None."""
    for word in answer.lower().replace(",", " ").replace(".", " ").split():
        if word in COLOURS:
            return word
    return None


def is_correct(answer: str, colour: str) -> bool:
    return predicted_colour(answer) == colour


# ------------------------------------------------------------------ engine runs
class _LogitsProbe:
    """Greedy answers of one stream plus the log-probabilities of every answer step (teacher-forced)."""

    def __init__(self, stream: LiveVLMStream) -> None:
        self.stream = stream

    def ask(self, question: str, forced: Optional[Sequence[int]] = None):
        """``(AskResult, tokens, log_probs)``: the greedy answer, and the log-probabilities of each step of
        ``forced`` (default: of the greedy answer's own tokens, ending with the step that chose to stop)."""
        result = self.stream.ask(question, max_new_tokens=ANSWER_TOKENS)
        tokens = list(forced) if forced is not None else self.stream.model.tokenize(result.answer)
        steps = tokens if tokens else [0]
        log_probs = self.stream.continuation_logprobs(question, [steps])[0]
        return result, tokens, list(log_probs[: max(1, len(tokens))])


def kl_divergence(reference: torch.Tensor, other: torch.Tensor) -> float:
    """``KL(P_ref || P_other)`` in nats from two ``[vocab]`` log-probability vectors."""
    return float((reference.exp() * (reference - other)).sum())


@dataclass
class _Tally:
    correct: dict = field(default_factory=lambda: {p: 0 for p in POSITIONS})
    asked: dict = field(default_factory=lambda: {p: 0 for p in POSITIONS})
    kl_first: list = field(default_factory=list)
    kl_answer: list = field(default_factory=list)
    agree: int = 0
    ingest_s: float = 0.0
    examples: list = field(default_factory=list)

    def summary(self) -> dict:
        asked = sum(self.asked.values())
        out = {"questions": asked, "accuracy": sum(self.correct.values()) / max(1, asked),
               "first_token_kl_nats": _mean(self.kl_first), "answer_kl_nats_per_token": _mean(self.kl_answer),
               "same_answer_as_full": self.agree / max(1, asked), "ingest_s": self.ingest_s,
               "examples": self.examples[:4]}
        for position in POSITIONS:
            out[f"accuracy_{position}"] = (self.correct[position] / self.asked[position]
                                           if self.asked[position] else None)
            out[f"questions_{position}"] = self.asked[position]
        return out


def _mean(values: list) -> Optional[float]:
    return float(sum(values) / len(values)) if values else None


def _ingest(model, config: EngineConfig, stream_def: ProxyStream) -> tuple[LiveVLMStream, float]:
    stream = LiveVLMStream(model, config)
    started = time.perf_counter()
    with torch.inference_mode():
        for caption, t in zip(stream_def.captions, stream_def.times):
            stream.ingest_embeddings(model.embed_text(caption + "\n"), t)
        stream.flush()
    return stream, time.perf_counter() - started


@dataclass
class FidelitySettings:
    """Text-proxy parameters: streams (seeds), their length, budgets (tokens) and policies."""

    seeds: Sequence[int] = tuple(range(24))
    frames: int = 64
    needles: int = 1
    budgets: Sequence[int] = (128, 256)
    policies: Sequence[str] = ("sliding", "rekv", "topk", "vsb", "vsb+par", "vsb+par-pe")
    clip_frames: int = 4
    rekv_frames: int = 4


def run_fidelity(model, settings: FidelitySettings, progress=None) -> dict:
    """Accuracy and KL of every policy x budget against full KV (see the module docstring).

    Returns a dict with ``rows`` (one per policy and budget, plus ``full``) and the settings.
    """
    base = EngineConfig(clip_frames=settings.clip_frames, rekv_frames=settings.rekv_frames,
                        max_new_tokens=ANSWER_TOKENS)
    variants = [("full", None)] + [(p, b) for b in settings.budgets for p in settings.policies]
    tallies = {v: _Tally() for v in variants}
    stream_tokens = []
    for seed in settings.seeds:
        stream_def = make_stream(seed, settings.frames, settings.needles)
        reference = {}
        for policy, budget in variants:
            config = policy_config(policy, base if budget is None else base.replace(budget_tokens=budget))
            stream, ingest_s = _ingest(model, config, stream_def)
            tally = tallies[(policy, budget)]
            tally.ingest_s += ingest_s
            if policy == "full":
                stream_tokens.append(stream.stats().tokens - stream.stats().prefix_tokens)
            _ask_all(_LogitsProbe(stream), stream_def, tally, reference, policy == "full")
            if progress is not None:
                progress(1)
    rows = []
    for (policy, budget), tally in tallies.items():
        rows.append({"policy": policy, "budget_tokens": budget, **tally.summary()})
    return {"rows": rows, "chance_accuracy": 1.0 / len(COLOURS), "stream_tokens_mean": _mean(stream_tokens),
            "settings": {"seeds": list(settings.seeds), "frames": settings.frames, "needles": settings.needles,
                         "budgets": list(settings.budgets), "clip_frames": settings.clip_frames,
                         "rekv_frames": settings.rekv_frames, "answer_tokens": ANSWER_TOKENS,
                         "seconds_per_frame": SECONDS_PER_FRAME},
            "example_stream": list(make_stream(settings.seeds[0], settings.frames, settings.needles).captions[:6])}


def _ask_all(probe: _LogitsProbe, stream_def: ProxyStream, tally: _Tally, reference: dict, is_full: bool) -> None:
    """Ask every question of the stream; ``reference`` maps question -> full-KV (tokens, log_probs)."""
    for question in stream_def.questions:
        result, tokens, log_probs = probe.ask(question.text)
        tally.asked[question.position] += 1
        tally.correct[question.position] += is_correct(result.answer, question.colour)
        if len(tally.examples) < 4:
            tally.examples.append({"question": question.text, "gold": question.colour, "answer": result.answer})
        if is_full:
            reference[question.text] = (tokens, log_probs)
            tally.agree += 1
            continue
        ref_tokens, ref_log_probs = reference[question.text]
        tally.agree += tokens == ref_tokens
        tally.kl_first.append(kl_divergence(ref_log_probs[0], log_probs[0]))
        _, _, forced_log_probs = probe.ask(question.text, forced=ref_tokens)
        steps = [kl_divergence(r, o) for r, o in zip(ref_log_probs, forced_log_probs)]
        tally.kl_answer.append(sum(steps) / len(steps))


def fidelity_markdown(fidelity: dict) -> str:
    """Markdown section for ``results.md`` / BENCHMARKS.md."""
    s = fidelity["settings"]
    lines = [
        "## Fidelity with real weights (TEXT PROXY)",
        "",
        f"Real SmolLM2-135M-Instruct inside the SmolVLM-256M layout; each frame = one caption's tokens "
        f"(`ingest_embeddings`). {len(s['seeds'])} seeded streams x {s['frames']} frames "
        f"(~{fidelity['stream_tokens_mean'] or 0:.0f} tokens), {s['needles']} needle(s) each; clip {s['clip_frames']} "
        f"frames; chance accuracy {fidelity['chance_accuracy']:.2f}. KL in nats vs full KV "
        f"(first answer token; and mean over the full-KV answer, teacher-forced).",
        "",
        "| policy | budget (tokens) | accuracy | early | middle | late | first-token KL | answer KL / token "
        "| same answer as full |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in fidelity["rows"]:
        def pct(v):
            return "-" if v is None else f"{100 * v:.0f}%"

        def num(v):
            return "-" if v is None else f"{v:.3f}"

        lines.append(f"| {r['policy']} | {r['budget_tokens'] or 'all'} | {pct(r['accuracy'])} | "
                     f"{pct(r['accuracy_early'])} | {pct(r['accuracy_middle'])} | {pct(r['accuracy_late'])} | "
                     f"{num(r['first_token_kl_nats'])} | {num(r['answer_kl_nats_per_token'])} | "
                     f"{pct(r['same_answer_as_full'])} |")
    return "\n".join(lines)
