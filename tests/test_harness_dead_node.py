"""Against a REAL cluster whose worker died: the run fails fast, once, naming the dead node.

Three ``ray start`` nodes of our own (own process groups, a private ``--temp-dir``,
kernel-picked ports), one worker killed by its process group, then the node-needing suites run
on it with the ``external`` mode. Before the node verdict, each such check waited out a full node
timeout on its own and named only the alive nodes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness_fakes import REPO, run_subprocess

from fixtures.nodes import Node, census
from provisioners.util.processes import env_with_interpreter_first, kill_all, ray_cli, run_processes
from provisioners.util.relay import free_port
from provisioners.util.runner import Background, Started, tail_file
from provisioners.util.waits import urlopen_ok, wait_for

NODE_TIMEOUT = 20.0
#: The GCS notices a SIGKILLed raylet after its health checks fail; defaults take ~30 s.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}

pytestmark = pytest.mark.skipif(ray_cli() is None, reason="the `ray` command is not installed")


@dataclass(frozen=True)
class DeadWorkerCluster:
    client: str  # ray://127.0.0.1:PORT
    dashboard: str
    dead: Node


def _ray_start(bg: Background, temp: Path, name: str, args: list[str]) -> Started:
    ray = ray_cli()
    assert ray is not None
    argv = [
        ray,
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        f"--object-store-memory={128 * 1024**2}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        *args,
    ]
    return bg.spawn(argv, name)


def _exited(nodes: list[Started]) -> str | None:
    """A node's `ray start` that exited (it will never join), with its log's tail."""
    for node in nodes:
        code = node.exited()
        if code is not None:
            return f"{node.what} exited {code}: {tail_file(node.log, 8)}"
    return None


def _states(dashboard: str) -> str:
    try:
        return ", ".join(f"{n.node_id[:12]} {n.state}" for n in census(dashboard)) or "no nodes"
    except Exception as exc:  # what the wait saw is the error itself
        return f"{type(exc).__name__}: {exc}"


def _alive(dashboard: str, n: int) -> list[Node] | None:
    nodes = [node for node in census(dashboard) if node.state == "ALIVE"]
    return nodes if len(nodes) == n else None


@pytest.fixture(scope="module")
def dead_worker_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeadWorkerCluster]:
    # Short: Ray puts unix sockets under the temp dir (108-byte limit).
    temp = Path(f"/tmp/rc-h3-{secrets.token_hex(3)}")
    env = {"PATH": env_with_interpreter_first()["PATH"], **FAST_HEALTH_CHECKS}
    bg = Background("h3-dead-node", tmp_path_factory.mktemp("ray-logs"), env)
    gcs, dash, client = free_port(), free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dash}"
    try:
        head = [
            "--head",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
        ]
        nodes = [_ray_start(bg, temp, "head", head)]

        def alive(n: int, what: str) -> list[Node]:
            return wait_for(
                lambda: _alive(dashboard, n),
                timeout=90,
                what=what,
                last_seen=lambda: _states(dashboard),
                give_up=lambda: _exited(nodes),
            )

        wait_for(
            lambda: urlopen_ok(f"{dashboard}/api/version"),
            timeout=90,
            what="the head's dashboard",
            give_up=lambda: _exited(nodes),
        )
        alive(1, "the head node to be ALIVE")
        nodes.append(_ray_start(bg, temp, "worker1", [f"--address=127.0.0.1:{gcs}"]))
        before = {n.node_id for n in alive(2, "worker1 to join: 2 ALIVE nodes")}
        nodes.append(_ray_start(bg, temp, "worker2", [f"--address=127.0.0.1:{gcs}"]))
        after = alive(3, "worker2 to join: 3 ALIVE nodes")
        [dead_id] = [n.node_id for n in after if n.node_id not in before]
        victim = nodes.pop()  # no longer a node that should stay up
        os.killpg(victim.pid, signal.SIGKILL)  # the worker node's `ray start`, raylet and workers
        dead = wait_for(
            lambda: next(
                (n for n in census(dashboard) if n.node_id == dead_id and n.state == "DEAD"), None
            ),
            timeout=60,
            what=f"the GCS to mark node {dead_id[:12]} DEAD",
        )
        yield DeadWorkerCluster(f"ray://127.0.0.1:{client}", dashboard, dead)
    finally:
        bg.close()
        kill_all(run_processes(marker=str(temp)))  # workers Ray moved out of our groups
        shutil.rmtree(temp, ignore_errors=True)


def test_dead_worker_fails_node_checks_once_fast_naming_it(
    pytester: pytest.Pytester, dead_worker_cluster: DeadWorkerCluster
) -> None:
    suites = pytester.mkdir("suites")
    for name in ("test_spread.py", "test_dashboard.py"):
        shutil.copy(REPO / "suites" / name, suites / name)
    shutil.copytree(REPO / "suites" / "scripts", suites / "scripts")
    report = pytester.path / "report"
    cluster = dead_worker_cluster
    t0 = time.monotonic()
    result = run_subprocess(
        pytester,
        "suites",
        "-k",
        "spread or nodes_match",
        "--ray-modes",
        "external",
        "--ray-address",
        cluster.client,
        "--ray-dashboard-url",
        cluster.dashboard,
        "--ray-expect-nodes",
        "3",
        "--ray-node-timeout",
        str(NODE_TIMEOUT),
        "--ray-report-dir",
        str(report),
    )
    elapsed = time.monotonic() - t0

    # The spread checks (outside, inside, sessions at once) and the dashboard's node list need
    # the nodes.
    result.assert_outcomes(errors=4, deselected=2)
    assert elapsed < 2 * NODE_TIMEOUT, f"the run took {elapsed:.0f} s"
    dead = cluster.dead
    named = f"  DEAD {dead.node_id[:12]} at {dead.ip} ({dead.hostname}) since ??:??:??*"
    for check in (
        "test_spread_from_outside_every_node_runs_work",
        "test_spread_from_inside_every_node_runs_work",
        "test_spread_client_sessions_at_once_all_run_the_counter",
        "test_dashboard_nodes_match_expected",
    ):
        result.stdout.fnmatch_lines(
            [
                f"*ERROR at setup of {check}?external?*",
                f"external: 2 of 3 node(s) alive after {NODE_TIMEOUT:.0f}.? s (Ray's state API):",
                named,
                f"  alive * at {dead.ip} (*)",
                f"  alive * at {dead.ip} (*)",
            ]
        )
    # One verdict for the mode: one wait, one progress line saying what it found.
    progress = (report / "progress.log").read_text().splitlines()
    verdicts = [line for line in progress if "node(s) alive" in line]
    assert len(verdicts) == 1, progress
    assert f"not ready after {NODE_TIMEOUT:.0f}." in verdicts[0]
    assert f"2 of 3 node(s) alive; DEAD {dead.node_id[:12]} at {dead.ip}" in verdicts[0]


def test_dead_worker_is_reported_without_expect_nodes(
    pytester: pytest.Pytester, dead_worker_cluster: DeadWorkerCluster
) -> None:
    """No --ray-expect-nodes: the mode expects every node the GCS has known, so the one that
    was already dead when the run started fails the node checks, named, instead of being
    expected away."""
    suites = pytester.mkdir("suites")
    shutil.copy(REPO / "suites" / "test_dashboard.py", suites / "test_dashboard.py")
    cluster = dead_worker_cluster
    result = run_subprocess(
        pytester,
        "suites",
        "-k",
        "nodes_match",
        "--ray-modes",
        "external",
        "--ray-address",
        cluster.client,
        "--ray-dashboard-url",
        cluster.dashboard,
        "--ray-node-timeout",
        "2",
        "--ray-report-dir",
        str(pytester.path / "report"),
    )
    result.assert_outcomes(errors=1, deselected=2)
    dead = cluster.dead
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_dashboard_nodes_match_expected?external?*",
            "external: 2 of 3 node(s) alive after 2.? s (Ray's state API):",
            f"  DEAD {dead.node_id[:12]} at {dead.ip} ({dead.hostname}) since ??:??:??*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*found Ray * with 2 alive node(s) at * and 1 dead (no --ray-expect-nodes: expecting all 3*"
        ]
    )
