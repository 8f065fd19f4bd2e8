"""The single-needle caption stream of the intro-effect bench (:mod:`.intro_effect`): a TEXT PROXY.

The fidelity study of the memory policies lives in :mod:`.fidelity` (redundant events, option
log-likelihood, bootstrap CIs); this older generator remains for the intro-effect bench only.

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

Helpers for its scores: :func:`is_correct` (first colour word of a greedy answer), :func:`kl_divergence`,
and :class:`_LogitsProbe` (greedy answer plus teacher-forced log-probabilities).

This is a proxy: text tokens are not vision tokens (fewer, more distinct, no spatial
redundancy), so it measures retention of specific facts under compression, not video QA.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from livevlm_ros.engine import LiveVLMStream

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
