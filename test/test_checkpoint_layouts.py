"""Checkpoints as downloaded: every real-layout fixture loads by path and by hub id (offline hub
cache), streams frames and answers; the chat template is the one transformers' processor uses;
a missing or corrupt file is a ModelLoadError naming it, before any weights or frames are read."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from checkpoint_layouts import (
    LAYOUTS,
    LLAVA_OV_REPO,
    QWEN2_TEXT_TEMPLATE,
    SMOLVLM_HUB_TEMPLATE,
    install_in_hub_cache,
)
from engine_helpers import random_frames

from livevlm_ros.engine import EngineConfig, LiveVLMStream, ModelLoadError, load_video_llm
from livevlm_ros.engine.models.chat_template import processor_chat_template
from livevlm_ros.engine.models.checkpoint import check_checkpoint, resolve_checkpoint
from livevlm_ros.engine.models.smolvlm import VIDEO_TEMPLATE_SOURCE

#: every fixture: the four hub layouts and three of them re-saved by transformers 5
NAMES = tuple(LAYOUTS) + ("llava-onevision-4.45+resaved", "smolvlm2-video+resaved", "smolvlm-v1+resaved")
#: what each layout must resolve to: (adapter family, file the chat template comes from, vision tokens per frame)
EXPECTED = {
    "llava-onevision-4.45": ("llava_onevision", "chat_template.json", 196),
    "llava-onevision-2024-08": ("llava_onevision", "processor_config.json (chat_template)", 196),
    "smolvlm2-video": ("smolvlm", VIDEO_TEMPLATE_SOURCE, 64),
    "smolvlm-v1": ("idefics3", "chat_template.json", 64),
    "llava-onevision-4.45+resaved": ("llava_onevision", "chat_template.jinja", 196),
    "smolvlm2-video+resaved": ("smolvlm", VIDEO_TEMPLATE_SOURCE, 64),
    "smolvlm-v1+resaved": ("idefics3", "chat_template.jinja", 64),
}


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch):
    """An empty hub cache in ``tmp_path`` with HF_HUB_OFFLINE on; returns its path."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def copy_of(layout_dir, name: str, tmp_path: Path) -> Path:
    """A writable copy of fixture ``name``."""
    return Path(shutil.copytree(layout_dir(name), tmp_path / name.replace("+", "_")))


def stream_and_answer(model, frames: int = 3):
    stream = LiveVLMStream(model, EngineConfig(clip_frames=2, max_new_tokens=4))
    for k, frame in enumerate(random_frames(frames, seed=1, height=40, width=56)):
        stream.ingest(frame, 1.0 * k)
    return stream, stream.ask("What is in front of the camera?", max_new_tokens=4)


def assert_layout(name: str, model) -> None:
    family, template_file, vision_per_frame = EXPECTED[name]
    assert model.family == family
    assert model.chat_template_source.endswith(template_file), model.chat_template_source
    assert not model.is_tiny
    (frame,) = model.encode_frames(random_frames(1, seed=2), [2.0])
    assert int(frame.vision.sum()) == vision_per_frame


@pytest.mark.parametrize("name", NAMES)
def test_layout_loads_by_path_streams_and_answers(name, layout_dir):
    model = load_video_llm(str(layout_dir(name)))
    assert_layout(name, model)
    stream, result = stream_and_answer(model)
    assert result.frames_seen == 3 and result.new_tokens >= 1 and result.ttft_s > 0
    assert stream.stats().frames_ingested == 3


@pytest.mark.parametrize("name", NAMES)
def test_layout_loads_by_hub_id_from_the_offline_cache(name, layout_dir, offline_hub_cache):
    repo = LAYOUTS[name.partition("+")[0]][0]
    snapshot = install_in_hub_cache(layout_dir(name), offline_hub_cache, repo)
    assert resolve_checkpoint(repo) == snapshot
    model = load_video_llm(repo)
    assert model.name == repo
    assert_layout(name, model)
    _, result = stream_and_answer(model, frames=2)
    assert result.frames_seen == 2 and result.new_tokens >= 1


def test_hub_id_missing_from_the_offline_cache_fails_at_once(offline_hub_cache):
    with pytest.raises(ModelLoadError, match="not in the hub cache .*HF_HUB_OFFLINE=1"):
        load_video_llm(LLAVA_OV_REPO)


def test_partial_cache_snapshot_names_the_missing_weights(layout_dir, tmp_path, offline_hub_cache):
    partial = copy_of(layout_dir, "smolvlm2-video", tmp_path)
    (partial / "model.safetensors").unlink()
    install_in_hub_cache(partial, offline_hub_cache, "HuggingFaceTB/SmolVLM2-256M-Video-Instruct")
    with pytest.raises(ModelLoadError, match=r"has no weights: expected model\.safetensors"):
        load_video_llm("HuggingFaceTB/SmolVLM2-256M-Video-Instruct")


# ----------------------------------------------------------------------------------- chat templates (R1, R2)
def test_smolvlm_hub_templates_render_no_video_so_the_processor_default_is_used(layout_dir):
    """R1: the hub template drops a video item; SmolVLMProcessor renders videos with DEFAULT_CHAT_TEMPLATE."""
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    model = load_video_llm(str(layout_dir("smolvlm2-video")))
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]}]
    hub = model.tokenizer.apply_chat_template(messages, chat_template=SMOLVLM_HUB_TEMPLATE, tokenize=False,
                                              add_generation_prompt=True)
    assert hub == "<|im_start|>User: Q<end_of_utterance>\nAssistant:"  # no trace of the video
    assert processor_chat_template(layout_dir("smolvlm2-video")).text == SMOLVLM_HUB_TEMPLATE
    assert model.chat_template == DEFAULT_CHAT_TEMPLATE
    assert model.prefix_text(None).startswith("<|im_start|>User: ")


def test_template_only_in_processor_config_is_used_not_the_tokenizers_text_template(layout_dir):
    """R2: the August 2024 llava-hf layout; the tokenizer's Qwen2 template cannot render list contents."""
    directory = layout_dir("llava-onevision-2024-08")
    assert json.loads((directory / "tokenizer_config.json").read_text())["chat_template"] == QWEN2_TEXT_TEMPLATE
    model = load_video_llm(str(directory))
    assert model.prefix_text(None) == "<|im_start|>user "
    assert model.question_text("Q?", None) == "\nQ?<|im_end|>\n<|im_start|>assistant\n"


def write_template_files(directory: Path, **files) -> None:
    for name in ("chat_template.json", "chat_template.jinja"):
        (directory / name).unlink(missing_ok=True)
    processor = json.loads((directory / "processor_config.json").read_text())
    processor.pop("chat_template", None)
    (directory / "processor_config.json").write_text(json.dumps(processor))
    for relative, content in files.items():
        path = directory / relative.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative == "processor_config.json":
            content = json.dumps({**processor, "chat_template": content})
        path.write_text(content)


@pytest.mark.parametrize(
    "files, expected, source",
    [
        ({"processor_config.json": "P", "chat_template.json": json.dumps({"chat_template": "J"}),
          "chat_template.jinja": "K"}, "P", "processor_config.json (chat_template)"),
        ({"chat_template.json": json.dumps({"chat_template": "J"}), "chat_template.jinja": "K"}, "J",
         "chat_template.json"),
        ({"chat_template.jinja": "K", "additional_chat_templates__tools.jinja": "T"}, "K", "chat_template.jinja"),
        ({"processor_config.json": {"default": "D", "tools": "T"}}, "D", "processor_config.json (chat_template)"),
    ],
)
def test_template_precedence_follows_transformers_processor(files, expected, source, layout_dir, tmp_path):
    directory = copy_of(layout_dir, "llava-onevision-4.45", tmp_path)
    write_template_files(directory, **files)
    template = processor_chat_template(directory)
    assert template.text == expected and template.source.endswith(source)


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "no processor chat template.*tokenizer_config.json has only the language model's text template"),
        ({"chat_template.json": json.dumps({"template": "x"})}, r"chat_template\.json has no 'chat_template' entry"),
        ({"chat_template.json": json.dumps({"chat_template": "J"}), "additional_chat_templates__a.jinja": "A"},
         "has both chat_template.json and additional_chat_templates"),
        ({"processor_config.json": {"tools": "T"}}, "none named 'default'"),
        ({"processor_config.json": 7}, "must be non-empty text"),
    ],
)
def test_template_problems_are_model_load_errors(files, message, layout_dir, tmp_path):
    directory = copy_of(layout_dir, "llava-onevision-4.45", tmp_path)
    write_template_files(directory, **files)
    with pytest.raises(ModelLoadError, match=message):
        load_video_llm(str(directory))


def test_a_template_that_cannot_place_the_video_fails_at_load_naming_its_file(layout_dir, tmp_path):
    directory = copy_of(layout_dir, "llava-onevision-4.45", tmp_path)
    write_template_files(directory, **{"chat_template.jinja": QWEN2_TEXT_TEMPLATE})
    with pytest.raises(ModelLoadError, match=r"chat_template\.jinja cannot render a user turn .*TypeError"):
        load_video_llm(str(directory))
    write_template_files(directory, **{"chat_template.jinja": SMOLVLM_HUB_TEMPLATE})
    with pytest.raises(ModelLoadError, match=r"chat_template\.jinja must render one '<video>'.*rendered 0"):
        load_video_llm(str(directory))


# ----------------------------------------------------------------------------------- missing / corrupt files
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state.pop(sorted(k for k in state if "layers.1." in k)[0])
    save_file(state, str(path), metadata={"format": "pt"})


def _shard(directory: Path) -> None:
    """Replace model.safetensors by an index naming a shard that is absent."""
    (directory / "model.safetensors").unlink()
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}))


BREAKAGES = {
    "config missing": (lambda d: (d / "config.json").unlink(), r"has no config\.json"),
    "config corrupt": (lambda d: (d / "config.json").write_text('{"model_type": '), r"config\.json is not valid JSON"),
    "config without model_type": (lambda d: (d / "config.json").write_text("{}"), r"config\.json has no 'model_type'"),
    "weights missing": (lambda d: (d / "model.safetensors").unlink(), r"has no weights: expected model\.safetensors"),
    "weights truncated": (lambda d: _truncate(d / "model.safetensors"),
                          r"model\.safetensors is not a readable safetensors file"),
    "weights not safetensors": (lambda d: (d / "model.safetensors").write_bytes(b"<html>404</html>"),
                                r"model\.safetensors is not a readable safetensors file"),
    "a tensor missing": (lambda d: _drop_tensor(d / "model.safetensors"), r"lack 1 tensor\(s\) the model needs"),
    "shard missing": (_shard, r"lists weight shards that are missing: model-00001-of-00002\.safetensors"),
    "tokenizer missing": (lambda d: [(d / f).unlink() for f in ("tokenizer.json", "vocab.json")],
                          "has no tokenizer: expected one of tokenizer.json"),
    "tokenizer config corrupt": (lambda d: (d / "tokenizer_config.json").write_text("{"),
                                 r"tokenizer_config\.json is not valid JSON"),
    "tokenizer corrupt": (lambda d: (d / "tokenizer.json").write_text('{"version": "1.0"}'),
                          r"could not load the tokenizer of .*tokenizer\.json"),
    "preprocessor corrupt": (lambda d: (d / "preprocessor_config.json").write_text("[1,"),
                             r"preprocessor_config\.json is not valid JSON"),
    "video processor corrupt": (lambda d: (d / "video_processor" / "preprocessor_config.json").write_text("nope"),
                                r"video_processor/preprocessor_config\.json is not valid JSON"),
    "chat template corrupt": (lambda d: (d / "chat_template.json").write_text('{"chat_template": "x'),
                              r"chat_template\.json is not valid JSON"),
    "processor config corrupt": (lambda d: (d / "processor_config.json").write_text("{,}"),
                                 r"processor_config\.json is not valid JSON"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_missing_or_corrupt_file_is_a_model_load_error_naming_it(breakage, layout_dir, tmp_path):
    directory = copy_of(layout_dir, "llava-onevision-4.45", tmp_path)
    damage, message = BREAKAGES[breakage]
    damage(directory)
    with pytest.raises(ModelLoadError, match=message):
        load_video_llm(str(directory))


def test_checks_name_what_was_found(layout_dir, tmp_path):
    directory = copy_of(layout_dir, "smolvlm-v1", tmp_path)
    (directory / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        check_checkpoint(directory)
    assert "found: added_tokens.json, chat_template.json, config.json" in str(err.value)


def test_unsupported_model_type_names_the_supported_ones(layout_dir, tmp_path):
    directory = copy_of(layout_dir, "smolvlm-v1", tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    with pytest.raises(ModelLoadError, match="holds a 'qwen2_vl' model; supported model types: idefics3, llava_onevision, smolvlm"):
        load_video_llm(str(directory))


# ----------------------------------------------------------------------------------- names that are not checkpoints
@pytest.mark.parametrize(
    "name, message",
    [
        ("tiny-nope", "not a built-in test model; those are tiny-llava-onevision, tiny-smolvlm"),
        ("llava-onevision", "not a directory here and not a Hugging Face hub id"),
        ("owner/na me", "not a directory here and not a Hugging Face hub id"),
        ("./no/such/dir", "model directory './no/such/dir' does not exist"),
        ("a/b/c", "model directory 'a/b/c' does not exist"),
    ],
)
def test_names_that_cannot_be_checkpoints_fail_without_the_hub(name, message, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # would reach the hub if it were asked
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_hub)
    with pytest.raises(ModelLoadError, match=message):
        load_video_llm(name)


def test_a_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file; expected a checkpoint directory"):
        load_video_llm(str(tmp_path / "model.safetensors"))


def test_frames_of_a_real_layout_match_what_the_stream_prefills(layout_dir):
    """Per-frame embeddings: the structure tokens are the tokenizer's embeddings, the vision tokens are not."""
    model = load_video_llm(str(layout_dir("smolvlm2-video")))
    (frame,) = model.encode_frames([np.zeros((32, 32, 3), np.uint8)], [62.0])
    ids = model.tokenize(model.frame_text(62.0))
    assert model.frame_text(62.0).startswith("\nFrame from 01:02:")
    assert frame.embeds.shape[0] == len(ids)
    text_rows = model.embed_ids(ids)[~frame.vision]
    assert np.allclose(frame.embeds[~frame.vision].detach().numpy(), text_rows.detach().numpy())
