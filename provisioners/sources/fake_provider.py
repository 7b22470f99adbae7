"""The node source of mode ``autoscale``: Ray's ``fake_multinode`` autoscaler on this machine.

The head runs here with 0 CPUs; its autoscaler starts 1-CPU "nodes" (extra raylets on this
machine) when work is queued and removes them after ``idle_timeout_minutes``.

Why ``ray start --head --autoscaling-config ... --block`` and not ``ray up``: ``ray up`` fills
a fake_multinode config from ``fake_multi_node/example.yaml``, which the Ray wheel lacks
(FileNotFoundError), and it would then try to reach the head through a command runner at the
fake head id, which is no address.

The mode is the ``ray up`` deployer given a machine source,
``RayUpMode(AutoscaleMachines())`` (:mod:`provisioners.deployers.launcher.driver`). The deployer renders,
validates and writes the config, waits for the head and keeps the teardown order. The source's
own ``up`` and ``down`` start and stop the head. Its Ray is on loopback, reached without SSH,
so the source answers the probes, the forwards and the in-cluster scripts itself, and the mode
has no SSH abilities.

Isolation from a Ray the user already runs: every port is picked free, the temp dir is per run
(short, for the unix-socket path limit), the head listens on 127.0.0.1 only, and teardown stops
exactly the process group this run started, never ``ray stop``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import psutil

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    AutoscalingLimits,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.deployers.launcher import LAUNCHER_CONFIG, Machine, MachineSourceBase, RayUpRun
from provisioners.deployers.launcher.autoscaling import IDLE_TIMEOUT
from provisioners.util import runstate
from provisioners.util.processes import (
    env_with_interpreter_first,
    interpreter_versions,
    kill_all,
    node_interpreter,
    ray_cli,
    run_processes,
)
from provisioners.util.relay import free_port, tcp_relay
from provisioners.util.runner import Background, Started, run_full, tail_file
from provisioners.util.waits import alive_nodes

DEFAULT_MAX_WORKERS = 3
HEAD_STOP_GRACE_S = 40.0  # the head drains for up to 30 s on SIGTERM


class AutoscaleMachines(MachineSourceBase):
    """The fake provider's machines: a head on this machine and the fake workers its monitor
    starts, in one process group; reached directly (no SSH), so it answers the probes."""

    TEMPLATE: ClassVar[str] = "autoscale.yaml"
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (IDLE_TIMEOUT, LAUNCHER_CONFIG)

    def __init__(self) -> None:
        super().__init__()
        self._max_workers = DEFAULT_MAX_WORKERS
        self._ports: dict[str, int] = {}
        self._temp_dir: Path | None = None
        self._helpers: Background | None = None
        self._head: Started | None = None
        self._limits: AutoscalingLimits | None = None

    # --- MachineSource ----------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        if not sys.platform.startswith("linux"):
            return [f"needs Linux process groups (this is {sys.platform})"]
        return []

    def plan(self, run: RayUpRun) -> None:
        super().plan(run)
        spec = run.spec
        self._max_workers = DEFAULT_MAX_WORKERS if spec.workers is None else spec.workers
        if self._max_workers < 1:
            raise ProvisionError(f"workers must be >= 1 (got {self._max_workers})")
        self._ports = {"gcs": free_port(), "dashboard": free_port(), "client": free_port()}

    def provider_section(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        return {
            "max_workers": self._max_workers,
            # The fake provider starts workers against <node ip>:6379 unless told otherwise.
            "provider": {"gcs_address": self.head_address(run)},
            "available_node_types": {"ray.worker.cpu": {"max_workers": self._max_workers}},
            "idle_timeout_minutes": self.spec.get(IDLE_TIMEOUT) / 60.0,
        }

    def up(self, run: RayUpRun, timeout: float) -> None:
        spec = self.spec
        launcher = run.launcher
        idle_s = spec.get(IDLE_TIMEOUT)
        self._limits = AutoscalingLimits(
            min_workers=0,
            max_workers=self._max_workers,
            cpus_per_worker=float(
                launcher.config["available_node_types"]["ray.worker.cpu"]["resources"]["CPU"]
            ),
            head_cpus=0.0,
            idle_timeout_s=idle_s,
            scale_up_timeout_s=spec.timeouts.node_join,
            # Idle timeout, plus the autoscaler noticing (1 s ticks) and the raylets draining.
            scale_down_timeout_s=idle_s + 60.0,
        )
        self._temp_dir = Path(tempfile.mkdtemp(prefix=f"rc-{spec.run_id[:8]}-", dir="/tmp"))
        runstate.note(
            spec.run_id, spec.mode, "path", path=str(self._temp_dir), what="Ray's temp dir"
        )
        argv = [
            str(ray_cli()),
            "start",
            "--head",
            "--block",
            f"--autoscaling-config={launcher.config_path}",
            "--node-ip-address=127.0.0.1",
            f"--port={self._ports['gcs']}",
            "--num-cpus=0",
            "--object-store-memory=100000000",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self._ports['dashboard']}",
            f"--ray-client-server-port={self._ports['client']}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={self._temp_dir}",
            "--disable-usage-stats",
        ]
        env = {
            **env_with_interpreter_first(),
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            **runstate.run_env(spec.run_id, spec.mode),
        }
        # Its own process group: the fake workers are the monitor's children, so stopping
        # this group stops exactly this run's Ray processes. The driver waits for the head.
        self._helpers = Background(spec.run_id, spec.workdir, env)
        self._head = self._helpers.spawn(argv, "ray start --head")

    def node_count(self, run: RayUpRun) -> int:
        # Head only at rest (min_workers is 0). Not named by address: the fake provider gives
        # the head a made-up IP (192.0.2.x), not the --node-ip-address it was started with.
        return 1

    def gave_up(self, run: RayUpRun) -> str | None:
        if self._head is None or (code := self._head.exited()) is None:
            return None
        last = tail_file(self._head.log, 1) or "no output"
        return f"`ray start --head` exited {code}: {last} (log: {self._head.log})"

    def access(self, run: RayUpRun) -> dict[str, str]:
        return {
            "dashboard": f"http://127.0.0.1:{self._ports['dashboard']}",
            "client": f"ray://127.0.0.1:{self._ports['client']}",
            "RAY_ADDRESS": self.head_address(run),
            "temp_dir": str(self._temp_dir),
        }

    def removal_commands(self, run: RayUpRun) -> list[str]:
        # Every process of the run (by the RC_RUN_ID in its environment), then the temp dir.
        return [runstate.sweep_command(self.spec.run_id, self.spec.mode)]

    def down(self, run: RayUpRun, timeout: float) -> None:
        if self._head is not None and self._head.exited() is None:
            # SIGTERM to `ray start --block` alone lets it drain and stop its children itself
            # (about 4 s); SIGTERM to the whole group at once kills the GCS under the drain.
            self._head.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._head.popen.wait(min(timeout, HEAD_STOP_GRACE_S))

    def remove_machines(self, run: RayUpRun) -> None:
        if self._helpers is not None:
            self._helpers.close()  # the rest of the head's process group
        kill_all(self._own_processes())  # anything that left the group
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def leak_query(self, run: RayUpRun) -> list[InventoryItem]:
        run_id = self.spec.run_id
        items = [
            InventoryItem("process", str(p.pid), run_id, " ".join(p.info["cmdline"] or [])[:80])
            for p in self._own_processes()
        ]
        if self._temp_dir is not None and self._temp_dir.exists():
            items.append(InventoryItem("directory", str(self._temp_dir), run_id, "Ray temp dir"))
        return items

    def collect_diagnostics(self, run: RayUpRun, dest: Path) -> None:
        if self._head is not None and self._head.log.exists():
            shutil.copy2(self._head.log, dest / "head.log")
        logs = self._temp_dir / "session_latest" / "logs" if self._temp_dir else None
        if logs is not None and logs.is_dir():
            shutil.copytree(logs, dest / "ray-logs", dirs_exist_ok=True)

    # --- DirectMachineSource: Ray on loopback -----------------------------------------------

    def head_address(self, run: RayUpRun) -> str:
        return f"127.0.0.1:{self._ports['gcs']}"

    def alive_nodes(self, run: RayUpRun) -> list[dict[str, Any]]:
        return alive_nodes(f"http://127.0.0.1:{self._ports['dashboard']}")

    def versions(self, run: RayUpRun) -> tuple[str, str]:
        # The head's `ray start` interpreter, asked: the harness's own is not the cluster's.
        return interpreter_versions(self._python(), self.spec.timeouts.job)

    def port_forward(
        self, run: RayUpRun, remote_port: int
    ) -> contextlib.AbstractContextManager[Endpoint]:
        # The head listens on loopback already; a relay still gives each forward its own port
        # that is free again on exit, like every other mode's forward.
        ports = {CLIENT_PORT: self._ports["client"], DASHBOARD_PORT: self._ports["dashboard"]}
        return tcp_relay("127.0.0.1", ports.get(remote_port, remote_port))

    def run_in_cluster(self, run: RayUpRun, script: str, timeout: float) -> str:
        done = run_full(
            [self._python(), "-c", script],
            timeout,
            what="script",
            env={"RAY_ADDRESS": self.head_address(run)},
            cwd=self.spec.workdir,
            merge=False,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"script exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    # --- SupportsAutoscaling ----------------------------------------------------------------

    def autoscaling_limits(self) -> AutoscalingLimits:
        if self._limits is None:
            raise RuntimeError("autoscaling_limits() before provision()")
        return self._limits

    # --- helpers ------------------------------------------------------------------------------

    def _python(self) -> str:
        """The nodes' interpreter (the fake workers are the head's monitor's children)."""
        if self._head is None:
            raise RuntimeError("no head yet")
        return node_interpreter(self._head.pid)

    def _own_processes(self) -> list[psutil.Process]:
        """Alive processes of this run: our process group, or naming our temp dir."""
        groups = [self._head.pid] if self._head is not None else []
        return run_processes(groups, str(self._temp_dir) if self._temp_dir else None)
