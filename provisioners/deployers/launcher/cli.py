"""Ray's cluster launcher CLI for one rendered YAML, and what it leaves on this machine.

Every command goes through :func:`provisioners.util.runner.run`, every helper (``ray dashboard``, SSH
tunnels) through one :class:`provisioners.util.runner.Background`. Beside those helpers the launcher
leaves SSH ControlMasters and, with the ``local`` provider, state files in Ray's temp dir: its
:meth:`Launcher.inventory` lists them all, and :meth:`Launcher.close` stops them.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import yaml

from provisioners.contract.base import DASHBOARD_PORT, Endpoint, InventoryItem, ProvisionError
from provisioners.deployers.launcher.ssh import SshTarget
from provisioners.util import runstate
from provisioners.util.processes import ray_cli
from provisioners.util.relay import free_port
from provisioners.util.runner import Background, CommandError, run, run_full
from provisioners.util.waits import port_accepts, port_is_free


def control_dir(cluster_name: str) -> Path:
    """Where Ray's SSH runner keeps a cluster's ControlMaster sockets (Ray's own formula).

    Unique per cluster name, so per run; outside the workdir, hence in the inventory.
    """
    user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
    cluster = hashlib.sha256(cluster_name.encode()).hexdigest()[:10]
    return Path(f"/tmp/ray_ssh_{user}/{cluster}")


def config_caches(tmp: Path, cluster_name: str) -> list[Path]:
    """Ray's ``ray-config-<hash>`` caches in ``tmp`` of the cluster ``cluster_name``."""
    found = []
    for cache in tmp.glob("ray-config-*"):
        with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
            if json.loads(cache.read_text())["config"].get("cluster_name") == cluster_name:
                found.append(cache)
    return found


class Launcher:
    """``ray up`` / ``exec`` / ``down`` / ``get-head-ip`` / ``dashboard`` and SSH tunnels."""

    def __init__(
        self,
        config_path: Path,
        *,
        run_id: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        tmp_dir: Path,
        progress: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.config_path = config_path
        self.config: dict[str, Any] = yaml.safe_load(config_path.read_text())
        self.cluster_name = str(self.config["cluster_name"])
        self.run_id = run_id
        self.log = log
        #: Ray's temp files of this cluster: every `ray` command but `up --no-config-cache` writes
        #: the whole resolved config (provider credentials included) to ``$TMPDIR/ray-config-*``,
        #: world-readable under the usual umask; in the run's private dir it is neither.
        self.tmp_dir = tmp_dir
        tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp_dir.chmod(0o700)
        # Usage stats would phone home; colour codes would clutter the logs we keep. RC_RUN_ID
        # marks every process of the run (ssh children too) for a sweep after a crash.
        self.env = {
            "RAY_USAGE_STATS_ENABLED": "0",
            "TERM": "dumb",
            **runstate.run_env(run_id),
            "TMPDIR": str(tmp_dir),
            **(env or {}),
        }
        self.progress = progress
        self.helpers = Background(run_id, log.parent, self.env)
        self._head_ip: str | None = None

    # The CLI -----------------------------------------------------------------------------

    def _ray(self, *args: str, log_style: bool = True) -> list[str]:
        style = ["--log-style", "record"] if log_style else []
        return [ray_cli() or "ray", *args, *style, str(self.config_path)]

    def _run(self, argv: list[str], timeout: float, what: str) -> str:
        return run(argv, timeout, what=what, env=self.env, log_file=self.log)

    def up(self, timeout: float) -> None:
        """``ray up -y``; the error carries Ray's own verdict and points at the full log."""
        argv = self._ray(
            "up", "-y", "--no-config-cache", "--disable-usage-stats", "--log-color", "false"
        )
        try:
            self._run(argv, timeout, "ray up")
        except CommandError as e:
            # One line: Ray's own verdict ("Failed to setup head node."); the rest is in the log.
            lines = [ln.strip() for ln in e.output.splitlines() if ln.strip()]
            verdict = next((ln for ln in reversed(lines) if ln.startswith("Error:")), None)
            why = verdict or (lines[-1] if lines else "no output")
            raise ProvisionError(
                f"ray up exited {e.returncode}: {why} (full log: {self.log})"
            ) from None

    def exec(self, command: str, timeout: float) -> str:
        """``ray exec <yaml> '<command>'``; raises :class:`CommandError` on non-zero exit."""
        argv = [*self._ray("exec"), command]
        return self._run(argv, timeout, f"ray exec {command!r}")

    def down(self, timeout: float) -> None:
        """``ray down -y``; never raises (teardown must go on to remove the nodes)."""
        try:
            self._run(self._ray("down", "-y"), timeout, "ray down")
        except (ProvisionError, CommandError) as e:
            self.progress(f"ray down failed, removing nodes anyway: {str(e).splitlines()[0]}")

    def command(self, *args: str) -> str:
        """``ray <args> <yaml>`` as a person runs it in a clean shell: absolute paths, and the
        run's TMPDIR (Ray's config cache stays out of /tmp; the local provider's state is there)."""
        return shlex.join(["env", f"TMPDIR={self.tmp_dir}", *self._ray(*args, log_style=False)])

    def down_command(self) -> str:
        return self.command("down", "-y")

    def head_ip(self, timeout: float = 60.0) -> str:
        """The head's address as the launcher sees it (``ray get-head-ip``)."""
        if self._head_ip is None:
            out = self._run(self._ray("get-head-ip", log_style=False), timeout, "ray get-head-ip")
            self._head_ip = out.strip().splitlines()[-1].strip()
        return self._head_ip

    # Helpers: forwards --------------------------------------------------------------------

    @contextlib.contextmanager
    def _forward(
        self, argv: list[str], what: str, port: int, remote_port: int, timeout: float
    ) -> Iterator[Endpoint]:
        ready = lambda: port_accepts("127.0.0.1", port)  # noqa: E731
        try:
            with self.helpers.start(argv, what, ready=ready, timeout=timeout):
                yield Endpoint("127.0.0.1", port)
        finally:
            self._release_port(port, remote_port)

    def dashboard(self, timeout: float = 60.0) -> contextlib.AbstractContextManager[Endpoint]:
        """``ray dashboard -p <port> <yaml>``: the launcher's own SSH tunnel to the head's 8265."""
        port = free_port()
        argv = self._ray("dashboard", "-p", str(port), log_style=False)
        return self._forward(argv, "ray dashboard", port, DASHBOARD_PORT, timeout)

    def tunnel(
        self, target: SshTarget, remote_host: str, remote_port: int, timeout: float = 30.0
    ) -> contextlib.AbstractContextManager[Endpoint]:
        """``ssh -N -L`` from a free loopback port to ``remote_host:remote_port`` via ``target``."""
        port = free_port()
        forward = f"127.0.0.1:{port}:{remote_host}:{remote_port}"
        argv = target.argv(None, "-N", "-o", "ExitOnForwardFailure=yes", "-L", forward)
        return self._forward(argv, "ssh tunnel", port, remote_port, timeout)

    def _release_port(self, port: int, remote_port: int) -> None:
        """Free ``port`` if an ssh of this run still listens on it.

        ``ray dashboard`` opens its forward through the SSH ControlMaster that an earlier
        ``ray`` command left running (ControlPersist): the master, not the child we stopped,
        holds the listening socket. Cancel just that forward: the master may carry another
        forward open at the same time. Kill the holder only when the cancel did not free it.
        """
        if port_is_free(port):
            return
        forward = f"{port}:localhost:{remote_port}"  # as `ray dashboard` asked for it
        for socket_path in self.control_dir().glob("*"):
            argv = ["ssh", "-S", str(socket_path), "-O", "cancel", "-L", forward, "rc"]
            run_full(argv, 10, what="ssh -O cancel", check=False)
        if port_is_free(port):
            return
        for ssh in self._own_ssh():
            with contextlib.suppress(psutil.Error):
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                    for c in ssh.net_connections(kind="tcp")
                ):
                    ssh.kill()
                    ssh.wait(5)

    def close(self) -> None:
        """Stop every helper still running, and the ssh control masters on our key."""
        self.helpers.close()
        for proc in self._own_ssh():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(self.control_dir(), ignore_errors=True)
        with contextlib.suppress(OSError):  # shared by clusters: only when it is empty
            self.control_dir().parent.rmdir()

    # What the launcher leaves on this machine ----------------------------------------------

    def _key_path(self) -> str | None:
        key = (self.config.get("auth") or {}).get("ssh_private_key")
        return str(Path(key).expanduser()) if key else None

    def control_dir(self) -> Path:
        return control_dir(self.cluster_name)

    def _own_ssh(self) -> list[psutil.Process]:
        """ssh processes of this run: on its key (tunnels, ``ray`` commands), or its
        ControlMasters, which retitle themselves ``ssh: <control path> [mux]``."""
        key = self._key_path()
        control = str(self.control_dir())
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if not cmd or not cmd[0].startswith("ssh"):
                continue
            if (key is not None and key in cmd) or any(control in arg for arg in cmd):
                found.append(proc)
        return found

    def state_files(self) -> list[Path]:
        """Files ``ray`` keeps outside the workdir: the ``local`` provider's
        ``/tmp/ray/cluster-*``, and ``ray up``'s resolved-config cache ``/tmp/ray-config-<hash>``
        (a copy of the whole config, provider credentials included), recognised by the run's
        cluster name inside it."""
        found: list[Path] = []
        for tmp in dict.fromkeys([self.tmp_dir, Path(tempfile.gettempdir())]):
            base = tmp / "ray"
            found += [
                base / f"cluster-{self.cluster_name}.{suffix}" for suffix in ("state", "lock")
            ]
            found += config_caches(tmp, self.cluster_name)
        return [p for p in found if p.exists()]

    def remove_state_files(self) -> None:
        for path in self.state_files():
            path.unlink(missing_ok=True)

    def inventory(self) -> list[InventoryItem]:
        items = self.helpers.inventory()
        helpers = {i.name for i in items}
        items += [
            InventoryItem("process", str(p.pid), self.run_id, "ssh using the run's key")
            for p in self._own_ssh()
            if str(p.pid) not in helpers
        ]
        if self.control_dir().exists():
            items.append(
                InventoryItem("directory", str(self.control_dir()), self.run_id, "ssh sockets")
            )
        items += [
            InventoryItem("file", str(p), self.run_id, "ray up state") for p in self.state_files()
        ]
        return items
