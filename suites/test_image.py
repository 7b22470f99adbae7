"""The node image on its own: one container of it runs Ray code with no cluster around it."""

from __future__ import annotations

import pytest

from provisioners.contract.base import ClusterHandle, ClusterSpec, Provisioner, SupportsImageRun

TASK = """
import ray
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
print("RESULT", ray.get(ray.remote(lambda: 1 + 1).remote()))
ray.shutdown()
"""
VERSIONS = "import sys, ray; print('VERSIONS', ray.__version__, '%d.%d' % sys.version_info[:2])"


def _image(provisioner: Provisioner) -> SupportsImageRun:
    if not isinstance(provisioner, SupportsImageRun):
        pytest.skip("this mode's nodes do not come from an image that can run by itself")
    return provisioner


def _line(output: str, key: str) -> list[str]:
    for line in output.splitlines():
        if line.startswith(key + " "):
            return line.split()[1:]
    raise AssertionError(f"the image printed no {key} line; its output:\n{output[-3000:]}")


def test_image_runs_ray_task_alone(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """One container of the node image runs a Ray task with no cluster around it."""
    image = _image(ray_provisioner)
    output = image.image_run(["python", "-c", TASK], ray_spec.timeouts.job)
    assert _line(output, "RESULT") == ["2"], (
        f"a Ray task in a lone container of the image returned {_line(output, 'RESULT')}, "
        f"expected ['2']; output:\n{output[-3000:]}"
    )


def test_image_versions_match_cluster(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """The node image has the Ray and Python the cluster reports."""
    image = _image(ray_provisioner)
    output = image.image_run(["python", "-c", VERSIONS], ray_spec.timeouts.job)
    seen = _line(output, "VERSIONS")
    expected = [ray_cluster.ray_version, ray_cluster.python_version]
    assert seen == expected, f"the image has Ray/Python {seen}, but the cluster reports {expected}"
