"""livevlm_bench --checkpoint-cost: the rows and the per-1,000-token fit are what the files hold."""

import json

import torch

from livevlm_ros.bench import checkpoint_cost
from livevlm_ros.bench.cli import main as bench_main
from livevlm_ros.engine import EngineConfig, LiveVLMStream, load_video_llm


def _bytes_per_token(model) -> float:
    """Bytes per memory token of a checkpoint, from the tensors themselves (``[L, H, T, ...]``)."""
    stream = LiveVLMStream(model, EngineConfig(memory="full"))
    stream.ingest_embeddings(torch.zeros(5, model.hidden_size), 0.0)
    tensors = stream.checkpoint().tensors
    return sum(t.numel() * t.element_size() / t.shape[2] for name, t in tensors.items() if name.startswith("memory."))


def test_checkpoint_cost_rows_and_fit(tmp_path, capsys):
    assert bench_main(["--checkpoint-cost", "--models", "tiny-smolvlm", "--checkpoint-tokens", "200", "400", "600",
                       "--repeats", "1", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "checkpoint_cost.json").read_text())
    (result,) = payload["results"]
    rows = result["rows"]
    assert [r["tokens"] for r in rows] == sorted(r["tokens"] for r in rows) and len(rows) == 3
    assert all(r["tokens"] <= target for r, target in zip(rows, (200, 400, 600)))
    per_token = _bytes_per_token(load_video_llm("tiny-smolvlm", device="cpu", dtype="float32"))
    # the file grows by exactly the memory tensors' bytes per token (the JSON header changes by a few bytes)
    assert abs(result["fit"]["bytes"]["per_1000_tokens"] / 1000 - per_token) < 0.5
    for r in rows:
        assert r["bytes"] > r["tokens"] * per_token
        assert all(r[k] > 0 for k in ("snapshot_s", "write_s", "raw_write_s", "load_s", "restore_s"))
    assert result["clip_ingest_s"] > 0 and result["tokens_per_frame"] > 0
    table = (tmp_path / "checkpoint_cost.md").read_text()
    assert "| tiny-smolvlm (float32) |" in table and table.strip() in capsys.readouterr().out


def test_fit_of_exact_lines():
    rows = [{"tokens": n, "bytes": 100 + 3 * n, "snapshot_s": 0.001 * n, "write_s": 1 + 0.002 * n,
             "raw_write_s": 0.5, "load_s": 0.0, "restore_s": 0.0} for n in (1000, 2000, 4000)]
    fit = checkpoint_cost.fit(rows)
    assert abs(fit["bytes"]["per_1000_tokens"] - 3000) < 1e-6 and abs(fit["bytes"]["fixed"] - 100) < 1e-6
    assert abs(fit["write_s"]["per_1000_tokens"] - 2.0) < 1e-9
    assert abs(fit["write_s"]["ratio_per_1000_tokens"] - (1 + 8) / 4) < 1e-9
