"""Cluster launcher: the commands the book prints (``ray exec``, monitor log, ssh) work, and
``setup_commands`` reached every node."""

from __future__ import annotations

import json
import re

import pytest

from provisioners.contract.base import ClusterHandle, ClusterSpec, Provisioner, SupportsLauncher

# The monitor-log command the book prints, run non-interactively through `ray exec`.
MONITOR_LOG = "tail -n 100 /tmp/ray/session_latest/logs/monitor*"

PER_NODE_IMPORT = """
import json, importlib, socket
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

MODULES = {modules}
ray.init(logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0)
def probe():
    found = {{}}
    for name in MODULES:
        try:
            importlib.import_module(name)
            found[name] = "ok"
        except Exception as e:  # report, do not crash: the test names the node and module
            found[name] = f"{{type(e).__name__}}: {{e}}"
    return socket.gethostname(), found

nodes = [n for n in ray.nodes() if n["Alive"]]
refs = {{
    n["NodeID"]: probe.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
    ).remote()
    for n in nodes
}}
print("RESULT " + json.dumps({{nid: ray.get(ref, timeout=120) for nid, ref in refs.items()}}))
"""


def _launcher(provisioner: Provisioner, cluster: ClusterHandle) -> SupportsLauncher:
    if not isinstance(provisioner, SupportsLauncher):
        pytest.skip(f"{cluster.mode}: not driven by Ray's cluster launcher")
    return provisioner


def active_nodes(status: str) -> int | None:
    """Sum the node counts under ``Active:`` and ``Idle:`` in ``ray status`` output (None if
    neither is there): autoscaler v1 lists a running node as active, v2 as idle until it works."""
    sections = re.findall(r"^(?:Active|Idle):\s*\n(.*?)(?=^\S)", status, flags=re.M | re.S)
    if not sections:
        return None
    return sum(int(n) for body in sections for n in re.findall(r"^\s+(\d+)\s+\S", body, flags=re.M))


def test_launcher_exec_status_shows_every_node(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """`ray exec ... 'ray status'` shows every node of the cluster."""
    launcher = _launcher(ray_provisioner, ray_cluster)
    out = launcher.launcher_exec("ray status", timeout=ray_spec.timeouts.job)
    active = active_nodes(out)
    assert active == ray_cluster.expected_nodes, (
        f"`ray exec {launcher.cluster_config()} 'ray status'` shows {active} active or idle node(s), "
        f"expected {ray_cluster.expected_nodes}; output:\n{out[-2000:]}"
    )


def test_launcher_monitor_log_shows_autoscaler_lines(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """The head's monitor log shows the autoscaler at work."""
    launcher = _launcher(ray_provisioner, ray_cluster)
    out = launcher.launcher_exec(MONITOR_LOG, timeout=ray_spec.timeouts.job)
    lines = re.findall(r"^.*\b(?:autoscaler|monitor)\.py:\d+.*$", out, flags=re.M)
    assert lines, f"`{MONITOR_LOG}` shows no autoscaler log lines; output:\n{out[-2000:]}"


def test_launcher_head_ssh_runs_commands(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle
) -> None:
    """Plain ssh to the head runs commands and finds Ray there."""
    launcher = _launcher(ray_provisioner, ray_cluster)
    out = launcher.head_ssh("python -c 'import ray; print(\"RAY\", ray.__version__)'", timeout=60)
    assert f"RAY {ray_cluster.ray_version}" in out, (
        f"plain ssh to the head did not report Ray {ray_cluster.ray_version}:\n{out[-2000:]}"
    )


def test_launcher_setup_package_imports_on_every_node(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """Every package setup_commands installs imports on every node."""
    launcher = _launcher(ray_provisioner, ray_cluster)
    modules = launcher.setup_packages()
    if not modules:
        pytest.skip(f"{ray_cluster.mode}: setup_commands install no package to look for")
    script = PER_NODE_IMPORT.format(modules=json.dumps(modules))
    out = ray_provisioner.run_in_cluster(script, timeout=ray_spec.timeouts.job)
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"the per-node import script printed no RESULT line:\n{out[-2000:]}"
    result: dict[str, tuple[str, dict[str, str]]] = json.loads(lines[-1][len("RESULT ") :])
    assert len(result) == ray_cluster.expected_nodes, (
        f"{len(result)} node(s) probed, expected {ray_cluster.expected_nodes}: {result}"
    )
    broken = {
        f"{host} ({nid[:12]})": {m: why for m, why in found.items() if why != "ok"}
        for nid, (host, found) in result.items()
        if any(why != "ok" for why in found.values())
    }
    assert not broken, f"setup_commands package(s) {modules} missing on: {broken}"
