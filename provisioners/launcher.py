"""The one code path that drives Ray's cluster launcher (``ray up`` / ``exec`` / ``down``).

Every launcher-based mode (``vm`` here; AWS, IBM and vendors later) renders a YAML from a
template plus its own provider section, validates it against Ray's schema, and hands it to a
:class:`Launcher`. A mode adds only the provider section and a leak query for what its provider
creates (containers, instances, security groups); the launcher itself lists what *it* leaves on
this machine (tunnel processes, SSH control masters, the local provider's state files).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import getpass
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from provisioners.base import Endpoint, InventoryItem, ProvisionError
from provisioners.processes import ray_cli
from provisioners.relay import free_port as free_port  # re-exported for launcher modes

TEMPLATES = Path(__file__).parent / "templates"

#: A mode's query for what its provider created that still exists (see module docstring).
LeakQuery = Callable[[], list[InventoryItem]]


class CommandError(RuntimeError):
    """A command exited non-zero; the message carries the tail of its output."""


def wait_port(host: str, port: int, timeout: float, what: str) -> None:
    """Wait until ``host:port`` accepts a TCP connection, or raise saying what never came up."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            return
        if time.monotonic() > deadline:
            raise ProvisionError(f"{what}: {host}:{port} did not accept within {timeout:.0f}s")
        time.sleep(0.2)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    timeout: float,
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    log: Path | None = None,
) -> str:
    """Run ``argv`` to completion within ``timeout``; return stdout+stderr.

    The child gets its own process group so a timeout kills ``ray up``'s ssh/rsync children
    too, not just the CLI. Raises :class:`ProvisionError` on timeout and :class:`CommandError`
    on a non-zero exit, both naming ``what``.
    """
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=full_env,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        _write_log(log, argv, out)
        raise ProvisionError(
            f"{what} did not finish within {timeout:.0f}s; last output:\n{_tail(out)}"
        ) from None
    _write_log(log, argv, out)
    if proc.returncode != 0:
        raise CommandError(f"{what} exited {proc.returncode}:\n{_tail(out)}")
    return out


def _write_log(log: Path | None, argv: Sequence[str], out: str) -> None:
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {shlex.join(argv)}\n{out}\n")


# --- Config: template, overrides, schema ------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it; nested mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_template(name: str, values: Mapping[str, object] | None = None) -> dict[str, Any]:
    """A cluster YAML template from ``provisioners/templates/`` with ``${field}``s filled in.

    Values are YAML-quoted so a path or command never changes the document's structure; a
    field the caller forgot raises instead of leaving ``${field}`` in a config.
    """
    text = (TEMPLATES / name).read_text()
    if values is not None:
        quoted = {k: json.dumps(str(v)) for k, v in values.items()}
        try:
            text = string.Template(text).substitute(quoted)
        except (KeyError, ValueError) as e:
            raise ProvisionError(f"template {name}: no value for {e}") from None
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ProvisionError(f"template {name} is not a YAML mapping")
    return data


def load_user_overrides(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A user's YAML of extra cluster-config keys (``--ray-opt ray_launcher_config=PATH``)."""
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ProvisionError(f"cluster config overrides {path}: {e}") from None
    if not isinstance(data, dict):
        raise ProvisionError(f"cluster config overrides {path}: not a YAML mapping")
    return data


def validate_config(config: Mapping[str, Any], source: str = "cluster config") -> None:
    """Check ``config`` against Ray's own ``ray-schema.json`` before anything is launched.

    Raises :class:`ProvisionError` naming the offending field, e.g.
    ``cluster config: field 'max_workers': 'lots' is not of type 'integer'``.
    """
    # Ray's own dependency (no stubs); imported late to keep module import cheap.
    import jsonschema  # type: ignore[import-untyped]
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft7Validator(schema).iter_errors(dict(config))
    )
    if error is None:
        return
    where = ".".join(str(p) for p in error.absolute_path)
    if not where and error.validator == "additionalProperties":
        # The path of an unknown key is its parent (empty at top level); the message names it.
        where = "(top level)"
    raise ProvisionError(f"{source}: field {where or '(top level)'!r}: {error.message}")


def write_config(config: Mapping[str, Any], workdir: Path, name: str = "cluster.yaml") -> Path:
    """Write the rendered config into the run's workdir (kept there for the report)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


# --- SSH ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node over plain ssh with the run's key."""

    host: str
    user: str
    key: Path
    connect_timeout: float = 10.0
    port: int = 22

    def options(self) -> list[str]:
        return [
            "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            # Run nodes are new each run: their host keys cannot be known in advance.
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
            "-o", "ServerAliveInterval=5",
            "-p", str(self.port),
        ]  # fmt: skip

    def argv(self, remote_command: str | None = None, *extra: str) -> list[str]:
        tail = [remote_command] if remote_command is not None else []
        return ["ssh", *self.options(), *extra, f"{self.user}@{self.host}", *tail]

    def run(self, command: str, timeout: float, stdin: str | None = None) -> str:
        """Run a shell command under a login shell (where the node's ``ray`` is on PATH)."""
        remote = f"bash -lc {shlex.quote(command)}"
        return run(self.argv(remote), timeout, what=f"ssh {self.host}", stdin=stdin)


def generate_key(workdir: Path) -> Path:
    """A fresh ed25519 key pair for this run only (never the user's keys)."""
    key = workdir / "id_ed25519"
    if not key.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "ray-conformance",
                "-f",
                str(key),
            ],
            30,
            what="ssh-keygen",
        )
    return key


def wait_for_ssh(targets: Sequence[SshTarget], timeout: float) -> None:
    """Wait until every target runs ``true`` over ssh; the error names the hosts that never did."""
    deadline = time.monotonic() + timeout
    pending = {t.host: t for t in targets}
    last: dict[str, str] = {}
    while pending:
        for host, target in list(pending.items()):
            left = deadline - time.monotonic()
            probe = dataclasses.replace(target, connect_timeout=min(5.0, max(1.0, left)))
            try:
                run(probe.argv("true"), max(1.0, min(8.0, left)), what=f"ssh {host}")
                del pending[host]
            except (ProvisionError, CommandError) as e:
                last[host] = str(e).splitlines()[-1][:200]
        if not pending:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{h}: {last.get(h, '?')}" for h in pending)
            raise ProvisionError(
                f"ssh did not answer within {timeout:.0f}s on {', '.join(pending)} ({detail})"
            )
        time.sleep(1.0)


# --- The launcher -------------------------------------------------------------------------------


class Launcher:
    """``ray up`` / ``exec`` / ``down`` / ``dashboard`` and SSH tunnels for one rendered YAML.

    Tracks every background process it starts (by pid) so a context exit or :meth:`close`
    stops exactly those, and :meth:`inventory` reports whatever of its own is still around.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        run_id: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        leak_query: LeakQuery | None = None,
        progress: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.config_path = config_path
        self.config: dict[str, Any] = yaml.safe_load(config_path.read_text())
        self.cluster_name = str(self.config["cluster_name"])
        self.run_id = run_id
        self.log = log
        # Usage stats would phone home; colour codes would clutter the logs we keep.
        self.env = {"RAY_USAGE_STATS_ENABLED": "0", "TERM": "dumb", **(env or {})}
        self.leak_query = leak_query
        self.progress = progress
        self._children: dict[int, str] = {}  # pid -> what, for background processes we own
        self._head_ip: str | None = None

    # The CLI -----------------------------------------------------------------------------

    def _ray(self, *args: str) -> list[str]:
        return [ray_cli() or "ray", *args]

    def up(self, timeout: float) -> None:
        """``ray up -y``; the error carries the last lines ``ray up`` printed."""
        argv = self._ray(
            "up", "-y", "--no-config-cache", "--disable-usage-stats",
            "--log-style", "record", "--log-color", "false", str(self.config_path),
        )  # fmt: skip
        try:
            run(argv, timeout, what="ray up", env=self.env, log=self.log)
        except CommandError as e:
            # One line: Ray's own verdict ("Failed to setup head node."); the rest is in the log.
            lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
            verdict = next((ln for ln in reversed(lines) if ln.startswith("Error:")), None)
            why = verdict or (lines[-1] if lines else "no output")
            raise ProvisionError(f"{str(e).splitlines()[0]} {why} (full log: {self.log})") from None

    def exec(self, command: str, timeout: float) -> str:
        """``ray exec <yaml> '<command>'``; raises :class:`CommandError` on non-zero exit."""
        argv = self._ray("exec", "--log-style", "record", str(self.config_path), command)
        return run(argv, timeout, what=f"ray exec {command!r}", env=self.env, log=self.log)

    def down(self, timeout: float) -> None:
        """``ray down -y``; never raises (teardown must go on to remove the nodes)."""
        argv = self._ray("down", "-y", "--log-style", "record", str(self.config_path))
        try:
            run(argv, timeout, what="ray down", env=self.env, log=self.log)
        except (ProvisionError, CommandError) as e:
            self.progress(f"ray down failed, removing nodes anyway: {str(e).splitlines()[0]}")

    def head_ip(self, timeout: float = 60.0) -> str:
        """The head's address as the launcher sees it (``ray get-head-ip``)."""
        if self._head_ip is None:
            out = run(self._ray("get-head-ip", str(self.config_path)), timeout,
                      what="ray get-head-ip", env=self.env)  # fmt: skip
            self._head_ip = out.strip().splitlines()[-1].strip()
        return self._head_ip

    # Background processes ----------------------------------------------------------------

    @contextlib.contextmanager
    def _background(
        self, argv: list[str], what: str, host: str, port: int, timeout: float
    ) -> Iterator[Endpoint]:
        with (self.log.parent / f"{what.replace(' ', '-')}-{port}.log").open("w") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,  # its ssh children share the group we kill
            )
        self._children[proc.pid] = what
        try:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection((host, port), timeout=1.0).close()
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ProvisionError(
                        f"{what} on {host}:{port} not listening after {timeout:.0f}s "
                        f"(exit code {proc.poll()}; log {out.name})"
                    )
                time.sleep(0.2)
            yield Endpoint(host, port)
        finally:
            self._stop(proc.pid)
            self._release_port(port)

    def dashboard(self, timeout: float = 60.0) -> contextlib.AbstractContextManager[Endpoint]:
        """``ray dashboard -p <port> <yaml>``: the launcher's own SSH tunnel to the head's 8265."""
        port = free_port()
        argv = self._ray("dashboard", "-p", str(port), str(self.config_path))
        return self._background(argv, "ray dashboard", "127.0.0.1", port, timeout)

    def tunnel(
        self, target: SshTarget, remote_host: str, remote_port: int, timeout: float = 30.0
    ) -> contextlib.AbstractContextManager[Endpoint]:
        """``ssh -N -L`` from a free loopback port to ``remote_host:remote_port`` via ``target``."""
        port = free_port()
        forward = f"127.0.0.1:{port}:{remote_host}:{remote_port}"
        argv = target.argv(None, "-N", "-o", "ExitOnForwardFailure=yes", "-L", forward)
        return self._background(argv, "ssh tunnel", "127.0.0.1", port, timeout)

    def _stop(self, pid: int, grace: float = 5.0) -> None:
        """SIGTERM the process group we started, SIGKILL it if it lingers."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] != 0:
                    break
            except ChildProcessError:
                if not psutil.pid_exists(pid):
                    break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self._children.pop(pid, None)

    def _release_port(self, port: int) -> None:
        """Stop an ssh of this run that still listens on ``port``.

        ``ray dashboard`` opens its forward through the SSH ControlMaster that an earlier
        ``ray`` command left running (ControlPersist): the master, not the child we stopped,
        holds the listening socket.
        """
        for ssh in self._own_ssh():
            with contextlib.suppress(psutil.Error):
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                    for c in ssh.net_connections(kind="tcp")
                ):
                    ssh.kill()
                    ssh.wait(5)

    def close(self) -> None:
        """Stop every background process still running, and ssh control masters on our key."""
        for pid in list(self._children):
            self._stop(pid)
        for proc in self._own_ssh():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(self.control_dir(), ignore_errors=True)
        with contextlib.suppress(OSError):  # shared by clusters: only when it is empty
            self.control_dir().parent.rmdir()

    # Leaks -------------------------------------------------------------------------------

    def _key_path(self) -> str | None:
        key = self.config.get("auth", {}).get("ssh_private_key")
        return str(Path(key).expanduser()) if key else None

    def control_dir(self) -> Path:
        """Where Ray's SSH runner keeps this cluster's ControlMaster sockets (Ray's own formula).

        Unique per cluster name, so per run; outside the workdir, hence in the inventory.
        """
        user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
        cluster = hashlib.sha256(self.cluster_name.encode()).hexdigest()[:10]
        return Path(f"/tmp/ray_ssh_{user}/{cluster}")

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
        """Files the ``local`` provider keeps outside the workdir (``/tmp/ray/cluster-*``)."""
        from ray._common.utils import get_default_ray_temp_dir

        base = Path(get_default_ray_temp_dir())  # type: ignore[no-untyped-call]
        return [p for s in ("state", "lock") if (p := base / f"cluster-{self.cluster_name}.{s}")
                .exists()]  # fmt: skip

    def remove_state_files(self) -> None:
        for path in self.state_files():
            path.unlink(missing_ok=True)

    def inventory(self) -> list[InventoryItem]:
        items = [
            InventoryItem("process", str(pid), self.run_id, what)
            for pid, what in self._children.items()
            if psutil.pid_exists(pid)
        ]
        items += [
            InventoryItem("process", str(p.pid), self.run_id, "ssh using the run's key")
            for p in self._own_ssh()
            if p.pid not in self._children
        ]
        if self.control_dir().exists():
            items.append(
                InventoryItem("directory", str(self.control_dir()), self.run_id, "ssh sockets")
            )
        items += [InventoryItem("file", str(p), self.run_id, "ray up state") for p in
                  self.state_files()]  # fmt: skip
        if self.leak_query is not None:
            items += self.leak_query()
        return items
