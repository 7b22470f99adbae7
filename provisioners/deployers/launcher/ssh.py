"""Plain SSH to a run's nodes: the run's own key, one target per node, and the wait for sshd."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioners.contract.base import ProvisionError
from provisioners.util.runner import CommandError, run
from provisioners.util.waits import WaitTimeout, wait_for


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node over plain ssh with the run's key."""

    host: str
    user: str
    key: Path
    connect_timeout: float = 10.0
    port: int = 22
    #: A node with a private address only is reached through another (a cloud's head).
    jump: SshTarget | None = None

    def options(self) -> list[str]:
        via = (
            ["-o", f"ProxyCommand={shlex.join(self.jump.argv(None, '-W', '%h:%p'))}"]
            if self.jump
            else []
        )
        return [
            *via,
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            # Run nodes are new each run: their host keys cannot be known in advance.
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            f"ConnectTimeout={max(1, int(self.connect_timeout))}",
            "-o",
            "ServerAliveInterval=5",
            "-p",
            str(self.port),
        ]

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
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ray-conformance"]
        run([*argv, "-f", str(key)], 30, what="ssh-keygen")
    return key


def remove_key(key: Path) -> None:
    for path in (key, Path(f"{key}.pub")):
        path.unlink(missing_ok=True)


def wait_for_ssh(targets: Sequence[SshTarget], timeout: float) -> None:
    """Wait until every target runs ``true`` over ssh; the error names the hosts that never did."""
    pending = {t.host: t for t in targets}
    last: dict[str, str] = {}

    def all_answered() -> bool:
        for host, target in list(pending.items()):
            probe = dataclasses.replace(target, connect_timeout=min(5.0, timeout))
            try:
                run(probe.argv("true"), min(8.0, timeout), what=f"ssh {host}")
                del pending[host]
            except (ProvisionError, CommandError) as e:
                last[host] = str(e).splitlines()[-1][:200]
        return not pending

    try:
        wait_for(all_answered, timeout=timeout, what="ssh on every node", interval=1.0)
    except WaitTimeout:
        detail = "; ".join(f"{h}: {last.get(h, '?')}" for h in pending)
        raise ProvisionError(
            f"ssh did not answer within {timeout:.0f} s on {', '.join(pending)} ({detail})"
        ) from None
