"""Head loss: the head taken away without warning; an operator brings the cluster back, else every
later check fails fast naming the dead head.

Opt-in (``--ray-head-loss``) and never in a certification run: it breaks the mode's cluster on
purpose, after every other check of the mode (disruptive ones included) and before teardown.
Where the platform recovers the head (an operator's reconcile), the check waits, within a bound
it names, for a new head, the expected workers alive again and the spread counter passing: the
workers that never rejoin a restarted head (KubeRay #1141, #104) fail here, named. Elsewhere
nothing brings a head back, and what matters is how the harness says so: each check after the
kill fails within the preflight timeout naming the dead head, and the teardown is still clean.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fixtures.cluster import ClusterSession, HeadLoss
from provisioners.contract.base import DASHBOARD_PORT, ClusterHandle, ClusterSpec, Provisioner
from provisioners.util.waits import WaitTimeout, http_json, wait_for
from suites.test_spread import check_spread, headroom, parse_result, spread_source

pytestmark = pytest.mark.ray_head_loss

#: How long a platform may take to bring the head and its workers back, in node timeouts:
#: the new head starts as a node does, then each worker notices the old head gone (Ray's GCS
#: reconnect timeout, 60 s by default) and rejoins as a node does.
RECOVERY_NODE_TIMEOUTS = 2.0


def _head_and_alive(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alive head nodes, alive nodes) as the state API lists them."""
    data = http_json(f"{url}/api/v0/nodes?limit=10000&detail=true", timeout=5)
    nodes = data["data"]["result"]["result"]
    alive = [n for n in nodes if n.get("state") == "ALIVE"]
    return [n for n in alive if n.get("is_head_node")], alive


@pytest.fixture(scope="module")
def killed_head(
    ray_cluster_session: ClusterSession,
    ray_cluster: ClusterHandle,
    ray_provisioner: Provisioner,
) -> dict[str, Any]:
    """Kill the mode's head once; the head node Ray listed before, and the loss."""
    ray_cluster_session.require_head()
    heads: list[dict[str, Any]] = []
    if ray_cluster_session.head_lost is None:
        with ray_provisioner.port_forward(DASHBOARD_PORT) as endpoint:
            heads, _ = _head_and_alive(f"http://{endpoint.address}")
    loss = ray_cluster_session.kill_head()
    return {"loss": loss, "head": heads[0] if heads else {}}


def test_head_loss_cluster_recovers(
    killed_head: dict[str, Any],
    ray_cluster_session: ClusterSession,
    ray_cluster: ClusterHandle,
    ray_provisioner: Provisioner,
    ray_spec: ClusterSpec,
    ray_run_in_cluster: Any,
    ray_spread_iterations: int,
    ray_spread_tasks: int,
    request: pytest.FixtureRequest,
) -> None:
    """After the head is killed, a new head and every worker come back and the counter passes."""
    loss: HeadLoss = killed_head["loss"]
    if not loss.recovers:
        pytest.skip(f"{ray_cluster.mode}: nothing brings a lost head back here (no operator)")
    old = str(killed_head["head"].get("node_id", ""))
    # Nodes an autoscaler added (for an earlier check's load, or for this one's) may be alive too.
    extra = headroom(ray_provisioner)
    bound = RECOVERY_NODE_TIMEOUTS * ray_spec.timeouts.node_join
    seen = ["the dashboard never answered"]

    def recovered() -> bool:
        # A new forward each time: the old one went with the old head's pod.
        try:
            with ray_provisioner.port_forward(DASHBOARD_PORT) as endpoint:
                heads, alive = _head_and_alive(f"http://{endpoint.address}")
        except Exception as exc:  # the head is not back yet: say what answered last
            seen[0] = f"the dashboard does not answer yet ({type(exc).__name__}: {exc})"
            return False
        new = [h for h in heads if h.get("node_id") != old]
        workers = len(alive) - len(heads)
        seen[0] = (
            f"head: {'new ' + str(new[0]['node_id'])[:12] + ' at ' + str(new[0].get('node_ip')) if new else 'no new head node'}; "
            f"workers alive: {workers} of {ray_cluster.expected_nodes - 1} ("
            + ", ".join(
                f"{str(n['node_id'])[:12]} at {n.get('node_ip')}"
                for n in alive
                if not n.get("is_head_node")
            )
            + ")"
        )
        return bool(new) and 0 <= len(alive) - ray_cluster.expected_nodes <= extra

    t0 = time.monotonic()
    try:
        wait_for(
            recovered,
            timeout=bound,
            what=(
                f"{ray_cluster.mode} to recover from {loss.describe()}: a new head and "
                f"{ray_cluster.expected_nodes - 1} worker(s) alive, within {bound:.0f} s "
                f"({RECOVERY_NODE_TIMEOUTS:g} x --ray-node-timeout)"
            ),
            interval=3.0,
            last_seen=lambda: seen[0],
        )
    except WaitTimeout as exc:
        pytest.fail(str(exc), pytrace=False)
    request.node.user_properties.append(("head_loss_recovery_s", round(time.monotonic() - t0, 1)))
    output = ray_run_in_cluster(
        spread_source(ray_spread_iterations, ray_spread_tasks, ray_spec.timeouts.job)
    )
    properties = request.node.user_properties
    check_spread(parse_result(output), ray_cluster, "after-head-loss", properties, extra)


def test_head_loss_later_checks_fail_fast_naming_the_head(
    killed_head: dict[str, Any],
    ray_cluster_session: ClusterSession,
    ray_cluster: ClusterHandle,
    ray_spec: ClusterSpec,
) -> None:
    """Where nothing brings the head back, a check after the kill fails within the preflight
    timeout, naming the dead head."""
    loss: HeadLoss = killed_head["loss"]
    if loss.recovers:
        pytest.skip(f"{ray_cluster.mode}: the platform brings a new head (see the recovery check)")
    t0 = time.monotonic()
    try:
        ray_cluster_session.require_head()
    except pytest.fail.Exception as exc:
        message = str(exc)
    else:
        pytest.fail(
            f"{ray_cluster.mode}: {loss.describe()}, yet its dashboard still answers: the kill "
            "did not take the head away",
            pytrace=False,
        )
    took = time.monotonic() - t0
    slack = 5.0  # a forward's own start-up beyond the probe's bound
    assert took <= ray_spec.timeouts.preflight + slack, (
        f"the check after the head loss took {took:.1f} s to fail (preflight timeout "
        f"{ray_spec.timeouts.preflight:g} s): {message}"
    )
    assert f"the head at {loss.ip} was killed" in message, (
        f"the failure after the head loss does not name the dead head at {loss.ip}: {message}"
    )
