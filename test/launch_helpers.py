"""Helpers for the launch tests (``test_launch*.py``), which need the ROS 2 launch stack.

launch, launch_ros and launch_pytest are not on PyPI. ``scripts/test.sh`` installs them into
``.venv`` from ``LIVEVLM_LAUNCH_WHEELS=DIR`` or ``../shared/ros2_launch`` (see docs/INSTALL.md);
in a colcon workspace they come with ROS. Without them these modules skip and say so
(``.ci/run`` sets ``LIVEVLM_REQUIRE_LAUNCH_TESTS=1``, which turns such a skip into a failure,
see conftest.py).

:class:`LaunchWatch` is what keeps a failed start from hanging a test: it records every
process's output and exit code and the launch service's own errors, and
:meth:`LaunchWatch.wait_for` fails at once, with that output, when a process exited or the
launch ended while the test waits for the ROS graph.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import pytest

LAUNCH_STACK_MISSING_REASON = (
    "the ROS 2 launch stack (launch, launch_ros, launch_pytest; not on PyPI) is not installed: "
    "run scripts/test.sh with LIVEVLM_LAUNCH_WHEELS=DIR or with ../shared/ros2_launch present "
    "(docs/INSTALL.md), or run in a ROS 2 install")
#: A failed start must fail the test within this many seconds (a healthy start takes ~10 s).
START_TIMEOUT_S = 60.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def launch_stack_missing() -> Optional[str]:
    """Why the launch tests cannot run here (None: they can)."""
    try:
        import launch  # noqa: F401
        import launch_pytest  # noqa: F401
        import launch_ros.actions  # noqa: F401
    except ImportError as exc:
        return f"{LAUNCH_STACK_MISSING_REASON} ({exc})"
    return None


def package_not_found() -> Optional[str]:
    """Why launch cannot find livevlm_ros here (None: it can). conftest.py marks the launch
    tests skipped with it (a mark: see :func:`require_launch_stack`)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory("livevlm_ros")
    except (PackageNotFoundError, OSError, ValueError) as exc:
        return (f"livevlm_ros is not on AMENT_PREFIX_PATH ({exc!r}): run through scripts/test.sh, which sets "
                "it to .venv, or source .venv/setup.bash / a colcon install's setup.bash")
    return None


def require_launch_stack() -> None:
    """Skip the calling test module (at import) when the launch stack or rclpy is missing.

    Only for what comes with the launch stack: where it is installed, launch_testing's pytest
    plugin imports every test module while the directory is collected, and a skip raised at
    import then skips the whole directory (use a ``pytestmark`` skipif for anything else)."""
    from ros_helpers import ros_missing_reason

    reason = launch_stack_missing() or ros_missing_reason()
    if reason:
        pytest.skip(reason, allow_module_level=True)


class LaunchWatch:
    """What a launch did, recorded by event handlers: output and exit code of each process, and
    the errors the launch service logged (an exception in a launch file ends the launch).

    Add :meth:`actions` to the launch description before the actions it should watch.
    Thread-safe: the handlers run in the launch event loop, the test in another thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()
        watch = self

        class _Errors(logging.Handler):
            def emit(self, record):
                with watch._lock:
                    watch.launch_errors.append(record.getMessage())

        self._handler = _Errors(level=logging.ERROR)
        logging.getLogger("launch").addHandler(self._handler)

    def reset(self) -> None:
        """Forget what was recorded (before the next launch)."""
        with self._lock:
            self._output: Dict[str, List[str]] = defaultdict(list)
            self.pids: Dict[str, int] = {}
            self.exit_codes: Dict[str, int] = {}
            self.launch_errors: List[str] = []
            self.launch_service = None

    def close(self) -> None:
        logging.getLogger("launch").removeHandler(self._handler)

    def actions(self) -> list:
        """Launch actions that record every process's start, output and exit."""
        from launch.actions import RegisterEventHandler
        from launch.event_handlers import OnProcessExit, OnProcessIO, OnProcessStart

        return [
            RegisterEventHandler(OnProcessStart(on_start=self._on_start)),
            RegisterEventHandler(OnProcessIO(on_stdout=self._on_output, on_stderr=self._on_output)),
            RegisterEventHandler(OnProcessExit(on_exit=self._on_exit)),
        ]

    def _on_start(self, event, context):
        with self._lock:
            self.pids[event.process_name] = event.pid

    def _on_output(self, event):
        with self._lock:
            self._output[event.process_name].append(_ANSI.sub("", event.text.decode(errors="replace")))

    def _on_exit(self, event, context):
        with self._lock:
            self.exit_codes[event.process_name] = event.returncode

    # ------------------------------------------------------------------ reading
    def process_names(self, prefix: str = "") -> List[str]:
        with self._lock:
            return sorted(n for n in set(self.pids) | set(self._output) if n.startswith(prefix))

    def output(self, prefix: str = "") -> str:
        """The output of the processes whose launch name starts with ``prefix`` (all by default)."""
        with self._lock:
            return "".join(f"--- {name} ---\n{''.join(lines)}" for name, lines in sorted(self._output.items())
                           if name.startswith(prefix))

    def exit_code(self, prefix: str) -> Optional[int]:
        with self._lock:
            codes = [rc for name, rc in self.exit_codes.items() if name.startswith(prefix)]
        return codes[0] if len(codes) == 1 else None

    def problem(self, may_exit: Tuple[str, ...] = ()) -> Optional[str]:
        """Why waiting on the graph is pointless now: a process exited (one whose name starts with
        a prefix in ``may_exit`` only when its exit code was not 0), or the launch ended."""
        with self._lock:
            exited = {n: rc for n, rc in self.exit_codes.items() if rc != 0 or not n.startswith(may_exit or ("\0",))}
            errors = list(self.launch_errors)
        if exited:
            return "process(es) exited: " + ", ".join(f"{n} with exit code {rc}" for n, rc in sorted(exited.items()))
        task = getattr(self.launch_service, "task", None)
        if errors or (task is not None and task.done()):
            return "the launch failed: " + ("; ".join(errors) or "it ended")
        return None

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = START_TIMEOUT_S,
                 poll: float = 0.2, may_exit: Tuple[str, ...] = ()):
        """Poll ``predicate`` until it returns something truthy (returned); fail with the
        processes' output as soon as one exited (see :meth:`problem`) or the launch ended, or
        after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            problem = self.problem(may_exit)
            if problem or time.monotonic() > deadline:
                reason = problem or f"timed out after {timeout:g} s"
                pytest.fail(f"waiting for {what}: {reason}\n{self.output()}", pytrace=False)
            time.sleep(poll)


def include_livevlm_launch(**launch_arguments):
    """The package's launch/livevlm.launch.py, found through its share directory (as
    ``ros2 launch livevlm_ros livevlm.launch.py`` finds it), with these launch arguments."""
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    source = PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("livevlm_ros"), "launch",
                                                                 "livevlm.launch.py"]))
    return IncludeLaunchDescription(source, launch_arguments=list(launch_arguments.items()))


def lifecycle_state(client, node: str, timeout: float = 2.0) -> Optional[str]:
    """The lifecycle state label of ``node`` (``/ns/name``), None while its service is not up."""
    from lifecycle_msgs.srv import GetState

    service = client.client(GetState, f"{node}/get_state")
    if not service.service_is_ready():
        return None
    future = service.call_async(GetState.Request())
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return future.result().current_state.label if future.done() else None


def change_state(client, node: str, transition_id: int, timeout: float = 60.0) -> bool:
    """Ask ``node`` to take a lifecycle transition (``lifecycle_msgs/Transition`` id)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    response = client.call(ChangeState, f"{node}/change_state",
                           ChangeState.Request(transition=Transition(id=transition_id)), timeout)
    return bool(response.success)
