"""Node-spread counter: work reaches every node, from outside (Ray Client) and from inside."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from provisioners.base import ClusterHandle

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification

SCRIPT = Path(__file__).parent / "scripts" / "spread.py"


def spread_source(iterations: int) -> str:
    return re.sub(
        r"^ITERATIONS = \d+$", f"ITERATIONS = {iterations}", SCRIPT.read_text(), flags=re.M
    )


def parse_result(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
    raise AssertionError(f"the spread script printed no RESULT line; its output:\n{output[-3000:]}")


def check_spread(
    result: dict[str, Any],
    cluster: ClusterHandle,
    where: str,
    record: list[tuple[str, object]],
) -> None:
    # Kept in the results: the pinned tally is the proof, the SPREAD tally shows the default.
    record.append((f"spread_{where}_pinned", result["pinned"]))
    record.append((f"spread_{where}_spread_tally", result["spread"]))
    record.append((f"spread_{where}_nodes", result["alive"]))  # hostname, IP, head: the labels
    alive = {n["node_id"]: f"{n['hostname']}/{n['ip']}" for n in result["alive"]}
    assert len(alive) == cluster.expected_nodes, (
        f"{where}: {len(alive)} alive node(s), expected {cluster.expected_nodes}: "
        + ", ".join(alive.values())
    )
    idle = {nid: name for nid, name in alive.items() if result["pinned"].get(nid, 0) == 0}
    assert not idle, (
        f"{where}: node(s) never ran work: "
        + ", ".join(f"{n} ({nid[:12]})" for nid, n in idle.items())
        + f"; tally {result['pinned']}"
    )
    assert not result["misplaced"], (
        f"{where}: pinned tasks ran on another node (target, actual): {result['misplaced']}"
    )
    total = sum(result["pinned"].values())
    assert total == cluster.expected_nodes * result["iterations"], (
        f"{where}: tally {result['pinned']} sums to {total}"
    )


def test_spread_from_outside_every_node_runs_work(
    ray_cluster: ClusterHandle,
    ray_client_address: str,
    ray_alive_nodes: list[dict[str, Any]],
    ray_run_script: Any,
    ray_spread_iterations: int,
    request: pytest.FixtureRequest,
) -> None:
    """Every node runs work sent from outside, through the forwarded client port.

    The book's localPython.py: a driver outside the cluster, on Ray Client.
    """
    run = ray_run_script(spread_source(ray_spread_iterations), ray_client_address)
    assert run.returncode == 0, run.explain()
    check_spread(parse_result(run.stdout), ray_cluster, "outside", request.node.user_properties)


def test_spread_from_inside_every_node_runs_work(
    ray_cluster: ClusterHandle,
    ray_run_in_cluster: Any,
    ray_alive_nodes: list[dict[str, Any]],
    ray_spread_iterations: int,
    request: pytest.FixtureRequest,
) -> None:
    """Every node runs work sent from inside the cluster.

    The book's servicePython.py: the same counter, run against the head's in-cluster address.
    """
    output = ray_run_in_cluster(spread_source(ray_spread_iterations))
    check_spread(parse_result(output), ray_cluster, "inside", request.node.user_properties)
