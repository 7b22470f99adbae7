"""Version preflight: Ray Client needs the same Ray version and Python minor on both sides.

The cluster's side is read on every node (a task pinned to each, ``ray_node_versions``), never
taken from the mode's handle or the harness's own environment.
"""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from fixtures.nodes import NodeVersions, differing
from provisioners.base import ClusterHandle

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification


def test_preflight_ray_version_matches_client(
    ray_cluster: ClusterHandle, ray_node_versions: list[NodeVersions]
) -> None:
    """The cluster runs the same Ray version as this client."""
    here = importlib.metadata.version("ray")
    other = differing(ray_node_versions, here, "ray")
    assert not other, (
        f"Ray {here} here; Ray Client refuses to connect across versions, and "
        + "; ".join(other)
        + ". Install the cluster's version here (or the same Ray on every node)"
    )


def test_preflight_python_minor_matches_client(
    ray_cluster: ClusterHandle, ray_node_versions: list[NodeVersions]
) -> None:
    """The cluster runs the same Python minor as this client."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other = differing(ray_node_versions, here, "python")
    assert not other, f"Python {here} here; Ray Client needs the same Python minor: " + "; ".join(
        other
    )
    claimed = differing(ray_node_versions, ray_cluster.python_version, "python")
    assert not claimed, (
        f"the mode says the cluster runs Python {ray_cluster.python_version}: " + "; ".join(claimed)
    )
