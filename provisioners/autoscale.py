"""Mode ``autoscale``: Ray's ``fake_multinode`` autoscaler on this machine.

The head runs here with 0 CPUs; its autoscaler starts 1-CPU "nodes" (extra raylets on this
machine) when work is queued and removes them after ``idle_timeout_minutes``.

Why ``ray start --head --autoscaling-config ... --block`` and not ``ray up``: ``ray up`` fills
a fake_multinode config from ``fake_multi_node/example.yaml``, which the Ray wheel lacks
(FileNotFoundError), and it would then try to reach the head through a command runner at the
fake head id, which is no address. The config is still rendered and validated by the shared
launcher code (:mod:`provisioners.launcher`); only the start differs.

Isolation from a Ray the user already runs: every port is picked free, the temp dir is per run
(short, for the unix-socket path limit), the head listens on 127.0.0.1 only, and teardown stops
exactly the process group this run started, never ``ray stop``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from provisioners import launcher
from provisioners.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    AutoscalingLimits,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    ProvisionError,
)
from provisioners.processes import env_with_interpreter_first, kill_all, ray_cli, run_processes
from provisioners.relay import tcp_relay
from provisioners.waits import alive_nodes

DEFAULT_MAX_WORKERS = 3
DEFAULT_IDLE_TIMEOUT_S = 12.0  # 0.2 min: NOTES measured removal ~20 s after work ended
HEAD_STOP_GRACE_S = 40.0  # the head drains for up to 30 s on SIGTERM


class AutoscaleProvisioner:
    """Head plus on-demand fake workers, all processes of this machine in one process group."""

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._head: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None
        self._temp_dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._limits: AutoscalingLimits | None = None
        self._config_path: Path | None = None

    # --- Provisioner ------------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing = []
        if not sys.platform.startswith("linux"):
            missing.append(f"autoscale: needs Linux process groups (this is {sys.platform})")
        if ray_cli() is None:
            missing.append("autoscale: no `ray` CLI beside the interpreter or on PATH")
        return missing

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        max_workers = DEFAULT_MAX_WORKERS if spec.workers is None else spec.workers
        if max_workers < 1:
            raise ProvisionError(f"autoscale: workers must be >= 1 (got {max_workers})")
        idle_s = float(spec.option("ray_idle_timeout_s", DEFAULT_IDLE_TIMEOUT_S))
        spec.workdir.mkdir(parents=True, exist_ok=True)

        gcs, dash, client = launcher.free_port(), launcher.free_port(), launcher.free_port()
        self._ports = {"gcs": gcs, "dashboard": dash, "client": client}
        config = launcher.deep_merge(
            launcher.load_template("autoscale.yaml"),
            {
                "cluster_name": f"rc-{spec.run_id}-autoscale",
                "max_workers": max_workers,
                # The fake provider starts workers against <node ip>:6379 unless told otherwise.
                "provider": {"gcs_address": f"127.0.0.1:{gcs}"},
                "available_node_types": {"ray.worker.cpu": {"max_workers": max_workers}},
                "idle_timeout_minutes": idle_s / 60.0,
            },
        )
        config = launcher.deep_merge(
            config, launcher.load_user_overrides(spec.option("ray_launcher_config"))
        )
        launcher.validate_config(config)  # before anything is started
        self._config_path = launcher.write_config(config, spec.workdir, "autoscale.yaml")
        worker_cpus = float(config["available_node_types"]["ray.worker.cpu"]["resources"]["CPU"])
        self._limits = AutoscalingLimits(
            min_workers=0,
            max_workers=max_workers,
            cpus_per_worker=worker_cpus,
            head_cpus=0.0,
            idle_timeout_s=idle_s,
            scale_up_timeout_s=spec.timeouts.node_join,
            # Idle timeout, plus the autoscaler noticing (1 s ticks) and the raylets draining.
            scale_down_timeout_s=idle_s + 60.0,
        )

        self._temp_dir = Path(tempfile.mkdtemp(prefix=f"rc-{spec.run_id[:8]}-", dir="/tmp"))
        argv = [
            str(ray_cli()), "start", "--head", "--block",
            f"--autoscaling-config={self._config_path}",
            "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--num-cpus=0", "--object-store-memory=100000000",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={launcher.free_port()}",
            f"--temp-dir={self._temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        env = {
            **env_with_interpreter_first(),
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        started = time.monotonic()
        with (spec.workdir / "head.log").open("wb") as log:
            # Own process group: the fake workers are the monitor's children, so killpg on
            # this group stops exactly this run's Ray processes.
            self._head = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip
        self._pgid = self._head.pid
        self._wait_head(spec.timeouts.provision)
        spec.progress(f"autoscale head up in {time.monotonic() - started:.1f} s")
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=1,  # head only at rest; min_workers is 0
            ray_version=_ray_version(),
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            head_address=f"127.0.0.1:{gcs}",
            access={
                "dashboard": f"http://127.0.0.1:{dash}",
                "client": f"ray://127.0.0.1:{client}",
                "RAY_ADDRESS": f"127.0.0.1:{gcs}",
                "config": str(self._config_path),
                "temp_dir": str(self._temp_dir),
            },
        )

    def _wait_head(self, timeout: float) -> None:
        """Wait for the dashboard to list one alive node; fail early if ``ray start`` died."""
        assert self._head is not None
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self._ports['dashboard']}"
        seen = "dashboard not answering"
        while time.monotonic() < deadline:
            if self._head.poll() is not None:
                last = _tail_file(self._log_path(), 1) or "no output"
                raise ProvisionError(
                    f"autoscale: `ray start --head` exited {self._head.returncode}: {last} "
                    f"(log: {self._log_path()})"
                )
            with contextlib.suppress(OSError, ValueError):
                alive = len(alive_nodes(url))
                if alive >= 1:
                    return
                seen = f"{alive} alive nodes"
            time.sleep(0.5)
        raise ProvisionError(f"autoscale: head not alive after {timeout:.0f}s ({seen})")

    def _log_path(self) -> Path:
        assert self._spec is not None
        return self._spec.workdir / "head.log"

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        # The head listens on loopback already; a relay still gives each forward its own port
        # that is free again on exit, like every other mode's forward.
        ports = {CLIENT_PORT: self._ports["client"], DASHBOARD_PORT: self._ports["dashboard"]}
        return tcp_relay("127.0.0.1", ports.get(remote_port, remote_port))

    def run_in_cluster(self, script: str, timeout: float) -> str:
        assert self._spec is not None
        env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{self._ports['gcs']}"}
        try:
            proc = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, env=env,
                timeout=timeout, cwd=self._spec.workdir,
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"script did not finish within {timeout:.0f}s: {e.stdout!r}") from e
        if proc.returncode != 0:
            raise RuntimeError(f"script exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def inventory(self) -> list[InventoryItem]:
        run_id = self._spec.run_id if self._spec else ""
        items = [
            InventoryItem("process", str(p.pid), run_id, " ".join(p.info["cmdline"] or [])[:80])
            for p in self._own_processes()
        ]
        if self._temp_dir is not None and self._temp_dir.exists():
            items.append(InventoryItem("directory", str(self._temp_dir), run_id, "Ray temp dir"))
        return items

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for src in (self._log_path() if self._spec else None, self._config_path):
            if src is not None and src.exists():
                shutil.copy2(src, dest / src.name)
        logs = self._temp_dir / "session_latest" / "logs" if self._temp_dir else None
        if logs is not None and logs.is_dir():
            shutil.copytree(logs, dest / "ray-logs", dirs_exist_ok=True)

    def teardown(self) -> None:
        if self._head is not None and self._head.poll() is None:
            # SIGTERM to `ray start --block` alone lets it drain and stop its children itself
            # (about 4 s); SIGTERM to the whole group at once kills the GCS under the drain.
            self._head.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._head.wait(HEAD_STOP_GRACE_S)
        if self._pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, signal.SIGKILL)
        kill_all(self._own_processes())  # anything that left the group
        if self._head is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._head.wait(10)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    # --- SupportsAutoscaling ----------------------------------------------------------------

    def autoscaling_limits(self) -> AutoscalingLimits:
        if self._limits is None:
            raise RuntimeError("autoscaling_limits() before provision()")
        return self._limits

    # --- helpers ------------------------------------------------------------------------------

    def _own_processes(self) -> list[psutil.Process]:
        """Alive processes of this run: our process group, or naming our temp dir."""
        groups = [] if self._pgid is None else [self._pgid]
        return run_processes(groups, str(self._temp_dir) if self._temp_dir else None)


def _tail_file(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ray_version() -> str:
    import ray

    return str(ray.__version__)


def _conforms(p: AutoscaleProvisioner) -> None:
    """Static conformance check: mypy fails here when a method drifts from the contract."""
    from provisioners.base import Provisioner, SupportsAutoscaling

    _a: Provisioner = p
    _b: SupportsAutoscaling = p
