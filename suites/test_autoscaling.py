"""Autoscaling: queued work brings new workers, they run it, and they go away once idle.

One scenario runs once per module (queue work, watch nodes come, tally the work, watch them
go); each test checks one part of what it saw, so a failure names the phase that broke.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fixtures.clients import in_cluster
from provisioners.contract.base import (
    AutoscalingLimits,
    ClusterHandle,
    ClusterSpec,
    Provisioner,
    SupportsAutoscaling,
    SupportsPendingNodes,
)
from provisioners.util.waits import WaitTimeout, wait_for

TASK_SECONDS = 6.0

SCENARIO = """
import json, threading, time
import ray

limits = json.loads(LIMITS)
ray.init(logging_level="ERROR", log_to_driver=False)

def alive():
    return sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

t0 = time.monotonic()
baseline = alive()
timeline = []  # (seconds, alive count) at every change
stop = threading.Event()

def watch():
    last = None
    while not stop.is_set():
        try:
            count = len(alive())
        except Exception:
            count = -1
        if count != last:
            timeline.append([round(time.monotonic() - t0, 1), count])
            last = count
        time.sleep(0.5)

threading.Thread(target=watch, daemon=True).start()

@ray.remote(
    num_cpus=limits["cpus_per_worker"],
    resources={limits["resource"]: 1} if limits["resource"] else None,
)
def work(seconds):
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()

# Work only new workers hold (more CPUs than the head has, or the autoscaled workers' own
# resource): twice what max_workers can hold at once, so every new worker that arrives while
# work is queued gets some.
count = max(2, 2 * int(limits["max_workers"]))
queued = time.monotonic()
refs = [work.remote(TASK_SECONDS) for _ in range(count)]
first_new = None
while first_new is None and time.monotonic() - queued < limits["scale_up_timeout_s"]:
    if set(alive()) - set(baseline):
        first_new = round(time.monotonic() - queued, 1)
    else:
        time.sleep(0.5)
tally = {}
done = None
if first_new is not None:
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=limits["scale_up_timeout_s"] + count * TASK_SECONDS)
    for node in ray.get(ready):
        tally[node] = tally.get(node, 0) + 1
    done = round(time.monotonic() - queued, 1) if len(ready) == len(refs) else None
peak = max([c for _, c in timeline] + [len(baseline)])
gone = None
if done is not None:
    ended = time.monotonic()
    while time.monotonic() - ended < limits["scale_down_timeout_s"]:
        if len(alive()) <= len(baseline):
            gone = round(time.monotonic() - ended, 1)
            break
        time.sleep(1)
stop.set()
print("RESULT " + json.dumps({
    "baseline": baseline, "tasks": count, "first_new_s": first_new, "done_s": done,
    "peak": peak, "tally": tally, "scale_down_s": gone, "timeline": timeline,
    "alive_at_end": len(alive()),
}))
"""


def _scenario_source(limits: AutoscalingLimits) -> str:
    payload = {
        "max_workers": limits.max_workers,
        "cpus_per_worker": limits.cpus_per_worker,
        "scale_up_timeout_s": limits.scale_up_timeout_s,
        "scale_down_timeout_s": limits.scale_down_timeout_s,
        "resource": limits.resource,
    }
    return f"LIMITS = {json.dumps(json.dumps(payload))}\nTASK_SECONDS = {TASK_SECONDS}\n" + SCENARIO


@pytest.fixture(scope="module")
def scenario(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> dict[str, Any]:
    """What one scale-up / work / scale-down round saw, from inside the cluster."""
    if not isinstance(ray_provisioner, SupportsAutoscaling):
        pytest.skip(f"{ray_cluster.mode}: the cluster does not autoscale")
    limits = ray_provisioner.autoscaling_limits()
    if limits is None:
        pytest.skip(f"{ray_cluster.mode}: this run's cluster has no autoscaler")
    budget = (
        limits.scale_up_timeout_s * 2
        + limits.scale_down_timeout_s
        + 2 * limits.max_workers * TASK_SECONDS
        + 120
    )
    # Module-scoped (one round for every check), so the retries are recorded by the first check.
    retried: list[str] = []
    output = in_cluster(ray_provisioner, _scenario_source(limits), budget, retried)
    for line in reversed(output.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["limits"] = limits
            result["known_flake_retries"] = retried
            return result
    raise AssertionError(f"the autoscaling scenario printed no RESULT line:\n{output[-3000:]}")


def _seen(result: dict[str, Any]) -> str:
    timeline = ", ".join(f"{n} at {t}s" for t, n in result["timeline"])
    return f"nodes alive over time: {timeline}; tally by node: {result['tally']}"


def _asks(limits: AutoscalingLimits) -> str:
    if limits.resource:
        return f"{limits.cpus_per_worker} CPU and 1 {limits.resource!r} (only new workers have it)"
    return f"{limits.cpus_per_worker} CPU (head has {limits.head_cpus})"


def test_autoscaling_adds_workers_for_queued_work(
    scenario: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """Work queued beyond the head's CPUs brings new workers, no more than max_workers."""
    limits: AutoscalingLimits = scenario["limits"]
    if scenario["known_flake_retries"]:
        request.node.user_properties.append(
            ("known_flake_retries", scenario["known_flake_retries"])
        )
    request.node.user_properties.append(("autoscale_first_new_node_s", scenario["first_new_s"]))
    request.node.user_properties.append(("autoscale_nodes_timeline", scenario["timeline"]))
    baseline = len(scenario["baseline"])
    assert scenario["first_new_s"] is not None, (
        f"no new node within {limits.scale_up_timeout_s:.0f}s of queueing {scenario['tasks']} "
        f"tasks of {_asks(limits)}; " + _seen(scenario)
    )
    assert baseline < scenario["peak"] <= baseline + limits.max_workers, (
        f"peak of {scenario['peak']} alive nodes, expected between {baseline + 1} and "
        f"{baseline + limits.max_workers}; " + _seen(scenario)
    )


def test_autoscaling_new_workers_run_the_work(scenario: dict[str, Any]) -> None:
    """The queued tasks all finish, some of them on the new workers."""
    if scenario["first_new_s"] is None:
        pytest.fail("no worker was added, so none could run work; " + _seen(scenario))
    assert scenario["done_s"] is not None, f"not all {scenario['tasks']} tasks finished; " + _seen(
        scenario
    )
    new_nodes = set(scenario["tally"]) - set(scenario["baseline"])
    assert new_nodes, "every task ran on a node that was there before; " + _seen(scenario)
    on_new = sum(scenario["tally"][n] for n in new_nodes)
    limits: AutoscalingLimits = scenario["limits"]
    if limits.resource or limits.head_cpus < limits.cpus_per_worker:
        lack = f"resource {limits.resource!r}" if limits.resource else "CPUs"
        assert on_new == scenario["tasks"], (
            f"{scenario['tasks'] - on_new} task(s) ran on old nodes that lack the {lack}; "
            + _seen(scenario)
        )


def test_autoscaling_removes_idle_workers(
    scenario: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """Once the work is done, the idle workers are removed."""
    limits: AutoscalingLimits = scenario["limits"]
    request.node.user_properties.append(("autoscale_scale_down_s", scenario["scale_down_s"]))
    if scenario["done_s"] is None:
        pytest.fail("the work never finished, so scale-down was not observed; " + _seen(scenario))
    assert scenario["scale_down_s"] is not None, (
        f"{scenario['alive_at_end']} node(s) still alive {limits.scale_down_timeout_s:.0f}s "
        f"after the work ended (idle timeout {limits.idle_timeout_s:.0f}s, "
        f"{len(scenario['baseline'])} at rest); " + _seen(scenario)
    )


def test_autoscaling_leaves_nothing_pending(
    scenario: dict[str, Any], ray_provisioner: Provisioner, ray_spec: ClusterSpec
) -> None:
    """Once the idle workers are gone, no machine the autoscaler asked for is left pending."""
    if not isinstance(ray_provisioner, SupportsPendingNodes):
        pytest.skip(
            "this mode cannot list machines that never became nodes (no SupportsPendingNodes)"
        )
    if scenario["scale_down_s"] is None:
        pytest.fail(
            "scale-down was not observed, so what is left pending was not either; "
            + _seen(scenario)
        )
    left: list[list[str]] = [[]]

    def none_pending() -> bool:
        left[0] = ray_provisioner.pending_nodes()
        return not left[0]

    try:
        wait_for(
            none_pending,
            timeout=ray_spec.timeouts.preflight,
            what="no machine the autoscaler asked for left pending",
            interval=1.0,
            last_seen=lambda: "; ".join(left[0]),
        )
    except WaitTimeout as exc:
        pytest.fail(f"{exc}; " + _seen(scenario), pytrace=False)
