"""Shared pytest setup for every test under test/.

* ROS traffic stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a
  ``ROS_DOMAIN_ID`` of this test session (``LIVEVLM_TEST_DOMAIN_ID`` pins it); ROS logs go to a
  temporary ``ROS_LOG_DIR``; the model hub is not contacted (``HF_HUB_OFFLINE=1``). Set in
  :func:`pytest_configure`, before any test starts rclpy or a child process.
* ``LIVEVLM_REQUIRE_LAUNCH_TESTS=1`` (set by ``.ci/run``): the run fails when a launch test
  (``test_launch*.py``, which need the ROS 2 launch stack) was skipped or none ran, so CI cannot
  pass with them silently skipped.
* Fixtures: ``shared_data`` (the real recordings), ``layout_dir`` (checkpoint directories with the
  file layout of real hub repos, ``checkpoint_layouts.py``), ``ros_client`` (an rclpy helper node in its own
  context), ``node_process`` (starts ``livevlm`` nodes as their own processes, stopped SIGINT ->
  SIGTERM at the end), ``launch_watch`` / ``launch_client`` (for the launch_pytest modules). The
  helpers themselves live in ``ros_helpers.py`` and ``launch_helpers.py``.
"""

import os
from pathlib import Path
import random
import shutil
import tempfile

import pytest
from shared_data import SHARED_DATA


_TMP_LOG_DIR = None


def _session_domain_id() -> int:
    pinned = os.environ.get("LIVEVLM_TEST_DOMAIN_ID")
    if pinned:
        return int(pinned)
    caller = os.environ.get("ROS_DOMAIN_ID")
    # 1..100 keeps every DDS port in the valid range; never the caller's own domain.
    choices = [d for d in range(1, 101) if str(d) != caller]
    return random.SystemRandom().choice(choices)


def pytest_configure(config):
    global _TMP_LOG_DIR
    os.environ["ROS_DOMAIN_ID"] = str(_session_domain_id())
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    for name in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "RMW_IMPLEMENTATION"):
        os.environ.pop(name, None)
    if not os.environ.get("ROS_LOG_DIR"):
        _TMP_LOG_DIR = tempfile.mkdtemp(prefix="livevlm_test_ros_log_")
        os.environ["ROS_LOG_DIR"] = _TMP_LOG_DIR
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_unconfigure(config):
    if _TMP_LOG_DIR:
        shutil.rmtree(_TMP_LOG_DIR, ignore_errors=True)


def pytest_report_header(config):
    return (f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')} ROS_AUTOMATIC_DISCOVERY_RANGE="
            f"{os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')} ROS_LOG_DIR={os.environ.get('ROS_LOG_DIR')}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory of real recordings; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set LIVEVLM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def ros_client():
    """An rclpy helper node (own context, executor thread) for one test module."""
    from ros_helpers import RosClient, require_ros

    require_ros()
    client = RosClient("livevlm_test_client")
    yield client
    client.close()


@pytest.fixture(scope="module")
def launch_watch():
    """A :class:`launch_helpers.LaunchWatch` for the launch tests of one module."""
    from launch_helpers import LaunchWatch

    watch = LaunchWatch()
    yield watch
    watch.close()


@pytest.fixture(scope="module")
def launch_client(launch_watch, launch_service):
    """An rclpy helper node for a launch_pytest module (``launch_service`` is launch_pytest's);
    it also tells ``launch_watch`` which launch service to check."""
    from ros_helpers import RosClient

    launch_watch.launch_service = launch_service
    client = RosClient("livevlm_launch_test_client")
    yield client
    client.close()


@pytest.fixture(scope="module")
def node_process(tmp_path_factory):
    """``start(params, ...)`` -> a running :class:`ros_helpers.NodeProcess`; all stopped at the end."""
    from ros_helpers import NodeProcess, require_ros

    require_ros()
    started = []

    def start(params, **kwargs):
        proc = NodeProcess(params, workdir=tmp_path_factory.mktemp("node"), **kwargs)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# ------------------------------------------------------------------ launch tests must run in CI
LAUNCH_TEST_PREFIX = "test_launch"
_launch_tests = {"ran": 0, "skipped": []}
_modules_skipped_at_import = []


def _is_launch_test(nodeid: str) -> bool:
    return Path(nodeid.split("::")[0]).name.startswith(LAUNCH_TEST_PREFIX)


def pytest_collectreport(report):
    if report.skipped:  # a module skipped at import, saying why
        _modules_skipped_at_import.append(report.nodeid)
        if _is_launch_test(report.nodeid):
            _launch_tests["skipped"].append((report.nodeid, str(report.longrepr)))


def pytest_collection_modifyitems(config, items):
    launch_items = [item for item in items if _is_launch_test(item.nodeid)]
    if launch_items:
        from launch_helpers import package_not_found

        reason = package_not_found()
        for item in launch_items if reason else []:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_logreport(report):
    if not _is_launch_test(report.nodeid):
        return
    if report.skipped:
        _launch_tests["skipped"].append((report.nodeid, str(report.longrepr)))
    elif report.when == "call":
        _launch_tests["ran"] += 1


def _launch_tests_missing() -> str:
    if os.environ.get("LIVEVLM_REQUIRE_LAUNCH_TESTS") != "1":
        return ""
    if _launch_tests["skipped"]:
        return "launch tests were skipped: " + "; ".join(f"{n} ({why})" for n, why in _launch_tests["skipped"])
    if not _launch_tests["ran"]:
        return "no launch test ran"
    return ""


def pytest_sessionfinish(session, exitstatus):
    # Only modules that skipped themselves (e.g. `scripts/test.sh test/test_launch.py` without the
    # launch stack): pytest says "no tests collected" (5), but every module said why it skipped.
    if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and _modules_skipped_at_import:
        session.exitstatus = pytest.ExitCode.OK
    if _launch_tests_missing() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    problem = _launch_tests_missing()
    if problem:
        terminalreporter.write_line(f"FAILED (LIVEVLM_REQUIRE_LAUNCH_TESTS=1): {problem}", red=True)


@pytest.fixture(scope="session")
def layout_dir(tmp_path_factory):
    """``layout_dir(name)`` -> the directory of real-layout checkpoint ``name`` (``checkpoint_layouts.build_layout``),
    built once per session; treat it as read-only (copy it to change files)."""
    from checkpoint_layouts import build_layout

    root = tmp_path_factory.mktemp("layouts")
    built = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_layout(name, root / name.replace("+", "_"))
        return built[name]

    return get
