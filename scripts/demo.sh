#!/usr/bin/env bash
# Set up (or check) .venv/ and run the demo; arguments go to livevlm_demo (--help for them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/livevlm_demo" "$@"
