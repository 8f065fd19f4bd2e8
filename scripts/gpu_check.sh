#!/usr/bin/env bash
# The device check for a lent GPU machine, as one short command (about 5-8 minutes):
# the CUDA engine tests, the equivalence tests on CUDA's float32, and the speed benchmark on CUDA.
# It uses the machine's own python3 with PyTorch (no ROS needed: only engine tests run) and writes
# everything under $OUT (the device tool brings that folder back):
#
#   device run:  bash scripts/gpu_check.sh
#
# Outputs: nvidia-smi.txt, cuda_tests.log, bench.log, bench.tar.gz (results.json/md, meta.json, plots).
# Missing Python packages (PyAV, rosbags, gguf) only change the benchmark's frames to synthetic ones.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
  torch.cuda.get_device_name(0), "transformers", transformers.__version__)' | tee -a "$OUT/nvidia-smi.txt"
# CUDA tests: fused attention kernel (not the math fallback), no host sync before the first token,
# CUDA-graph capture of the decode step, fp16/bf16 streaming, float32 equivalence with generate().
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -o addopts= test/test_engine_cuda.py 2>&1 | tee "$OUT/cuda_tests.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# Speed benchmark on CUDA, bf16: tiny configs and the two full-size layouts, time-boxed per model.
timeout 420 "$PY" -m livevlm_ros.bench.cli --device cuda --dtype bfloat16 --no-fidelity --no-progress \
    --models tiny-llava-onevision tiny-smolvlm llava-onevision-0.5b smolvlm-256m \
    --frames 128 256 512 2048 --time-budget-s 90 --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
tar czf "$OUT/bench.tar.gz" -C "$OUT" bench && rm -rf "$OUT/bench"
exit "$status"
