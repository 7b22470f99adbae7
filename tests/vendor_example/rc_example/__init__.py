"""An example vendor mode: "Example Ray Service", whose nodes are processes on this machine.

A vendor whose platform gives hosts and starts Ray on them with ``ray start`` writes only the
node source: :class:`ExampleHosts` meets ``provisioners.deployers.raystart.NodeHosts`` (where the nodes
run, what they leave, how to remove it), and the mode is the project's ``ray start`` deployer
given that source. Everything here is the vendor's own: no class of this project is subclassed
but the deployer, and the option (the "zone") is declared by the source.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import psutil

from provisioners.contract.base import ClusterSpec, InventoryItem
from provisioners.contract.options import Option
from provisioners.deployers.raystart import RayStartMode
from provisioners.util.runner import Background, Completed, run_full

#: ``--ray-example-zone`` on the command line, ``ray_example_zone`` in an ini file.
ZONE = Option.string("example-zone", "example: zone the service places the cluster in", "zone-a")
_KILL_WAIT_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ExampleNode:
    """A node's ``ray start --block``, leader of a session of its own."""

    def __init__(self, what: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.what = what
        self.popen = popen
        self.log = log

    @property
    def hostname(self) -> str:
        return ""  # the nodes share this machine's

    def ip(self) -> str:
        return "127.0.0.1"

    def exited(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.terminate()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def last_words(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-8:]
        return f"log {self.log}:\n" + "\n".join(lines)


class ExampleHosts:
    """The service's hosts: this machine's loopback, one session and one directory per run."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (ZONE,)
    WORKERS_WITH_HEAD: ClassVar[bool] = False

    def __init__(self) -> None:
        self.spec: ClusterSpec | None = None
        self.nodes: list[ExampleNode] = []
        self.root: Path | None = None
        self.background: Background | None = None

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        return [] if shutil.which("ray") else ["example: no `ray` command on PATH"]

    def open(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.root = Path(f"/tmp/rcx-{spec.run_id}")  # short: Ray's unix sockets live under it
        self.root.mkdir(parents=True, exist_ok=True)
        self.background = Background(spec.run_id, spec.workdir, {"RAY_USAGE_STATS_ENABLED": "0"})

    def address(self) -> str:
        return "127.0.0.1"

    def head_address(self) -> str:
        return "127.0.0.1"

    def dashboard_host(self) -> str:
        return "127.0.0.1"

    def port(self, role: str) -> int:
        return _free_port()

    def outside_port(self, port: int) -> int:
        return port

    def node_args(self) -> list[str]:
        ports = ("node-manager", "object-manager", "dashboard-agent-listen")
        return [
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--object-store-memory={128 * 1024**2}",
            f"--temp-dir={self.root}",
            *(f"--{name}-port={_free_port()}" for name in ports),
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]

    def start(self, name: str, argv: list[str]) -> ExampleNode:
        assert self.background is not None
        # Through the project's runner, like every command: the bundle lists each command line.
        started = self.background.spawn([shutil.which("ray") or "ray", *argv], name)
        self.nodes.append(ExampleNode(name, started.popen, started.log))
        return self.nodes[-1]

    def versions(self, head: Any, timeout: float) -> tuple[str, str]:
        script = "import ray, sys; print(ray.__version__, '%d.%d' % sys.version_info[:2])"
        out = run_full([sys.executable, "-c", script], timeout, what="example: versions")
        ray_version, python_version = out.stdout.split()
        return ray_version, python_version

    def run_script(self, script: str, env: Mapping[str, str], timeout: float) -> Completed:
        assert self.spec is not None
        path = self.spec.workdir / f"script-{time.monotonic_ns()}.py"
        path.write_text(script)
        return run_full(
            [sys.executable, str(path)],
            timeout,
            what="example: in-cluster script",
            env=dict(env),
            merge=False,
            check=False,
        )

    def access(self) -> dict[str, str]:
        assert self.spec is not None
        return {"zone": self.spec.get(ZONE) or "default", "directory": str(self.root)}

    def remove_command(self, spec: ClusterSpec) -> str:
        groups = " ".join(f"-{n.popen.pid}" for n in self.nodes)
        return f"kill -9 -- {groups}; rm -rf {shlex.quote(str(self.root))}"

    def inventory(self) -> list[InventoryItem]:
        assert self.spec is not None
        items = [
            InventoryItem("process", str(p.pid), self.spec.run_id, p.name())
            for p in self._processes()
        ]
        if self.root and self.root.exists():
            items.append(InventoryItem("directory", str(self.root), self.spec.run_id))
        return items

    def collect_diagnostics(self, dest: Path) -> None:
        for node in self.nodes:
            if node.log.exists():
                shutil.copy2(node.log, dest / node.log.name)

    def close(self) -> None:
        procs = self._processes()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs, timeout=_KILL_WAIT_S)
        if self.background is not None:
            self.background.close()  # reaps the leaders: no zombie left listed
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _processes(self) -> list[psutil.Process]:
        """The run's live processes: in a node's session, or naming the run's directory."""
        sessions = {n.popen.pid for n in self.nodes}
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                ours = os.getsid(proc.pid) in sessions or any(
                    str(self.root) in arg for arg in proc.info["cmdline"] or []
                )
                if ours and self.root is not None:
                    found.append(proc)
        return found


class ExampleProvisioner(RayStartMode):
    """The example service's clusters: the ``ray start`` deployer on :class:`ExampleHosts`."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = ExampleHosts.OPTIONS

    def __init__(self) -> None:
        super().__init__(ExampleHosts(), default_workers=1)
