"""Mode ``local``: a Ray cluster of processes on this machine (``ray start`` head + workers).

Every node is a ``ray start --block`` child in its own process group, with a per-run
``--temp-dir`` and kernel-picked ports, so it never collides with a Ray the user already runs
and teardown can stop exactly what this run started (``ray stop`` would kill every Ray here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import psutil

from provisioners import runstate
from provisioners.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryError,
    InventoryItem,
    ProvisionError,
    listing,
)
from provisioners.options import Option
from provisioners.processes import (
    env_with_interpreter_first,
    interpreter_versions,
    kill_all,
    node_interpreter,
    ray_cli,
    run_processes,
)
from provisioners.relay import free_port, tcp_relay
from provisioners.runner import Background, Started, run_full, tail_file
from provisioners.waits import WaitTimeout, urlopen_ok, wait_for, wait_for_nodes

LOCAL_WORKERS = 1  # one machine: a head and one worker process
#: Small on purpose: several nodes share this machine's /dev/shm, and the suites move little data.
OBJECT_STORE_BYTES = 256 * 1024**2
#: How long `ray start --block` may drain its node after SIGTERM before its group is killed.
_STOP_GRACE_S = 8.0


class LocalProvisioner:
    """Head and ``--ray-workers`` nodes as local processes; the nodes share one hostname."""

    #: Nothing to set: ports are the kernel's pick and the temp dir is the run's.
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = ()

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._nodes: Background | None = None
        self._procs: list[Started] = []  # `ray start --block` of each node, head first
        self._temp_dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._shm_before: set[str] = set()
        self._dashboard_url = ""
        self._python = ""  # the nodes' interpreter: in-cluster scripts run with it
        self._held = False  # this provision holds the run (runstate)

    # -- contract ----------------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        if ray_cli() is None:
            return ["local: the `ray` command is not installed (pip install 'ray[default]')"]
        return []

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        runstate.hold(spec.run_id)
        self._held = True
        self._nodes = Background(
            spec.run_id,
            spec.workdir,
            {**env_with_interpreter_first(), **runstate.run_env(spec.run_id, spec.mode)},
        )
        workers = spec.worker_count(LOCAL_WORKERS)
        # Short path: Ray puts unix sockets under it (108-byte limit).
        self._temp_dir = Path(f"/tmp/rc-{spec.run_id}")
        runstate.note(
            spec.run_id, spec.mode, "path", path=str(self._temp_dir), what="Ray's temp dir"
        )
        runstate.note(spec.run_id, spec.mode, "process-marker", marker=str(self._temp_dir))
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        self._shm_before = _shm_entries()
        self._ports = {"gcs": free_port(), "dashboard": free_port(), "client": free_port()}
        self._dashboard_url = f"http://127.0.0.1:{self._ports['dashboard']}"
        t0 = time.monotonic()
        self._start_node(
            "head",
            [
                "--head",
                f"--port={self._ports['gcs']}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self._ports['dashboard']}",
                f"--ray-client-server-port={self._ports['client']}",
            ],
        )
        self._wait(
            lambda: urlopen_ok(f"{self._dashboard_url}/api/version"),
            f"the head's dashboard at {self._dashboard_url}",
        )
        self._wait_nodes(1)
        spec.progress(f"head up in {time.monotonic() - t0:.1f} s")
        for i in range(1, workers + 1):
            self._start_node(f"worker{i}", [f"--address=127.0.0.1:{self._ports['gcs']}"])
        if workers:

            def joined(alive: int) -> None:
                if alive > 1:  # the head alone was reported above
                    spec.progress(f"worker {alive - 1}/{workers} joined")

            self._wait_nodes(1 + workers, on_change=joined)
        spec.progress(f"{1 + workers} node(s) alive in {time.monotonic() - t0:.1f} s")
        gcs = f"127.0.0.1:{self._ports['gcs']}"
        # The nodes' interpreter (the head's `ray start`), asked: not the harness's own.
        self._python = node_interpreter(self._procs[0].pid)
        ray_version, python_version = interpreter_versions(self._python, spec.timeouts.job)
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=1 + workers,
            ray_version=ray_version,
            python_version=python_version,
            head_address=gcs,
            access={
                "RAY_ADDRESS": gcs,
                "ray client": f"ray://127.0.0.1:{self._ports['client']}",
                "dashboard": self._dashboard_url,
                "temp dir": str(self._temp_dir),
                # Every process of the run (by the RC_RUN_ID in its environment, workers Ray
                # moved out of the nodes' process groups too), then the temp dir.
                "remove": runstate.sweep_command(spec.run_id, spec.mode),
            },
        )

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        local = {CLIENT_PORT: "client", DASHBOARD_PORT: "dashboard"}.get(remote_port)
        if local is None or local not in self._ports:
            raise ValueError(
                f"local: no forward for port {remote_port} (known: {CLIENT_PORT}, {DASHBOARD_PORT})"
            )
        return tcp_relay("127.0.0.1", self._ports[local])

    def run_in_cluster(self, script: str, timeout: float) -> str:
        if self._spec is None:
            raise RuntimeError("local: run_in_cluster before provision")
        path = self._spec.workdir / f"in-cluster-{time.monotonic_ns()}.py"
        path.write_text(script)
        proc = run_full(
            [self._python or sys.executable, str(path)],
            timeout,
            what="local: in-cluster script",
            env={"RAY_ADDRESS": f"127.0.0.1:{self._ports['gcs']}"},
            merge=False,  # stdout is the script's answer; stderr only its noise
            check=False,  # the whole output, not runner's tail: tracebacks run long
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"local: in-cluster script exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def inventory(self) -> list[InventoryItem]:
        if self._spec is None:
            return []
        run_id = self._spec.run_id
        items = [
            InventoryItem("process", str(p.pid), run_id, " ".join(p.cmdline())[:120])
            for p in self._ray_processes()
        ]
        ours = {p.pid for p in self._ray_processes()}
        try:
            with listing("listening TCP ports"):
                connections = psutil.net_connections(kind="tcp")
        except InventoryError as exc:  # psutil.AccessDenied where sockets are private
            items.append(exc.item(run_id))
            connections = []
        items += [
            InventoryItem(
                "port", str(getattr(c.laddr, "port", "")), run_id, f"listening, pid {c.pid}"
            )
            for c in connections
            if c.status == psutil.CONN_LISTEN and c.pid in ours
        ]
        if self._temp_dir and self._temp_dir.exists():
            items.append(InventoryItem("session-dir", str(self._temp_dir), run_id))
        for name in sorted(_shm_entries() - self._shm_before):
            items.append(
                InventoryItem("shared-memory", f"/dev/shm/{name}", run_id, "created during the run")
            )
        return items

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if self._spec:
            for log in self._spec.workdir.glob("*.log"):
                shutil.copy2(log, dest / log.name)
        if self._temp_dir and (self._temp_dir / "session_latest" / "logs").is_dir():
            shutil.copytree(
                self._temp_dir / "session_latest" / "logs", dest / "ray-logs", dirs_exist_ok=True
            )

    def teardown(self) -> None:
        try:
            self._stop_nodes()
        finally:
            if self._held and self._spec is not None:
                self._held = False
                runstate.release(self._spec.run_id)

    def _stop_nodes(self) -> None:
        # Workers first, then the head. SIGTERM to `ray start --block` alone lets it drain and
        # stop its children itself (seconds); SIGTERM to its whole group kills the GCS under
        # the drain, and the rest then lingers for ~20 s.
        for node in reversed(self._procs):
            with contextlib.suppress(ProcessLookupError):
                node.popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(WaitTimeout):
            wait_for(
                lambda: all(node.exited() is not None for node in self._procs),
                timeout=_STOP_GRACE_S,
                what="local: nodes to drain",
                interval=0.05,
            )
        # Whatever survived (workers Ray re-parented, a hung raylet) is still ours by its
        # session dir or process group: kill exactly those, then reap the leaders.
        kill_all(self._ray_processes())
        if self._nodes is not None:
            self._nodes.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------

    def _start_node(self, name: str, args: list[str]) -> None:
        assert self._spec is not None
        assert self._temp_dir is not None
        ray = ray_cli()
        if ray is None:
            raise ProvisionError("local: the `ray` command is not installed")
        argv = [
            ray,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--temp-dir={self._temp_dir}",
            "--disable-usage-stats",
            # Kernel-picked ports so a Ray the user runs (defaults 52365, 8080, ...) never clashes.
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            *args,
        ]
        assert self._nodes is not None
        # Its own process group, output to <workdir>/<name>-<ns>.log; teardown reaps it.
        self._procs.append(self._nodes.spawn(argv, name))

    def _wait(self, probe: Callable[[], bool], what: str) -> None:
        assert self._spec is not None
        try:
            wait_for(
                probe, timeout=self._spec.timeouts.node_join, what=what, give_up=self._node_died
            )
        except WaitTimeout as exc:
            raise ProvisionError(f"local: {exc}") from None

    def _wait_nodes(self, n: int, on_change: Callable[[int], None] | None = None) -> None:
        assert self._spec is not None
        try:
            wait_for_nodes(
                self._dashboard_url,
                n,
                timeout=self._spec.timeouts.node_join,
                on_change=on_change,
                give_up=self._node_died,
            )
        except WaitTimeout as exc:
            raise ProvisionError(f"local: {exc}") from None

    def _node_died(self) -> str | None:
        """Which ``ray start`` exited (a node that can no longer join), with its log's tail."""
        for node in self._procs:
            code = node.exited()
            if code is not None:
                return (
                    f"local: {node.what} (`ray start`, pid {node.pid}) exited {code}; "
                    f"last lines of {node.log}:\n{tail_file(node.log, 8)}"
                )
        return None

    def kill_head(self) -> str:
        """SIGKILL the head's process group (its `ray start`, GCS, raylet and dashboard)."""
        if not self._procs:
            raise RuntimeError("local: no head process to kill")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._procs[0].pid, signal.SIGKILL)
        return "127.0.0.1"

    def recovers_head(self) -> bool:
        return False

    def _ray_processes(self) -> list[psutil.Process]:
        """Live processes of this run: in a process group we started, or using our temp dir."""
        return run_processes(
            (p.pid for p in self._procs), str(self._temp_dir) if self._temp_dir else None
        )


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()
