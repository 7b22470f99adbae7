"""Node-spread counter: work reaches every node, from outside (Ray Client) and from inside."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from provisioners.contract.base import ClusterHandle, ClusterSpec, Provisioner, SupportsAutoscaling

SCRIPT = Path(__file__).parent / "scripts" / "spread.py"
#: Seconds between the sessions' starts. Ray 2.60's client proxier forks each session's server
#: while gRPC threads run and some die at birth (ray-project/ray#63202, retried and recorded);
#: eight forks in the same instant lost three of eight here. The barrier still holds every
#: session open at the same time before any sends work.
SESSION_STAGGER_S = 1.0
#: Share of --ray-job-timeout after which the counter stops (its DEADLINE_S, from the script's
#: start, a session's wait for its peers not counted): past it the script reports how far it
#: got instead of being killed at the job's time limit. The rest is for Ray's import, connect
#: and shutdown (more than 10 s of 40 on a busy 2-core machine, seen in a cold trial).
DEADLINE_SHARE = 0.75
#: Share of --ray-job-timeout a session at once waits for its peers (its BARRIER_S), on top of
#: its own time limit: a peer retrying Ray's known flake connects late (three retries on
#: kube-operator in CI: the last session connected about 70 s after the first).
BARRIER_SHARE = 0.75


def spread_source(iterations: int, tasks: int, job_timeout: float, barrier_s: float = 0) -> str:
    """The counter with its rounds, its SPREAD load, its deadline and its barrier filled in."""
    source = SCRIPT.read_text()
    values = {
        "ITERATIONS": iterations,
        "SPREAD_TASKS": tasks,
        "DEADLINE_S": round(job_timeout * DEADLINE_SHARE, 1),
        "BARRIER_S": round(barrier_s, 1),
    }
    for name, value in values.items():
        source = re.sub(rf"^{name} = \d+$", f"{name} = {value}", source, flags=re.M)
    return source


def parse_result(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
    raise AssertionError(f"the spread script printed no RESULT line; its output:\n{output[-3000:]}")


def headroom(provisioner: Provisioner) -> int:
    """How many nodes beyond the expected an autoscaler may have added (0 without one)."""
    if not isinstance(provisioner, SupportsAutoscaling):
        return 0
    limits = provisioner.autoscaling_limits()
    return limits.max_workers if limits is not None else 0


def check_spread(
    result: dict[str, Any],
    cluster: ClusterHandle,
    where: str,
    record: list[tuple[str, object]],
    extra: int = 0,
) -> None:
    """The counter's verdict; ``extra`` nodes past the expected may be alive (an autoscaler's,
    added for an earlier load and not yet idle long enough to go)."""
    # Kept in the results: the pinned tally is the proof, the SPREAD tally shows the load.
    record.append((f"spread_{where}_pinned", result["pinned"]))
    record.append((f"spread_{where}_spread_tally", result["spread"]))
    # Hostname, IP, head: the labels; with the nodes an autoscaler added for the load.
    record.append((f"spread_{where}_nodes", result["alive"] + result["joined"]))
    record.append((f"spread_{where}_load", load_figures(result["load"])))
    alive = {n["node_id"]: f"{n['hostname']}/{n['ip']}" for n in result["alive"]}
    expected = f"{cluster.expected_nodes}" + (f" (+ up to {extra} autoscaled)" if extra else "")
    assert cluster.expected_nodes <= len(alive) <= cluster.expected_nodes + extra, (
        f"{where}: {len(alive)} alive node(s), expected {expected}: " + ", ".join(alive.values())
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
    assert total == len(alive) * result["iterations"], (
        f"{where}: tally {result['pinned']} sums to {total}"
    )
    check_load(result, {n["node_id"] for n in result["alive"] + result["joined"]}, where)


def load_figures(load: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of a load: tasks asked and done, seconds, tasks/s."""
    return {k: load[k] for k in ("tasks", "done", "seconds", "tasks_per_s")}


def check_load(result: dict[str, Any], listed: set[str], where: str) -> None:
    """Every SPREAD task came back, from a node the cluster lists."""
    load, tally = result["load"], result["spread"]
    assert load["done"] == load["tasks"], (
        f"{where}: {load['done']} of {load['tasks']} SPREAD tasks finished in "
        f"{load['seconds']:.1f} s ({load['tasks_per_s']:g} tasks/s; {load['submitted']} "
        f"submitted) before the counter's {load['deadline_s']:g} s deadline "
        f"({DEADLINE_SHARE:.0%} of --ray-job-timeout); tally so far {tally}"
    )
    strangers = {nid: n for nid, n in tally.items() if nid not in listed}
    assert not strangers, (
        f"{where}: SPREAD tasks ran on nodes the cluster does not list: {strangers}"
    )


@pytest.mark.ray_certification
def test_spread_from_outside_every_node_runs_work(
    ray_cluster: ClusterHandle,
    ray_spec: ClusterSpec,
    ray_client_address: str,
    ray_alive_nodes: list[dict[str, Any]],
    ray_run_script: Any,
    ray_spread_iterations: int,
    ray_spread_tasks: int,
    ray_provisioner: Provisioner,
    request: pytest.FixtureRequest,
) -> None:
    """Every node runs work sent from outside, through the forwarded client port.

    The book's localPython.py: a driver outside the cluster, on Ray Client.
    """
    source = spread_source(ray_spread_iterations, ray_spread_tasks, ray_spec.timeouts.job)
    run = ray_run_script(source, ray_client_address)
    assert run.returncode == 0, run.explain()
    check_spread(
        parse_result(run.stdout),
        ray_cluster,
        "outside",
        request.node.user_properties,
        headroom(ray_provisioner),
    )


@pytest.mark.ray_certification
def test_spread_from_inside_every_node_runs_work(
    ray_cluster: ClusterHandle,
    ray_spec: ClusterSpec,
    ray_run_in_cluster: Any,
    ray_alive_nodes: list[dict[str, Any]],
    ray_spread_iterations: int,
    ray_spread_tasks: int,
    ray_provisioner: Provisioner,
    request: pytest.FixtureRequest,
) -> None:
    """Every node runs work sent from inside the cluster.

    The book's servicePython.py: the same counter, run against the head's in-cluster address.
    """
    output = ray_run_in_cluster(
        spread_source(ray_spread_iterations, ray_spread_tasks, ray_spec.timeouts.job)
    )
    check_spread(
        parse_result(output),
        ray_cluster,
        "inside",
        request.node.user_properties,
        headroom(ray_provisioner),
    )


def check_together(results: list[dict[str, Any]], sessions: int, address: str) -> None:
    """Every session saw all ``sessions`` connected at its barrier: they were open side by side."""
    apart = [
        f"session {i + 1} saw {r['barrier']['connected']} connected after "
        f"{r['barrier']['waited_s']:.1f} s"
        for i, r in enumerate(results)
        if r["barrier"]["connected"] < sessions
    ]
    assert not apart, (
        f"the {sessions} sessions were never all connected at once through {address}: "
        + "; ".join(apart)
    )


def test_spread_client_sessions_at_once_all_run_the_counter(
    ray_cluster: ClusterHandle,
    ray_spec: ClusterSpec,
    ray_client_address: str,
    ray_alive_nodes: list[dict[str, Any]],
    ray_run_script: Any,
    ray_spread_iterations: int,
    ray_spread_tasks: int,
    ray_provisioner: Provisioner,
    ray_client_sessions: int,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Ray Client sessions opened at once through the same forward all run the counter.

    The sessions start a second apart, and each waits until every one is connected before it
    sends work, so they are open side by side. They share the --ray-spread-tasks load; its
    throughput is all their SPREAD tasks over the time from the first one's start to the last
    one's end.
    """
    sessions = ray_client_sessions
    share = max(1, ray_spread_tasks // sessions)
    job = ray_spec.timeouts.job
    barrier_s = job * BARRIER_SHARE
    source = spread_source(ray_spread_iterations, share, job, barrier_s)
    barrier = tmp_path / "connected"
    barrier.mkdir()
    argvs = [[ray_client_address, str(barrier), str(sessions), str(i)] for i in range(sessions)]
    runs = ray_run_script.at_once(source, argvs, timeout=job + barrier_s, stagger=SESSION_STAGGER_S)
    failed = [f"session {i + 1}: {run.explain()}" for i, run in enumerate(runs) if run.returncode]
    assert not failed, (
        f"{len(failed)} of {sessions} Ray Client sessions at once through "
        f"{ray_client_address} failed:\n" + "\n".join(failed)
    )
    results = [parse_result(run.stdout) for run in runs]
    check_together(results, sessions, ray_client_address)
    loads = [r["load"] for r in results]
    span = max(x["end"] for x in loads) - min(x["start"] for x in loads)
    done = sum(x["done"] for x in loads)
    request.node.user_properties.append(
        (
            "sessions_load",
            {
                "sessions": sessions,
                "tasks": sessions * share,
                "done": done,
                "seconds": round(span, 3),
                "tasks_per_s": round(done / span, 1) if span > 0 else 0.0,
            },
        )
    )
    for i, result in enumerate(results):
        check_spread(result, ray_cluster, f"session {i + 1}", [], headroom(ray_provisioner))
