"""Version preflight: Ray Client needs the same Ray version and Python minor on both sides."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from provisioners.base import ClusterHandle

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification

PY_MINOR = 'import sys; print("PY", f"{sys.version_info[0]}.{sys.version_info[1]}")'


def test_preflight_ray_version_matches_client(
    ray_cluster: ClusterHandle, ray_cluster_version: str
) -> None:
    """The cluster runs the same Ray version as this client."""
    import ray

    assert ray_cluster_version == ray.__version__, (
        f"Ray {ray.__version__} here vs {ray_cluster_version} in the cluster (its dashboard's /api/version): "
        "Ray Client refuses to connect across versions; install the cluster's version here"
    )


def test_preflight_python_minor_matches_client(
    ray_cluster: ClusterHandle, ray_run_in_cluster: Any
) -> None:
    """The cluster runs the same Python minor as this client."""
    output = ray_run_in_cluster(PY_MINOR)
    seen = [line.split()[1] for line in output.splitlines() if line.startswith("PY ")]
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert seen, f"the in-cluster Python check printed nothing recognisable:\n{output[-1000:]}"
    assert seen[0] == here, (
        f"Python {here} here vs {seen[0]} in the cluster: Ray Client needs the same Python minor"
    )
    assert seen[0] == ray_cluster.python_version, (
        f"the mode says the cluster runs Python {ray_cluster.python_version}, it runs {seen[0]}"
    )
