"""Dashboard: its API tells the truth about version, nodes and jobs."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from fixtures.nodes import NodeVersions, differing
from provisioners.contract.base import ClusterHandle, ClusterSpec
from provisioners.util.waits import WaitTimeout, wait_for, wait_for_nodes

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification


def test_dashboard_version_matches_cluster(
    ray_cluster: ClusterHandle,
    ray_cluster_version: str,
    ray_node_versions: list[NodeVersions],
) -> None:
    """The dashboard's /api/version is the Ray every node runs (read on each node)."""
    other = differing(ray_node_versions, ray_cluster_version, "ray")
    assert not other, f"/api/version says Ray {ray_cluster_version}, but " + "; ".join(other)
    claimed = differing(ray_node_versions, ray_cluster.ray_version, "ray")
    assert not claimed, (
        f"the mode says the cluster runs Ray {ray_cluster.ray_version}, but " + "; ".join(claimed)
    )


def test_dashboard_nodes_match_expected(
    ray_cluster: ClusterHandle,
    ray_dashboard_url: str,
    ray_alive_nodes: list[dict[str, Any]],
    ray_spec: ClusterSpec,
) -> None:
    """The dashboard's own node list (what a person sees) converges on the alive nodes."""
    try:
        nodes = wait_for_nodes(
            ray_dashboard_url,
            ray_cluster.expected_nodes,
            timeout=ray_spec.timeouts.node_join,
            view="summary",
        )
    except WaitTimeout as exc:
        pytest.fail(
            f"the dashboard's node list never showed the cluster's nodes: {exc}", pytrace=False
        )
    listed = ", ".join(f"{n['hostname']}/{n['ip']}" for n in nodes)
    assert len({n["node_id"] for n in nodes}) == len(nodes), (
        f"duplicate node ids in the dashboard's node list: {listed}"
    )
    assert {n["node_id"] for n in nodes} == {n["node_id"] for n in ray_alive_nodes}, (
        f"the dashboard lists {listed}; the GCS has {[n['node_id'][:12] for n in ray_alive_nodes]}"
    )


def test_dashboard_job_succeeds_with_logs(ray_dashboard_url: str, ray_spec: ClusterSpec) -> None:
    """A job submitted through the dashboard succeeds and its logs hold its output."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    token = f"rc-job-{secrets.token_hex(4)}"
    client = JobSubmissionClient(ray_dashboard_url)
    job_id = client.submit_job(
        entrypoint=f"python -c \"import ray; ray.init(); print('{token}', ray.get(ray.remote(num_cpus=0)(lambda: 21 * 2).remote()))\"",
        metadata={"ray-conformance.run-id": ray_spec.run_id},
    )

    def finished() -> JobStatus | None:
        status = client.get_job_status(job_id)
        return status if status.is_terminal() else None

    try:
        status = wait_for(
            finished,
            timeout=ray_spec.timeouts.job,
            what=f"job {job_id} to finish",
            last_seen=lambda: str(client.get_job_status(job_id)),
        )
    except WaitTimeout as exc:
        client.stop_job(job_id)  # a job left running would outlive the check
        pytest.fail(
            f"{exc}; stopped it. Logs:\n{client.get_job_logs(job_id)[-2000:]}", pytrace=False
        )
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {job_id} ended {status}; logs:\n{logs[-2000:]}"
    assert f"{token} 42" in logs, (
        f"job {job_id} succeeded but its logs lack '{token} 42':\n{logs[-2000:]}"
    )
