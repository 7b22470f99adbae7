"""One driver for every ``ray up`` mode: the sequence, the teardown order and the inventory.

A launcher mode subclasses :class:`RayUpMode` (or :class:`SshRayUpMode` when it reaches its nodes
over SSH, as ``ray up`` itself does) and supplies only what differs between modes:

* ``TEMPLATE`` and :meth:`~RayUpMode.provider_section`: its part of the cluster YAML;
* :meth:`~RayUpMode.prepare_machines` / :meth:`~RayUpMode.remove_machines`: where its machines
  come from (containers, a user's hosts; nothing when the provider creates them in ``ray up``,
  which then lists them in :meth:`~RayUpMode.discover_machines` and sizes the wait with
  :meth:`~RayUpMode.node_count`);
* :meth:`~RayUpMode.leak_query` and :meth:`~RayUpMode.removal_commands`: what of its own may be
  left, and how a person removes it;
* rarely its own :meth:`~RayUpMode.up` / :meth:`~RayUpMode.down` (``autoscale`` starts a head).

A base class rather than a composed driver: a mode is a handful of hooks, and every
``Provisioner`` method (and the launcher abilities) comes with it, so a new ``ray up`` mode is
its hooks and nothing else. The abilities stay opt-in: :class:`SshRayUpMode` adds
``SupportsLauncher`` and ``SupportsNodeExec``, which a mode without SSH to nodes must not claim.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.launcher import config
from provisioners.launcher.cli import Launcher
from provisioners.launcher.config import LAUNCHER_CONFIG
from provisioners.launcher.ssh import SshTarget, generate_key, remove_key, wait_for_ssh
from provisioners.util import runstate
from provisioners.util.naming import run_name
from provisioners.util.processes import ray_cli
from provisioners.util.runner import CommandError
from provisioners.util.waits import WaitTimeout, wait_for_nodes

GCS_PORT = 6379
#: `ray down`'s share of the teardown time: removing the machines and files after it must still
#: fit when it hangs.
RAY_DOWN_SHARE = 0.4

#: Alive nodes as the head's state API lists them, printed as JSON (run on the head over ssh).
ALIVE_PROBE = (
    "import json, urllib.request;"
    f"d = json.load(urllib.request.urlopen('http://127.0.0.1:{DASHBOARD_PORT}"
    "/api/v0/nodes?limit=10000', timeout=5));"
    "print(json.dumps([{'ip': n.get('node_ip', ''), 'hostname': n.get('node_name', ''),"
    " 'node_id': n.get('node_id', '')} for n in d['data']['result']['result']"
    " if n.get('state') == 'ALIVE']))"
)


@dataclass(frozen=True)
class Machine:
    """One node as the mode knows it: a name a person recognises, and the address Ray uses."""

    name: str  # container name, instance id, or the host as the user gave it
    ip: str


class RayUpMode:
    """The ``ray up`` sequence and teardown order; subclasses supply the hooks below."""

    #: The cluster YAML template under ``provisioners/templates/``.
    TEMPLATE: ClassVar[str]
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (LAUNCHER_CONFIG,)

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self.machines: list[Machine] = []
        self.launcher: Launcher | None = None
        self._up_started = False  # `up` ran: Ray may be running somewhere
        self._torn_down = False
        self._held = False  # this provision holds the run (runstate)

    # --- Hooks: what a mode supplies ----------------------------------------------------------

    def plan(self, spec: ClusterSpec) -> None:
        """Check the mode's options and worker count; raise ``ProvisionError`` saying what."""

    def template_values(self) -> Mapping[str, object]:
        """``${field}`` values of the template (``cluster_name`` is always given)."""
        return {}

    def provider_section(self, machines: Sequence[Machine]) -> dict[str, Any]:
        """The mode's keys laid over the template: ``provider``, ``max_workers``, ..."""
        return {}

    def planned_machines(self) -> list[Machine]:
        """Stand-ins for the schema check before any machine exists (addresses follow)."""
        return []

    def prepare_machines(self, timeout: float) -> list[Machine]:
        """Create (or find) the machines; none when the provider creates them in ``ray up``."""
        return []

    def remove_machines(self) -> None:
        """Remove what :meth:`prepare_machines` created. Idempotent; after a half-done one too."""

    def leak_query(self) -> list[InventoryItem]:
        """What the mode created that still exists (containers, instances, security groups)."""
        return []

    def removal_commands(self) -> list[str]:
        """Shell commands that remove what ``--ray-keep-cluster`` kept, in order."""
        return [self.require_launcher().down_command()] if self.launcher else []

    def launcher_env(self) -> dict[str, str]:
        """Extra environment for the ``ray`` CLI."""
        return {}

    def up(self, timeout: float) -> None:
        """Start Ray on the machines (``ray up``)."""
        self.require_launcher().up(timeout)

    def down(self, timeout: float) -> None:
        """Stop Ray (``ray down``); must not raise."""
        if self.launcher is not None:
            self.launcher.down(timeout)

    def expected_nodes(self) -> list[Machine]:
        """The nodes the wait after :meth:`up` names when they never join."""
        return self.machines

    def discover_machines(self) -> list[Machine]:
        """The machines once every node is alive (a provider-made cluster lists its own)."""
        return self.machines

    def node_count(self) -> int:
        """How many nodes must be alive (more than :meth:`expected_nodes` when unnamed)."""
        return len(self.expected_nodes())

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Alive Ray nodes, as dicts with ``ip``, ``hostname`` and ``node_id``."""
        raise NotImplementedError

    def gave_up(self) -> str | None:
        """Why the nodes can no longer come (the head process exited), or None."""
        return None

    def head_address(self) -> str:
        raise NotImplementedError

    def versions(self) -> tuple[str, str]:
        """The cluster's Ray version and Python ``major.minor``."""
        raise NotImplementedError

    def access(self) -> dict[str, str]:
        """How a person reaches the cluster (printed by ``--ray-keep-cluster``)."""
        return {}

    def node_logs(self, dest: Path) -> None:
        """Copy each node's Ray logs into ``dest``."""

    # --- Steps an ability layer adds (SSH) ----------------------------------------------------

    def prepare_access(self) -> None:
        """Credentials the config names (an SSH key), before the first render."""

    def reach(self, machines: Sequence[Machine], timeout: float) -> None:
        """Wait until the machines answer (sshd) before ``ray up`` talks to them."""

    def remove_files(self) -> None:
        """Files of the run outside the workdir, or secrets in it (generated keys)."""

    def write_config(self, rendered: Mapping[str, Any]) -> Path:
        """Where ``ray up`` reads the config: the workdir, unless it holds a secret."""
        return config.write(rendered, self.spec.workdir)

    # --- The sequence -------------------------------------------------------------------------

    @property
    def spec(self) -> ClusterSpec:
        if self._spec is None:
            raise RuntimeError(f"{type(self).__name__}: not provisioned")
        return self._spec

    def require_launcher(self) -> Launcher:
        if self.launcher is None:
            raise RuntimeError("not provisioned")
        return self.launcher

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        return [] if ray_cli() else ["no `ray` CLI beside the interpreter or on PATH"]

    def render(self, machines: Sequence[Machine]) -> dict[str, Any]:
        spec = self.spec
        name = run_name(spec.run_id, spec.mode)
        values = {"cluster_name": name, **self.template_values()}
        provider = config.deep_merge({"cluster_name": name}, self.provider_section(machines))
        overrides = config.load_user_overrides(spec.get(LAUNCHER_CONFIG))
        rendered = config.render(self.TEMPLATE, values, provider, overrides)
        config.validate(rendered, source=f"{spec.mode} cluster config")
        return rendered

    def private_dir(self) -> Path:
        """The mode's 0700 directory outside the report: keys, credentials, Ray's temp files."""
        return runstate.private_dir(self.spec.run_id, self.spec.mode)

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        runstate.hold(spec.run_id)
        self._held = True
        started = time.monotonic()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        self.plan(spec)
        self.prepare_access()
        # Everything that can fail on bad input fails here, before any machine exists.
        self.render(self.planned_machines())
        self.machines = self.prepare_machines(spec.deadline.left())
        if self.machines:
            self.reach(self.machines, spec.deadline.left(spec.timeouts.preflight))
        path = self.write_config(self.render(self.machines))
        self.launcher = Launcher(
            path,
            run_id=spec.run_id,
            log=spec.workdir / "launcher.log",
            env={**runstate.run_env(spec.run_id, spec.mode), **self.launcher_env()},
            progress=spec.progress,
            tmp_dir=self.private_dir() / "tmp",
        )
        # Before `ray up`: Ray's files of this cluster outside the run's dirs, for a sweep.
        runstate.note(
            spec.run_id,
            spec.mode,
            "ray-cluster",
            name=self.launcher.cluster_name,
            tmp_dir=str(self.launcher.tmp_dir),
        )
        spec.progress(
            f"starting Ray on {len(self.machines)} machine(s)" if self.machines else "starting Ray"
        )
        self._up_started = True
        self.up(spec.deadline.left())
        spec.progress(f"started in {time.monotonic() - started:.1f} s; waiting for the nodes")
        alive = self._wait_nodes(spec.deadline.left(spec.timeouts.node_join))
        self.machines = self.discover_machines()
        spec.progress(f"{len(alive)} node(s) alive in {time.monotonic() - started:.1f} s")
        ray_version, python_version = self.versions()
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=self.node_count(),
            ray_version=ray_version,
            python_version=python_version,
            head_address=self.head_address(),
            access={
                "config": str(path),
                **self.access(),
                "remove": "; ".join(self.removal_commands()),
            },
        )

    def _wait_nodes(self, timeout: float) -> list[dict[str, Any]]:
        """Wait once for every expected node; the error names each that never joined."""
        count = self.node_count()
        try:
            return wait_for_nodes(
                self.alive_nodes,
                count,
                timeout=timeout,
                # An autoscaling cluster may have added workers beyond the expected ones.
                at_least=True,
                expected={m.ip: f"{m.name} ({m.ip})" for m in self.expected_nodes()},
                on_change=lambda alive: self.spec.progress(f"{alive}/{count} node(s) alive"),
                give_up=self.gave_up,
                interval=1.0,  # each probe is an ssh round trip to the head
            )
        except WaitTimeout as exc:
            raise ProvisionError(str(exc)) from None

    # --- Teardown and leaks -------------------------------------------------------------------

    def teardown(self) -> None:
        if self._spec is None:
            return
        first = not self._torn_down
        self._torn_down = True
        try:
            if self.launcher is not None:
                self.launcher.close()  # tunnels first: they hold ssh sessions to the head
            if first and self._up_started:
                self.down(self.spec.timeouts.teardown * RAY_DOWN_SHARE)
            if self.launcher is not None:
                self.launcher.close()  # `ray down`'s own ssh control masters
            self.remove_machines()
            if self.launcher is not None:
                self.launcher.remove_state_files()
            self.remove_files()
            runstate.remove_private_dir(self.spec.run_id, self.spec.mode)
        finally:
            if self._held:
                self._held = False
                runstate.release(self.spec.run_id)

    def inventory(self) -> list[InventoryItem]:
        if self._spec is None:
            return []
        items = self.launcher.inventory() if self.launcher else []
        items += self.leak_query()
        private = runstate.private_path(self.spec.run_id, self.spec.mode)
        if private.exists():
            items.append(
                InventoryItem(
                    "directory",
                    str(private),
                    self.spec.run_id,
                    "the run's keys and Ray's temp files",
                )
            )
        return list({(i.kind, i.name): i for i in items}.values())

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if self._spec is None:
            return
        for name in ("cluster.yaml", "launcher.log"):
            if (self.spec.workdir / name).exists():
                shutil.copy2(self.spec.workdir / name, dest / name)
        self.node_logs(dest)


class SshRayUpMode(RayUpMode):
    """A ``ray up`` mode whose nodes this machine reaches over SSH with the run's key.

    Adds the launcher abilities (``ray exec``, plain ssh to the head) and ``node_exec``;
    forwards go through ``ray dashboard`` (the dashboard) and SSH tunnels (everything else).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ssh_user = "root"
        self.ssh_key: Path | None = None
        self._generated_key: Path | None = None

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        # `ray up` reaches nodes with ssh and copies file mounts with rsync from here.
        return super().missing_prerequisites(spec) + [
            f"`{tool}` not on PATH"
            for tool in ("ssh", "ssh-keygen", "rsync")
            if shutil.which(tool) is None
        ]

    def identity(self) -> tuple[str, Path | None]:
        """The SSH user and private key; no key means a fresh one for this run."""
        return "root", None

    def setup_packages(self) -> list[str]:
        """Python modules the template's ``setup_commands`` install on every node."""
        return []

    def prepare_access(self) -> None:
        self.ssh_user, key = self.identity()
        if key is None:
            # Outside the report: the run's private dir (removed at teardown).
            key = self._generated_key = generate_key(self.private_dir())
        self.ssh_key = key

    def reach(self, machines: Sequence[Machine], timeout: float) -> None:
        wait_for_ssh([self.target(m) for m in machines], timeout)

    def remove_files(self) -> None:
        if self._generated_key is not None:
            remove_key(self._generated_key)

    def target(self, machine: Machine) -> SshTarget:
        if self.ssh_key is None:
            raise RuntimeError("no SSH key yet")
        return SshTarget(machine.ip, self.ssh_user, self.ssh_key)

    def head(self) -> Machine:
        if self.machines:
            return self.machines[0]
        return Machine("head", self.require_launcher().head_ip())  # the provider made it

    def head_address(self) -> str:
        return f"{self.head().ip}:{GCS_PORT}"

    def alive_nodes(self) -> list[dict[str, Any]]:
        out = self.head_ssh(f"python -c {shlex.quote(ALIVE_PROBE)}", 20)
        nodes: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
        return nodes

    def versions(self) -> tuple[str, str]:
        out = self.head_ssh(
            "python -c 'import sys, ray; print(ray.__version__, \"%d.%d\" % sys.version_info[:2])'",
            60,
        )
        ray_version, python_version = out.strip().splitlines()[-1].split()
        return ray_version, python_version

    def access(self) -> dict[str, str]:
        launcher = self.require_launcher()
        return {
            "ssh": shlex.join(self.target(self.head()).argv()),
            "dashboard": launcher.command("dashboard"),
            "exec": launcher.command("exec") + " 'ray status'",
        }

    def node_logs(self, dest: Path) -> None:
        for machine in self.machines:
            with contextlib.suppress(Exception):
                out = self.target(machine).run(
                    "tail -n 200 /tmp/ray/session_latest/logs/{raylet.out,monitor.log,gcs_server.out}"
                    " 2>&1; ray status 2>&1 | tail -n 40",
                    30,
                )
                (dest / f"{machine.name}.log").write_text(out)

    # --- Provisioner ------------------------------------------------------------------------

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        launcher = self.require_launcher()
        if remote_port == DASHBOARD_PORT:
            return launcher.dashboard(timeout=self.spec.timeouts.preflight)
        # Ray's services on the head listen on its own address, not its loopback.
        head = self.head()
        host = head.ip if remote_port == CLIENT_PORT else "127.0.0.1"
        return launcher.tunnel(self.target(head), host, remote_port)

    def run_in_cluster(self, script: str, timeout: float) -> str:
        command = f"RAY_ADDRESS={self.head_address()} python -"
        try:
            return self.target(self.head()).run(command, timeout, stdin=script)
        except (CommandError, ProvisionError) as e:
            raise RuntimeError(str(e)) from None

    # --- SupportsLauncher -------------------------------------------------------------------

    def cluster_config(self) -> Path:
        return self.require_launcher().config_path

    def launcher_exec(self, command: str, timeout: float) -> str:
        return self.require_launcher().exec(command, timeout)

    def head_ssh(self, command: str, timeout: float) -> str:
        return self.target(self.head()).run(command, timeout)

    # --- SupportsNodeExec -------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [m.name for m in self.machines]

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        match = [m for m in self.machines if m.name == node]
        if not match:
            raise RuntimeError(f"no node {node!r}; nodes: {self.node_names()}")
        try:
            return self.target(match[0]).run(shlex.join(argv), timeout)
        except (CommandError, ProvisionError) as e:
            raise RuntimeError(str(e)) from None
