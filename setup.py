"""livevlm_ros: streaming video-LLM perception node for ROS 2.

Built by colcon as an ament_python package (package.xml next to this file) and also
installable into a plain virtual environment with ``pip install -e .`` (scripts/setup.sh
does that after installing the pinned requirements).
"""
from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'livevlm_ros'


def _files(*patterns):
    """Sorted files matching any of the patterns (relative to this directory)."""
    here = os.path.dirname(os.path.abspath(__file__))
    found = set()
    for pattern in patterns:
        for path in glob(os.path.join(here, pattern)):
            if os.path.isfile(path):
                found.add(os.path.relpath(path, here))
    return sorted(found)


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', _files('launch/*.launch.py')),
        ('share/' + package_name + '/config', _files('config/*.yaml', 'config/*.xml')),
    ],
    # Runtime dependencies (torch, transformers, rclpy, ...) come from requirements.txt
    # (pip) or package.xml (rosdep); listing them here would let pip replace the pinned
    # CPU/CUDA torch build.
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=False,
    maintainer='livevlm_ros maintainers',
    maintainer_email='maintainers@livevlm-ros.dev',
    description='Streaming video-LLM perception node: ask questions about what the cameras saw.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'livevlm_node = livevlm_ros.ros.node:main',
            'livevlm_replay = livevlm_ros.tools.replay:main',
            'livevlm_ask = livevlm_ros.tools.ask:main',
            'livevlm_demo = livevlm_ros.tools.demo:main',
            'livevlm_offline = livevlm_ros.tools.offline:main',
            'livevlm_bench = livevlm_ros.bench.cli:main',
            'livevlm_soak = livevlm_ros.soak.cli:main',
        ],
    },
)
