"""Where a checkpoint's files are, and whether they are all there, before transformers reads them.

:func:`resolve_checkpoint` turns what the user typed (a directory, or a hub id ``owner/name``) into
a local directory, looking locally first: an existing directory, then the Hugging Face hub cache,
and only then the hub itself (never with ``HF_HUB_OFFLINE=1``). A name that can be neither a
directory nor a hub id fails at once, without a network round trip.

:func:`check_checkpoint` then reads every JSON file of the directory and the headers of its
weight files, so that a missing or corrupt file is reported by name before any weights load and
before any frame is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ModelLoadError

#: Files fetched from the hub for a checkpoint: configs, tokenizer, chat templates, safetensors weights.
HUB_FILE_PATTERNS = ("*.json", "*.jinja", "*.txt", "*.model", "*.safetensors")
#: Weight layouts transformers reads, in the order it prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: Tokenizer files: the fast tokenizer's ``tokenizer.json``, or the vocabulary files of a slow one.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")
#: Sub-folders whose JSON files belong to the checkpoint (transformers 4.4x saved the video processor there).
CONFIG_SUBFOLDERS = ("video_processor", "image_processor")


@dataclass(frozen=True)
class CheckpointFiles:
    """A checked checkpoint directory.

    Attributes:
        directory: the local directory holding the files.
        config: ``config.json`` parsed.
        weights: the weight files that will be read (shards listed by an index included).
    """

    directory: Path
    config: dict
    weights: tuple


def _found(directory: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir()) if directory.is_dir() else []
    return ", ".join(names) if names else "nothing"


def _is_path_like(name: str) -> bool:
    """True for names that can only be paths (a hub id is ``owner/name``: no leading ``.``/``/``/``~``, one ``/``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_checkpoint(name: str, *, not_found_hint: str = "") -> Path:
    """The local directory of checkpoint ``name``, downloading it only when it is nowhere local.

    Order: ``name`` as a directory; ``name`` as a hub id in the hub cache (``HF_HUB_CACHE``); the hub
    (skipped with ``HF_HUB_OFFLINE=1``). Only ``*.json``, ``*.jinja``, ``*.txt``, ``*.model`` and
    ``*.safetensors`` files are fetched (hub repos also hold ONNX/GGUF exports the engine never reads).

    Args:
        name: a directory, or a hub id ``owner/name``.
        not_found_hint: appended to the "neither a directory nor a hub id" error (e.g. the tiny models).

    Raises:
        ModelLoadError: ``name`` is a file, a path that does not exist, not a valid hub id, not in the
            cache while offline, or could not be fetched; the message says what was found and expected.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{name!r} is a file; expected a checkpoint directory (config.json + weights)")
        return path
    if _is_path_like(name):
        raise ModelLoadError(f"model directory {name!r} does not exist")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
        valid = "/" in name
    except HFValidationError:
        valid = False
    if not valid:
        raise ModelLoadError(
            f"{name!r} is not a directory here and not a Hugging Face hub id (expected 'owner/name', e.g. "
            f"'llava-hf/llava-onevision-qwen2-0.5b-ov-hf'){not_found_hint}"
        )
    return _hub_snapshot(name)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = constants.HF_HUB_CACHE
    try:
        local = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=list(HUB_FILE_PATTERNS)))
    except LocalEntryNotFoundError:
        local = None
    complete = local is not None and (local / "config.json").is_file() and any(
        (local / name).is_file() for name in WEIGHT_FILES)
    if complete or (local is not None and constants.HF_HUB_OFFLINE):
        return local  # offline, a partial snapshot is reported file by file by check_checkpoint
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"{repo_id!r} is no directory here and not in the hub cache ({cache}), and HF_HUB_OFFLINE=1 forbids "
            f"downloading it: download "
            f"it where the hub is reachable (`hf download {repo_id}`, then copy the cache), or pass its directory"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILE_PATTERNS)))
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelLoadError(f"hub repository {repo_id!r} does not exist or is not accessible: {exc}") from exc
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"hub repository {repo_id!r} has no 'main' revision: {exc}") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(
            f"could not download {repo_id!r} from the hub, and it is no directory here and not in the hub cache "
            f"({cache}): {exc}. "
            "Set HF_HUB_OFFLINE=1 on machines without network to skip the hub"
        ) from exc


def read_json(path: Path) -> object:
    """The parsed JSON file ``path``.

    Raises:
        ModelLoadError: the file is unreadable or not valid JSON (naming it and where it breaks).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc


def check_checkpoint(directory: Path, model_types: Optional[dict] = None) -> CheckpointFiles:
    """Check the files transformers will read from ``directory``; nothing is loaded yet.

    Args:
        model_types: the supported ``model_type`` values (keys), checked right after ``config.json``.

    Checks: every JSON file (top level and ``video_processor/``, ``image_processor/``) parses;
    ``config.json`` is an object with a supported ``model_type``; weights exist in one of :data:`WEIGHT_FILES`
    layouts, with every shard an index names, and each safetensors header is readable and
    consistent with the file's size; a tokenizer (:data:`TOKENIZER_FILES`) exists.

    Raises:
        ModelLoadError: naming the missing or corrupt file and what was found instead.
    """
    json_files = sorted(directory.glob("*.json"))
    for sub in CONFIG_SUBFOLDERS:
        json_files += sorted((directory / sub).glob("*.json"))
    parsed = {p.relative_to(directory).as_posix(): read_json(p) for p in json_files}
    config = parsed.get("config.json")
    if config is None:
        raise ModelLoadError(f"{directory} has no config.json; expected a transformers checkpoint (found: "
                             f"{_found(directory)})")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"{directory / 'config.json'} has no 'model_type'; expected a transformers model config")
    if model_types is not None and config["model_type"] not in model_types:
        raise ModelLoadError(f"{directory} holds a {config['model_type']!r} model; supported model types: "
                             f"{', '.join(sorted(model_types))}")
    weights = _weight_files(directory, parsed)
    for weight in weights:
        if weight.suffix == ".safetensors":
            _check_safetensors(weight)
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{directory} has no tokenizer: expected one of {', '.join(TOKENIZER_FILES)} (found: "
                             f"{_found(directory)})")
    return CheckpointFiles(directory, config, tuple(weights))


def _weight_files(directory: Path, parsed: dict) -> list:
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        weight_map = parsed[name].get("weight_map") if isinstance(parsed[name], dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{path} has no 'weight_map'; expected the index of the weight shards")
        shards = [directory / shard for shard in sorted(set(weight_map.values()))]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise ModelLoadError(f"{path} lists weight shards that are missing: {', '.join(missing)} "
                                 f"(found: {_found(directory)})")
        return shards
    raise ModelLoadError(f"{directory} has no weights: expected {' or '.join(WEIGHT_FILES)} (found: "
                         f"{_found(directory)})")


def _check_safetensors(path: Path) -> None:
    """Raise unless ``path`` is a safetensors file whose header is readable and whose tensors fill the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            empty = not list(handle.keys())
    except Exception as exc:  # SafetensorError (a bare Exception subclass): truncated or not safetensors at all
        raise ModelLoadError(f"{path} is not a readable safetensors file ({path.stat().st_size} bytes): {exc}") from exc
    if empty:
        raise ModelLoadError(f"{path} holds no tensors; expected the model's weights")


def processor_config(directory: Path) -> Optional[dict]:
    """``processor_config.json`` parsed, or None when the checkpoint has none."""
    path = directory / "processor_config.json"
    if not path.is_file():
        return None
    value = read_json(path)
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return value
