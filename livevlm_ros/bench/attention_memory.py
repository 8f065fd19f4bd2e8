"""Peak extra memory of one clip's prefill in one decoder layer: the dense-mask path against the engine's.

At the layer shapes of a real model (default: LLaVA-OneVision-0.5B's Qwen2: 14 query heads, 2 KV
heads, head_dim 64; an 8-frame clip of 196-token frames over a full 12,000-token budget) this
measures, on the CPU, the resident-memory high-water mark above what was held before the step:

* ``dense-mask`` (the code this engine had before, rebuilt here for comparison): every clip
  re-rotates the whole memory and concatenates it with the clip twice (keys, values), builds a dense
  ``[n, T]`` boolean mask for SDPA, and scores VSB in fp32 from an fp32 copy of every key;
* ``engine``: the engine's own :class:`~livevlm_ros.engine.prefill.MemoryPrefill` on a preallocated
  :class:`~livevlm_ros.engine.kv_memory.KVMemory`: the clip's keys are rotated once and written next to
  the memory's rotated keys, attention runs in query blocks with ``block x T`` masks, VSB scores are
  computed in the model's dtype in bounded blocks.

Peak RSS is Linux ``VmHWM`` after resetting it (``/proc/self/clear_refs``). Each path runs in a
process of its own with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB, so large buffers are
mapped and unmapped exactly when allocated and freed (otherwise freed memory stays resident and a
later path would reuse it unseen); it runs twice and the second run is measured (kernels warm). On
CUDA the same comparison reads ``torch.cuda.max_memory_allocated`` and the SDPA backend (see
``docs/BENCHMARKS.md``).
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from livevlm_ros.engine.decoder import RotaryTable, attend_causal, observation_scores
from livevlm_ros.engine.kv_memory import KVMemory

from .instrument import PeakMemory

MIB = 2**20


@dataclass(frozen=True)
class LayerShapes:
    """One decoder layer's attention shapes and the clip/memory sizes (tokens)."""

    heads: int = 14
    kv_heads: int = 2
    head_dim: int = 64
    memory_tokens: int = 12000 + 14 + 2 * 196  # budget + prefix + short-term frames
    clip_tokens: int = 8 * 196
    observation_tokens: int = 196  # the clip's last frame

    def dense_fp32_bytes(self) -> int:
        """Bytes of one ``heads x n x T`` fp32 tensor, what a math-kernel fallback would materialise."""
        return 4 * self.heads * self.clip_tokens * (self.memory_tokens + self.clip_tokens)


class _Rope(torch.nn.Module):
    """A stand-in rotary module with the model's interface (``rotary_emb(x, positions) -> cos, sin``)."""

    def __init__(self, dim: int, base: float = 1_000_000.0) -> None:
        super().__init__()
        self.inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)

    def forward(self, x, positions):
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def _dense_mask_step(q, k, v, mem_keys, mem_values, rotary: RotaryTable, shapes: LayerShapes, scale: float):
    """The previous engine's per-layer clip step (re-rotation + two concatenations + dense mask + fp32 scores)."""
    start = mem_keys.shape[1]
    keys = torch.cat([rotary.rotate(mem_keys, 0), rotary.rotate(k, start)], dim=1)
    values = torch.cat([mem_values, v], dim=1)
    queries = rotary.rotate(q, start)
    r = shapes.observation_tokens
    grouped = queries[:, -r:].float().reshape(shapes.kv_heads, (shapes.heads // shapes.kv_heads) * r, -1)
    logits = torch.einsum("hqd,htd->hqt", grouped, keys.float()) * scale
    scores = logits.softmax(dim=-1).mean(dim=(0, 1))
    n, total = q.shape[1], keys.shape[1]
    mask = torch.ones(n, total, dtype=torch.bool).tril(diagonal=total - n)
    out = F.scaled_dot_product_attention(queries[None], keys[None], values[None], attn_mask=mask, scale=scale,
                                         enable_gqa=True)
    return out, scores


def _engine_step(q, k, v, memory: KVMemory, rotary: RotaryTable, shapes: LayerShapes, scale: float):
    """The engine's per-layer clip step over a preallocated memory (what ``MemoryPrefill`` does)."""
    start = memory.length
    queries = rotary.rotate(q, start)
    memory.write_layer(0, k, v, rotary.rotate(k, start))
    keys, values = memory.layer_through(0, start + k.shape[1])
    scores = observation_scores(queries[None, :, -shapes.observation_tokens:], keys[None], scale)
    return attend_causal(queries, keys, values, scale), scores


_PATHS = {"dense-mask": _dense_mask_step, "engine": _engine_step}


def _measure_here(path: str, shapes: LayerShapes, dtype: torch.dtype) -> float:
    """Peak extra MiB of one ``path`` step in this process (see the module doc)."""
    generator = torch.Generator().manual_seed(0)
    d, heads, kv = shapes.head_dim, shapes.heads, shapes.kv_heads
    scale = 1.0 / math.sqrt(d)
    rotary = RotaryTable(_Rope(d), torch.device("cpu"), dtype)
    rotary.ensure(shapes.memory_tokens + shapes.clip_tokens)
    q = torch.randn(heads, shapes.clip_tokens, d, generator=generator).to(dtype)
    k = torch.randn(kv, shapes.clip_tokens, d, generator=generator).to(dtype)
    v = torch.randn(kv, shapes.clip_tokens, d, generator=generator).to(dtype)
    mem_keys = torch.randn(kv, shapes.memory_tokens, d, generator=generator).to(dtype)
    mem_values = torch.randn(kv, shapes.memory_tokens, d, generator=generator).to(dtype)
    memory = KVMemory(1, kv, d, device=torch.device("cpu"), dtype=dtype, rotary=rotary,
                      capacity=shapes.memory_tokens + shapes.clip_tokens)
    memory.write_layer(0, mem_keys, mem_values, rotary.rotate(mem_keys, 0))
    memory.length = shapes.memory_tokens
    state = memory if path == "engine" else (mem_keys, mem_values)
    probe = PeakMemory(torch.device("cpu"))
    if probe.rss_scope != "segment":
        raise RuntimeError("peak RSS cannot be reset on this system (/proc/self/clear_refs): no per-step figure")

    def step():
        if path == "engine":
            return _engine_step(q, k, v, state, rotary, shapes, scale)
        return _dense_mask_step(q, k, v, *state, rotary, shapes, scale)

    with torch.inference_mode():
        del_outputs = step()  # warm-up: kernels initialised
        del del_outputs
        gc.collect()
        before = probe.rss_bytes()
        probe.reset()
        outputs = step()
        peak = probe.peak_rss_bytes() - before
        del outputs
    return peak / MIB


def measure(shapes: LayerShapes = LayerShapes(), dtype: torch.dtype = torch.float32) -> dict:
    """``{path: peak extra MiB}`` for one clip prefill in one layer (each path in its own process)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = {}
    for path in _PATHS:
        args = json.dumps({"path": path, "dtype": str(dtype).replace("torch.", ""), "shapes": shapes.__dict__})
        out = subprocess.run([sys.executable, "-m", __name__, args], env=env, check=True, capture_output=True,
                             text=True).stdout
        result[path] = json.loads(out.strip().splitlines()[-1])["peak_extra_mib"]
    return {
        "peak_extra_mib": result,
        "dtype": str(dtype).replace("torch.", ""),
        "shapes": shapes.__dict__,
        "heads_x_n_x_T_fp32_mib": shapes.dense_fp32_bytes() / MIB,
        "threads": torch.get_num_threads(),
    }


def markdown(rows: list) -> str:
    lines = ["| dtype | dense-mask path: peak extra MiB | engine: peak extra MiB | one heads x n x T fp32 tensor MiB |",
             "|---|---|---|---|"]
    for row in rows:
        peak = row["peak_extra_mib"]
        lines.append(f"| {row['dtype']} | {peak['dense-mask']:.0f} | {peak['engine']:.0f} | "
                     f"{row['heads_x_n_x_T_fp32_mib']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    peak = _measure_here(request["path"], LayerShapes(**request["shapes"]), getattr(torch, request["dtype"]))
    print(json.dumps({"peak_extra_mib": peak}))
