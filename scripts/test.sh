#!/usr/bin/env bash
# Set up (or check) .venv/ and run the test suite:
#   bash scripts/test.sh                 # every test under test/
#   bash scripts/test.sh -k fastdds -x   # extra arguments go to pytest as they are
#   bash scripts/test.sh test/test_fastdds_profile.py
# ROS traffic stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) on a domain id
# of its own (LIVEVLM_TEST_DOMAIN_ID to choose it); ROS logs go to a temporary directory.
# AMENT_PREFIX_PATH is .venv. The launch stack is installed first when LIVEVLM_LAUNCH_WHEELS=DIR
# is set or ../shared/ros2_launch exists; LIVEVLM_REQUIRE_LAUNCH_TESTS=1 (.ci/run sets it) fails
# the run when a launch test was skipped or none ran; LIVEVLM_INSTALL_COLCON=1 (.ci/run too)
# installs colcon into .venv first, for the colcon-workspace test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The ROS 2 launch stack (launch, launch_ros, launch_pytest, ros2 launch/run; not on PyPI) from
# LIVEVLM_LAUNCH_WHEELS=DIR, else from ../shared/ros2_launch when that folder exists (CI has it).
# Without either, the launch tests skip and say why.
if [ -z "${LIVEVLM_LAUNCH_WHEELS:-}" ] && [ -d "$ROOT/../shared/ros2_launch" ]; then
    export LIVEVLM_LAUNCH_WHEELS="$(cd "$ROOT/../shared/ros2_launch" && pwd)"
fi
bash "$ROOT/scripts/setup.sh"
if [ "${LIVEVLM_INSTALL_COLCON:-0}" = 1 ]; then
    # colcon from PyPI for test/test_launch_colcon.py (.ci/run asks for it; see requirements-colcon.txt)
    echo "[test] pip install --no-deps -r requirements-colcon.txt"
    "$ROOT/.venv/bin/python" -m pip install -q --no-deps -r "$ROOT/requirements-colcon.txt" \
        2> >(grep -v -E "^WARNING: Location '.*' is ignored" >&2)
fi
[ -n "${LIVEVLM_LAUNCH_WHEELS:-}" ] \
    || echo "[test] no launch stack (set LIVEVLM_LAUNCH_WHEELS=DIR, see docs/INSTALL.md): the launch tests will skip"

# .venv is the ament prefix of livevlm_ros (scripts/setup.sh lays it out): launch_ros, ros2 launch
# and ros2 run find the package, its launch files and executables through it, and nothing else.
export AMENT_PREFIX_PATH="$ROOT/.venv"

export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
unset ROS_LOCALHOST_ONLY ROS_STATIC_PEERS RMW_IMPLEMENTATION
# 1..100: well inside the range whose DDS ports are valid on Linux
export ROS_DOMAIN_ID="${LIVEVLM_TEST_DOMAIN_ID:-$(( ( $$ + RANDOM ) % 100 + 1 ))}"
export LIVEVLM_TEST_DOMAIN_ID="$ROS_DOMAIN_ID"  # test/conftest.py uses it as is
LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/livevlm_test_logs.XXXXXX")"
export ROS_LOG_DIR="$LOGDIR/ros"
trap 'rm -rf "$LOGDIR"' EXIT
# No model hub is reachable from CI: fail fast instead of waiting on network timeouts.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export PYTHONUNBUFFERED=1
# The tests run the node as its own process next to pytest on 2 cores: with several torch
# processes each spinning up an OpenMP pool, oversubscription made tiny-model runs ~40x slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

# Default to test/ unless a test path was given (arguments that name existing files/dirs).
have_path=0
for a in "$@"; do
    case "$a" in -*) continue ;; esac
    [ -e "${a%%::*}" ] && have_path=1
done
args=("$@")
[ "$have_path" = 1 ] || args=(test "${args[@]}")

echo "[test] ROS_DOMAIN_ID=$ROS_DOMAIN_ID ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOG_DIR=$ROS_LOG_DIR"
echo "[test] .venv/bin/python -m pytest ${args[*]}"
set +e
"$ROOT/.venv/bin/python" -m pytest -ra --timeout="${LIVEVLM_TEST_TIMEOUT:-900}" "${args[@]}"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    echo "[test] FAILURE: pytest collected no tests (exit code 5) from: ${args[*]}" >&2
    exit 1
fi
exit "$rc"
