#!/usr/bin/env bash
# Install the ROS 2 launch stack into .venv/ (made by scripts/setup.sh) from a folder of wheels:
#
#   bash scripts/install_launch_stack.sh DIR
#   LIVEVLM_LAUNCH_WHEELS=DIR bash scripts/setup.sh      # the same, as part of the setup
#
# launch, launch_xml, launch_yaml, launch_testing, launch_pytest, launch_ros,
# launch_testing_ros, ros2launch and the ros2 CLI (ros2cli, ros2pkg, ros2run) are not published
# on PyPI. DIR holds them as pure-Python wheels built unchanged from the official sources
# (`pip wheel --no-deps`, see docs/INSTALL.md "ros2 launch without a ROS install"), in DIR/wheels/
# or in DIR itself, and composition_interfaces (an interface package launch_ros imports) as
# source: DIR/composition_interfaces-src.tar.gz or DIR/composition_interfaces/.
#
# Steps: pip install --no-deps the wheels and their PyPI dependencies pinned in
# requirements-launch.txt, build composition_interfaces with cmake into .venv (as setup.sh builds
# livevlm_interfaces), verify (imports, type support, `ros2 pkg prefix`, pytest < 8.4).
# Idempotent: a re-run with the same DIR content only checks (about a second).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$ROOT/.venv"
VPY="$V/bin/python"
STAMP="$V/.livevlm_launch_stack_stamp"
T0=$SECONDS

say() { printf '[launch stack %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf '[launch stack] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$#" = 1 ] || die "usage: bash scripts/install_launch_stack.sh DIR (a folder of the launch stack's wheels)"
DIR="$(cd "$1" 2>/dev/null && pwd)" || die "$1: no such directory"
[ -x "$VPY" ] || die "$V does not exist yet: run scripts/setup.sh first"

shopt -s nullglob
WHEELS=("$DIR"/wheels/*.whl "$DIR"/*.whl)
shopt -u nullglob
[ "${#WHEELS[@]}" -gt 0 ] || die "$DIR holds no wheels (expected $DIR/wheels/*.whl or $DIR/*.whl)"
for needed in launch launch_ros launch_pytest launch_testing ros2cli ros2launch ros2pkg ros2run; do
    found=0
    for w in "${WHEELS[@]}"; do
        case "$(basename "$w")" in "$needed"-[0-9]*) found=1 ;; esac
    done
    [ "$found" = 1 ] || die "$DIR has no $needed wheel ($needed-<version>-*.whl)"
done
if [ -f "$DIR/composition_interfaces-src.tar.gz" ]; then
    CI_SRC_ARCHIVE="$DIR/composition_interfaces-src.tar.gz"; CI_SRC_DIR=""
elif [ -f "$DIR/composition_interfaces/package.xml" ]; then
    CI_SRC_ARCHIVE=""; CI_SRC_DIR="$DIR/composition_interfaces"
else
    die "$DIR has neither composition_interfaces-src.tar.gz nor composition_interfaces/ (launch_ros imports it)"
fi

fingerprint() {
    {
        sha256sum "${WHEELS[@]}" | cut -d' ' -f1
        if [ -n "$CI_SRC_ARCHIVE" ]; then sha256sum "$CI_SRC_ARCHIVE" | cut -d' ' -f1
        else (cd "$CI_SRC_DIR" && find . -type f | LC_ALL=C sort | xargs sha256sum); fi
        cat "$ROOT/requirements-launch.txt" "$ROOT/scripts/install_launch_stack.sh"
    } | sha256sum | cut -d' ' -f1
}

verify() {
    AMENT_PREFIX_PATH="$V" "$VPY" - <<'PY' || return 1
import launch, launch.frontend, launch_pytest, launch_testing, launch_testing_ros  # noqa: F401
import launch_ros.actions  # noqa: F401  (imports composition_interfaces)
import ros2cli, ros2launch, ros2pkg, ros2run  # noqa: F401
import composition_interfaces.srv as c
type(c.LoadNode).__import_type_support__()
import pytest
major, minor = (int(x) for x in pytest.__version__.split(".")[:2])
assert (major, minor) < (8, 4), f"launch_pytest needs pytest < 8.4, found {pytest.__version__}"
PY
    AMENT_PREFIX_PATH="$V" "$V/bin/ros2" pkg prefix composition_interfaces >/dev/null || return 1
}

FP="$(fingerprint)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FP" ] && verify >/dev/null 2>&1; then
    say "up to date in $V (from $DIR)"
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# --no-deps for both: launch_ros declares ament_index_python, which the ROS 2 wheels provide
# under another distribution name (ros-ament-index-python); the PyPI dependencies are pinned.
pip_q() { "$VPY" -m pip "$@" 2> >(grep -v -E "^WARNING: Location '.*' is ignored" >&2); }
say "pip install --no-deps ${#WHEELS[@]} wheels from $DIR"
pip_q install -q --no-deps --force-reinstall "${WHEELS[@]}" || die "pip install of the wheels failed"
say "pip install --no-deps -r requirements-launch.txt (their PyPI dependencies)"
pip_q install -q --no-deps -r "$ROOT/requirements-launch.txt" || die "pip install -r requirements-launch.txt failed"

BUILD="$V/.build/composition_interfaces"
rm -rf "$BUILD"
mkdir -p "$BUILD"
if [ -n "$CI_SRC_ARCHIVE" ]; then
    tar xzf "$CI_SRC_ARCHIVE" -C "$BUILD" || die "cannot unpack $CI_SRC_ARCHIVE"
    SRC="$BUILD/composition_interfaces"
else
    SRC="$CI_SRC_DIR"
fi
[ -f "$SRC/CMakeLists.txt" ] || die "no CMakeLists.txt in $SRC"
LOG="$V/.build/composition_interfaces.log"
say "building composition_interfaces into $V (cmake, $(nproc) jobs; log $LOG)"
if ! { AMENT_PREFIX_PATH="$V" cmake -S "$SRC" -B "$BUILD/build" \
            -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" \
            -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
        && AMENT_PREFIX_PATH="$V" cmake --build "$BUILD/build" -j "$(nproc)" \
        && cmake --install "$BUILD/build"; } >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    die "building composition_interfaces failed (full log: $LOG)"
fi

say "verifying (launch, launch_ros, launch_pytest, ros2 CLI, composition_interfaces type support)"
verify || die "the launch stack does not work in $V (see above)"
echo "$FP" > "$STAMP"
say "done: 'source .venv/setup.bash', then ros2 launch / ros2 run / ros2 pkg work from $V"
