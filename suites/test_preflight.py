"""Version preflight: Ray Client needs the same Ray version and Python minor on both sides.

On a Ray difference (a patch level too) the check says how far apart the releases are and what
Ray Client does with it, tried for real through the client port: as is, and with Ray's override.

The cluster's side is read on every node (a task pinned to each, ``ray_node_versions``), never
taken from the mode's handle or the harness's own environment.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from fixtures.clients import client_forward
from fixtures.nodes import NodeVersions, differing
from provisioners.contract.base import ClusterHandle, Provisioner

CLIENT_ACROSS = Path(__file__).parent / "scripts" / "client_across.py"

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification


def test_preflight_ray_version_matches_client(
    ray_cluster: ClusterHandle,
    ray_node_versions: list[NodeVersions],
    ray_provisioner: Provisioner,
    ray_run_script: Any,
    request: pytest.FixtureRequest,
) -> None:
    """The cluster runs the same Ray version as this client, to the patch level."""
    here = importlib.metadata.version("ray")
    other = differing(ray_node_versions, here, "ray")
    if not other:
        return
    theirs = sorted({n.ray for n in ray_node_versions if n.ray and n.ray != here})
    apart = "; ".join(f"Ray {v}: {release_distance(here, v)}" for v in theirs)
    tried = what_ray_client_does(request.config, ray_provisioner, ray_run_script)
    raise AssertionError(
        f"Ray {here} here; "
        + "; ".join(other)
        + (f" ({apart})" if apart else "")
        + f". What Ray Client does with it, tried: {tried}. Install the cluster's version here "
        "(or the same Ray on every node)"
    )


def release_distance(here: str, there: str) -> str:
    """How far apart two Ray releases are, in words."""
    a, b = Version(here).release, Version(there).release
    if a[:2] == b[:2]:
        return "the same minor release, another patch level"
    if a[:1] == b[:1]:
        return "another minor release"
    return "another major release"


def what_ray_client_does(config: pytest.Config, provisioner: Provisioner, run_script: Any) -> str:
    """A session through the client port as is, and with Ray's override; what each did."""
    try:
        with client_forward(config, provisioner) as address:
            plain = run_script(CLIENT_ACROSS.read_text(), address)
            ignoring = run_script(CLIENT_ACROSS.read_text(), address, "ignore")
    except Exception as exc:  # a mode without a client port, or a forward that broke
        return f"not tried ({type(exc).__name__}: {exc})"
    return f"a session {_outcome(plain)}; with RAY_IGNORE_VERSION_MISMATCH=1 {_outcome(ignoring)}"


def _outcome(run: Any) -> str:
    for line in reversed(run.stdout.splitlines()):
        if line.startswith("RESULT "):
            found = json.loads(line[len("RESULT ") :])
            if not found["connected"]:
                return f"is refused ({found['error']})"
            if not found["task"]:
                return f"connects but its task fails ({found['error']})"
            return "connects and runs a task"
    return f"did not say (exit {run.returncode}: {run.stderr.strip()[-300:]})"


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
