"""Mode ``external``: a cluster someone else runs, given by ``--ray-address``.

Nothing is created, so teardown deletes nothing and the leak check is skipped with that reason.
Scripts "inside the cluster" are submitted as Ray jobs: they run on the head, where Ray itself
sets RAY_ADDRESS, exactly like a user's in-cluster job.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    NightlyRun,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.util.relay import tcp_relay
from provisioners.util.waits import WaitTimeout, http_json, port_accepts, wait_for

ADDRESS = Option.string(
    "address", "external: the cluster to test, ray://HOST:PORT (Ray Client) or HOST:PORT (GCS)"
)
DASHBOARD_URL = Option.string(
    "dashboard-url", "external: the cluster's dashboard (default: http://HOST:8265)"
)
EXPECT_NODES = Option.integer(
    "expect-nodes",
    "external: how many alive nodes the cluster must have (default: every node it has known, "
    "alive or dead, so a dead one is reported)",
    minimum=1,
)


def parse_address(address: str) -> tuple[str, int, int | None]:
    """``ray://H:P`` -> (H, client P, None); ``H:P`` (GCS) -> (H, 10001, P)."""
    text = address.strip()
    if text.startswith("ray://"):
        text = text[len("ray://") :]
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ProvisionError(f"{ADDRESS.flag} {address!r} is not ray://HOST:PORT")
        return host, int(port), None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ProvisionError(f"{ADDRESS.flag} {address!r} is neither ray://HOST:PORT nor HOST:PORT")
    return host, CLIENT_PORT, int(port)


class ExternalProvisioner:
    """Suites against a running cluster; the harness never changes or removes it."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (ADDRESS, DASHBOARD_URL, EXPECT_NODES)
    NIGHTLY: ClassVar[tuple[NightlyRun, ...]] = (NightlyRun("secrets"),)

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._host = ""
        self._client_port = CLIENT_PORT
        self._dashboard = ""

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        if not spec.get(ADDRESS):
            return [
                f"no cluster given ({ADDRESS.flag} ray://HOST:10001 or HOST:6379, "
                f"with {DASHBOARD_URL.flag} and {EXPECT_NODES.flag} as needed)"
            ]
        return []

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        address = spec.get(ADDRESS)
        if not address:
            raise ProvisionError(self.missing_prerequisites(spec)[0])
        self._host, self._client_port, gcs_port = parse_address(address)
        dashboard = spec.get(DASHBOARD_URL) or f"http://{self._host}:{DASHBOARD_PORT}"
        self._dashboard = dashboard.rstrip("/")
        bound = spec.timeouts.preflight
        try:
            wait_for(
                lambda: port_accepts(self._host, self._client_port),
                timeout=bound,
                what=f"the Ray Client port at {self._host}:{self._client_port} "
                f"({ADDRESS.flag} {address})",
            )
            version = wait_for(
                lambda: http_json(f"{self._dashboard}/api/version", timeout=min(5.0, bound)),
                timeout=bound,
                what=f"the dashboard at {self._dashboard}/api/version ({DASHBOARD_URL.flag})",
            )
        except WaitTimeout as exc:
            raise ProvisionError(str(exc)) from None
        known = self._known_nodes()
        alive = [n for n in known if n.get("state") == "ALIVE"]
        dead = [n for n in known if n.get("state") != "ALIVE"]
        expect = spec.get(EXPECT_NODES)
        # Without a count, every node the GCS has known: one already dead at start is then
        # reported by the node checks (naming it), never silently expected away.
        expected = expect or len(known)
        spec.progress(
            f"found Ray {version['ray_version']} with {len(alive)} alive node(s) at {address}"
            + (f" and {len(dead)} dead" if dead else "")
            + (
                ""
                if expect
                else f" (no {EXPECT_NODES.flag}: expecting all {len(known)} the cluster has known)"
            )
        )
        # Read by a job on the head, with the cluster's own interpreter: /api/version is the
        # dashboard's word, which the dashboard check compares with the nodes'.
        ray_version, python = self._versions(spec)
        head = f"{self._host}:{gcs_port}" if gcs_port else f"ray://{self._host}:{self._client_port}"
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=expected,
            ray_version=ray_version,
            python_version=python,
            head_address=head,
            access={
                "ray client": f"ray://{self._host}:{self._client_port}",
                "dashboard": self._dashboard,
            },
            owned=False,
        )

    def _known_nodes(self) -> list[dict[str, Any]]:
        """Every node the state API lists, alive and dead."""
        try:
            data = http_json(f"{self._dashboard}/api/v0/nodes?limit=10000", timeout=10)
            nodes: list[dict[str, Any]] = data["data"]["result"]["result"]
        except Exception as exc:  # the dashboard answered /api/version: say what it did here
            raise ProvisionError(
                f"cannot list the nodes at {self._dashboard}/api/v0/nodes: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return nodes

    def _versions(self, spec: ClusterSpec) -> tuple[str, str]:
        out = self.run_in_cluster(
            'import sys, ray; print("VERSIONS", ray.__version__, "%d.%d" % sys.version_info[:2])',
            timeout=spec.timeouts.job,
        )
        for line in out.splitlines():
            if line.startswith("VERSIONS "):
                _, ray_version, python = line.split()
                return ray_version, python
        raise ProvisionError(f"could not read the cluster's Ray and Python versions:\n{out[-500:]}")

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        if remote_port == CLIENT_PORT:
            return tcp_relay(self._host, self._client_port)
        if remote_port == DASHBOARD_PORT:
            parts = urlsplit(self._dashboard)
            return tcp_relay(parts.hostname or self._host, parts.port or 80)
        raise ValueError(f"no forward for port {remote_port}")

    def run_in_cluster(self, script: str, timeout: float) -> str:
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(self._dashboard)
        encoded = base64.b64encode(script.encode()).decode()
        job_id = client.submit_job(
            entrypoint=f"python -c \"import base64; exec(base64.b64decode('{encoded}'))\"",
            metadata={"ray-conformance.run-id": self._spec.run_id if self._spec else ""},
        )
        try:
            status = wait_for(
                lambda: _terminal(client.get_job_status(job_id)),
                timeout=timeout,
                what=f"job {job_id} at {self._dashboard} to finish",
            )
        except WaitTimeout:
            # Someone else's cluster: never leave our script running on it.
            with contextlib.suppress(Exception):
                client.stop_job(job_id)
            raise
        logs = str(client.get_job_logs(job_id))
        if status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"job {job_id} ended {status}:\n{logs[-3000:]}")
        return logs

    def inventory(self) -> list[InventoryItem]:
        return []  # nothing here was created by this run

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            (dest / "nodes.json").write_text(
                json.dumps(http_json(f"{self._dashboard}/nodes?view=summary"), indent=2)
            )

    def teardown(self) -> None:
        """Nothing to remove: the cluster belongs to someone else."""


def _terminal(status: Any) -> Any:
    """The job's status once it is final (SUCCEEDED, FAILED, STOPPED), else None."""
    return status if status.is_terminal() else None
