"""The node source of mode ``local``: a Ray cluster of processes on this machine (``ray start`` head + workers).

The ``ray start`` deployer (:mod:`provisioners.deployers.raystart`) on :class:`LocalHosts`: every node is
a ``ray start --block`` child in its own process group, with a per-run ``--temp-dir`` and
kernel-picked ports, so it never collides with a Ray the user already runs and teardown stops
exactly what this run started (``ray stop`` would kill every Ray here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psutil

from provisioners.contract.base import (
    ClusterSpec,
    InventoryError,
    InventoryItem,
    ProvisionError,
    listing,
)
from provisioners.contract.options import Option
from provisioners.deployers.raystart import RayNode
from provisioners.util import runstate
from provisioners.util.processes import (
    env_with_interpreter_first,
    interpreter_versions,
    kill_all,
    node_interpreter,
    ray_cli,
    run_processes,
)
from provisioners.util.relay import free_port
from provisioners.util.runner import Background, Completed, Started, run_full, tail_file

LOCAL_WORKERS = 1  # one machine: a head and one worker process
#: Small on purpose: several nodes share this machine's /dev/shm, and the suites move little data.
OBJECT_STORE_BYTES = 256 * 1024**2
LOOPBACK = "127.0.0.1"


@dataclass
class LocalNode:
    """A node's ``ray start --block``, leader of its own process group."""

    started: Started

    @property
    def what(self) -> str:
        return self.started.what

    @property
    def hostname(self) -> str:
        return ""  # every node has this machine's

    def ip(self) -> str:
        return LOOPBACK

    def exited(self) -> int | None:
        return self.started.exited()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.started.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.started.pid, signal.SIGKILL)

    def last_words(self) -> str:
        log = self.started.log
        return f"pid {self.started.pid}, last lines of {log}:\n{tail_file(log, 8)}"


class LocalHosts:
    """This machine as the nodes' host: processes on loopback, the nodes sharing one hostname."""

    #: Nothing to set: ports are the kernel's pick and the temp dir is the run's.
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = ()
    #: The head first: its start-up then has this machine's cores to itself.
    WORKERS_WITH_HEAD: ClassVar[bool] = False

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._background: Background | None = None
        self._nodes: list[LocalNode] = []
        self._temp_dir: Path | None = None
        self._shm_before: set[str] = set()
        self._python = ""  # the nodes' interpreter: in-cluster scripts run with it

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        if ray_cli() is None:
            return ["the `ray` command is not installed (pip install 'ray[default]')"]
        return []

    def open(self, spec: ClusterSpec) -> None:
        self._spec = spec
        self._background = Background(
            spec.run_id,
            spec.workdir,
            {**env_with_interpreter_first(), **runstate.run_env(spec.run_id, spec.mode)},
        )
        # Short path: Ray puts unix sockets under it (108-byte limit).
        self._temp_dir = Path(f"/tmp/rc-{spec.run_id}")
        runstate.note(
            spec.run_id, spec.mode, "path", path=str(self._temp_dir), what="Ray's temp dir"
        )
        runstate.note(spec.run_id, spec.mode, "process-marker", marker=str(self._temp_dir))
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        self._shm_before = _shm_entries()

    def address(self) -> str:
        return LOOPBACK

    def head_address(self) -> str:
        return LOOPBACK

    def dashboard_host(self) -> str:
        return LOOPBACK

    def port(self, role: str) -> int:
        return free_port()

    def outside_port(self, port: int) -> int:
        return port  # nothing between this machine and its own processes

    def node_args(self) -> list[str]:
        return [
            f"--node-ip-address={LOOPBACK}",
            "--num-cpus=1",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--temp-dir={self._temp_dir}",
            # Kernel-picked ports so a Ray the user runs (defaults 52365, 8080, ...) never clashes.
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    def start(self, name: str, argv: list[str]) -> RayNode:
        assert self._background is not None
        ray = ray_cli()
        if ray is None:
            raise ProvisionError("the `ray` command is not installed")
        # Its own process group, output to <workdir>/<name>-<ns>.log; close() reaps it.
        node = LocalNode(self._background.spawn([ray, *argv], name))
        self._nodes.append(node)
        return node

    def versions(self, head: RayNode, timeout: float) -> tuple[str, str]:
        # The nodes' interpreter (the head's `ray start`), asked: not the harness's own.
        self._python = node_interpreter(self._nodes[0].started.pid)
        return interpreter_versions(self._python, timeout)

    def run_script(self, script: str, env: Mapping[str, str], timeout: float) -> Completed:
        assert self._spec is not None
        path = self._spec.workdir / f"in-cluster-{time.monotonic_ns()}.py"
        path.write_text(script)
        return run_full(
            [self._python or sys.executable, str(path)],
            timeout,
            what="in-cluster script",
            env=dict(env),
            merge=False,  # stdout is the script's answer; stderr only its noise
            check=False,  # the whole output, not runner's tail: tracebacks run long
        )

    def access(self) -> dict[str, str]:
        return {"temp dir": str(self._temp_dir)}

    def remove_command(self, spec: ClusterSpec) -> str:
        # Every process of the run (by the RC_RUN_ID in its environment, workers Ray moved out
        # of the nodes' process groups too), then the temp dir.
        return runstate.sweep_command(spec.run_id, spec.mode)

    def inventory(self) -> list[InventoryItem]:
        if self._spec is None:
            return []
        run_id = self._spec.run_id
        processes = self._ray_processes()
        items = [
            InventoryItem("process", str(p.pid), run_id, " ".join(p.cmdline())[:120])
            for p in processes
        ]
        ours = {p.pid for p in processes}
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
        if self._spec:
            for log in self._spec.workdir.glob("*.log"):
                shutil.copy2(log, dest / log.name)
        if self._temp_dir and (self._temp_dir / "session_latest" / "logs").is_dir():
            shutil.copytree(
                self._temp_dir / "session_latest" / "logs", dest / "ray-logs", dirs_exist_ok=True
            )

    def close(self) -> None:
        # Whatever survived the drain (workers Ray re-parented, a hung raylet) is still ours by
        # its session dir or process group: kill exactly those, then reap the leaders.
        kill_all(self._ray_processes())
        if self._background is not None:
            self._background.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def _ray_processes(self) -> list[psutil.Process]:
        """Live processes of this run: in a process group we started, or using our temp dir."""
        return run_processes(
            (n.started.pid for n in self._nodes), str(self._temp_dir) if self._temp_dir else None
        )


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()
