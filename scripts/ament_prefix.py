"""Make a virtual environment an ament prefix for this package, the way colcon's install is.

    .venv/bin/python scripts/ament_prefix.py .venv        # scripts/setup.sh runs this

``pip install -e .`` installs the code and the console scripts (on ``<prefix>/bin``) but none of
``setup.py``'s ``data_files``, and nothing under ``<prefix>/lib/<package>``. ROS 2 tools need both:

* ``ament_index_python`` finds the package through ``share/ament_index/resource_index/packages``;
* ``ros2 launch PKG FILE`` walks ``share/PKG`` with ``os.walk``, which does not enter a linked
  directory, so ``share/PKG/launch`` must be a real directory;
* launch_ros ``Node(package=..., executable=...)``, ``ros2 run`` and ``ros2 pkg executables``
  look for executables in ``lib/PKG/``.

This script reads ``data_files`` and ``console_scripts`` from ``setup.py`` itself (one list for
colcon and pip) and lays them out under the prefix: real directories holding links to the
checkout's files (an edited launch or config file takes effect at once; a new one needs a
re-run), and ``lib/PKG/<script>`` links to ``bin/<script>``. What it laid out before is removed
first. Exits non-zero, saying why, when a file or a console script is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import sys

ROOT = Path(__file__).resolve().parents[1]


def read_setup():
    """``(name, data_files, console script names)`` of ROOT/setup.py, without building anything."""
    import setuptools  # noqa: F401  (installs the distutils shim run_setup comes from)
    from distutils.core import run_setup

    cwd = os.getcwd()
    os.chdir(ROOT)  # setup.py globs relative to its own directory
    try:
        dist = run_setup(str(ROOT / "setup.py"), stop_after="init")
    finally:
        os.chdir(cwd)
    scripts = [entry.split("=")[0].strip() for entry in (dist.entry_points or {}).get("console_scripts", [])]
    return dist.get_name(), list(dist.data_files or []), scripts


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def lay_out(prefix: Path) -> list[str]:
    """Lay the package out under ``prefix``; returns the problems found (empty: done)."""
    name, data_files, scripts = read_setup()
    problems = []
    for owned in (prefix / "share" / name, prefix / "lib" / name):
        if owned.is_symlink() or owned.is_file():
            owned.unlink()
        elif owned.is_dir():
            shutil.rmtree(owned)
    for directory, files in data_files:
        for relative in files:
            source = ROOT / relative
            if not source.is_file():
                problems.append(f"data file {relative} (setup.py data_files) is missing")
                continue
            _link(source, prefix / directory / source.name)
    for script in scripts:
        executable = prefix / "bin" / script
        if not os.access(executable, os.X_OK):
            problems.append(f"console script {executable} is missing: run pip install -e . first")
            continue
        _link(executable, prefix / "lib" / name / script)
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: ament_prefix.py PREFIX", file=sys.stderr)
        return 2
    prefix = Path(argv[0]).resolve()
    problems = lay_out(prefix)
    for problem in problems:
        print(f"ament_prefix.py: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
