"""The ``ray up`` deployer: Ray's cluster launcher driven onto the machines a source gives.

A ``ray up`` mode is a composition, as ``local`` is ``RayStartMode(LocalHosts())``: a deployer
class given a machine source, declared in a few lines::

    class VmProvisioner(SshRayUpMode):
        OPTIONS = VmMachines.OPTIONS

        def __init__(self) -> None:
            super().__init__(VmMachines())

The deployer owns the sequence (plan; render and check the config before any machine exists;
prepare and reach the machines; write the config; ``ray up``; one wait for every node; the
handle), the teardown order (tunnels, ``ray down``, the machines, Ray's state files, the run's
files, its private dir) and the inventory. The source (:class:`MachineSource`) owns where the
machines come from: its options, its cluster config, its machines and their removal, what of
its own may be left and how a person removes it. A hook that needs the run's state receives a
:class:`RayUpRun` as an argument: a read-only view of the run (spec, launcher, machines,
private dir, the head, SSH). A source never holds its deployer.

Which deployer composes a source is the source's declared shape:

* :class:`SshRayUpMode` takes an :class:`SshMachineSource`: nodes this machine reaches over
  SSH with the run's key, as ``ray up`` itself does (``vm``, ``aws``, ``ibm``). The SSH layer
  probes the nodes, asks the versions, forwards ports and runs scripts over SSH, and adds the
  ``SupportsLauncher`` and ``SupportsNodeExec`` abilities.
* :class:`RayUpMode` takes a :class:`DirectMachineSource`: a Ray this machine reaches without
  SSH (``autoscale``'s head on loopback). The source answers those probes itself, and the mode
  has no SSH abilities (the fixtures check them with ``isinstance``).

Of the steps a source may replace, ``up`` and ``down`` are source methods, with ``ray up`` /
``ray down`` through the launcher as the default in :class:`MachineSourceBase` (a helper base
sources may use): they are steps of the sequence in which a source does its own thing around
the launcher (note that Ray runs on its nodes, name a rehearsal's failed setup command, start
a head itself). ``alive_nodes``, ``versions`` and ``head_address`` (with forwards and scripts)
are how Ray is reached, which is what the shape declares: over SSH they are the SSH
deployer's, so an SSH source never restates them; reached directly they are the source's, and
a source that lacks one fails mypy's check of :class:`DirectMachineSource`.
"""

from __future__ import annotations

import abc
import contextlib
import json
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

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
from provisioners.deployers.launcher import config
from provisioners.deployers.launcher.cli import Launcher
from provisioners.deployers.launcher.config import LAUNCHER_CONFIG
from provisioners.deployers.launcher.ssh import SshTarget, generate_key, remove_key, wait_for_ssh
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


# --- What a source is given: a read-only view of the run ------------------------------------


class SshAccess(Protocol):
    """How the run reaches its nodes over SSH (the SSH deployer's, read-only)."""

    @property
    def user(self) -> str:
        """The SSH user on every node."""
        ...

    @property
    def key(self) -> Path:
        """The run's private key (the user's for their hosts, else one generated for the run)."""
        ...

    def target(self, machine: Machine) -> SshTarget:
        """How this machine dials ``machine`` (the source's checks and jump hosts applied)."""
        ...

    def head_ssh(self, command: str, timeout: float) -> str:
        """Run ``command`` on the head over plain ssh; its output."""
        ...


class RayUpRun:
    """A read-only view of one ``ray up`` run, passed to the source's hooks.

    Everything here is the deployer's state as it is at the call; a source reads it and never
    keeps the view (the next hook is given it again).
    """

    def __init__(self, deployer: RayUpDriver[Any]) -> None:
        self._deployer = deployer

    @property
    def spec(self) -> ClusterSpec:
        """The run's spec; raises before ``provision``."""
        return self._deployer.spec

    @property
    def machines(self) -> tuple[Machine, ...]:
        """The machines as the deployer knows them now, head first (none before they exist)."""
        return tuple(self._deployer.machines)

    @property
    def has_launcher(self) -> bool:
        """Whether the launcher exists yet (the config was written)."""
        return self._deployer.launcher is not None

    @property
    def launcher(self) -> Launcher:
        """The launcher driving ``ray`` for the run; raises before the config is written."""
        return self._deployer.require_launcher()

    @property
    def up_started(self) -> bool:
        """Whether ``up`` ran: Ray may be running on the machines."""
        return self._deployer.up_started

    @property
    def torn_down(self) -> bool:
        """Whether teardown has run once."""
        return self._deployer.torn_down

    def private_dir(self) -> Path:
        """The run's 0700 directory outside the report: keys, credentials, Ray's temp files."""
        return self._deployer.private_dir()

    def head(self) -> Machine:
        """The head machine (asked of the launcher when the provider made it)."""
        return self._deployer.head()

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Alive Ray nodes now, as dicts with ``ip``, ``hostname`` and ``node_id``."""
        return self._deployer.alive_nodes()

    @property
    def ssh(self) -> SshAccess:
        """The run's SSH access; raises when the deployer does not reach nodes over SSH."""
        return self._deployer.ssh_access()


# --- The machine source -----------------------------------------------------------------------


class MachineSource(Protocol):
    """Where a ``ray up`` run's machines come from: the source every ``ray up`` deployer takes."""

    #: The options the source reads; the mode offers them as its own.
    OPTIONS: ClassVar[tuple[Option[Any], ...]]

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        """What this machine lacks for the source, one line each (the deployer adds its own)."""
        ...

    def plan(self, run: RayUpRun) -> None:
        """First hook of a run: check options and worker count; raise ``ProvisionError``."""
        ...

    def planned_machines(self, run: RayUpRun) -> list[Machine]:
        """Stand-ins for the config check before any machine exists (addresses follow)."""
        ...

    def render(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        """The whole cluster config for ``machines``, checked against Ray's schema."""
        ...

    def write_config(self, run: RayUpRun, rendered: Mapping[str, Any]) -> Path:
        """Where ``ray up`` reads the config: the workdir, unless it holds a secret."""
        ...

    def prepare_machines(self, run: RayUpRun, timeout: float) -> list[Machine]:
        """Create (or find) the machines; none when the provider creates them in ``ray up``."""
        ...

    def launcher_env(self, run: RayUpRun) -> dict[str, str]:
        """Extra environment for the ``ray`` CLI."""
        ...

    def launcher_for(self, run: RayUpRun, base: Launcher) -> Launcher:
        """The launcher the run drives: ``base``, or one running ``ray`` in a client container."""
        ...

    def up(self, run: RayUpRun, timeout: float) -> None:
        """Start Ray on the machines (``ray up``)."""
        ...

    def down(self, run: RayUpRun, timeout: float) -> None:
        """Stop Ray (``ray down``); must not raise."""
        ...

    def expected_nodes(self, run: RayUpRun) -> list[Machine]:
        """The nodes the wait after ``up`` names when they never join."""
        ...

    def node_count(self, run: RayUpRun) -> int:
        """How many nodes must be alive (more than :meth:`expected_nodes` when unnamed)."""
        ...

    def gave_up(self, run: RayUpRun) -> str | None:
        """Why the nodes can no longer come (the head process exited), or None."""
        ...

    def discover_machines(self, run: RayUpRun) -> list[Machine]:
        """The machines once every node is alive (a provider-made cluster lists its own)."""
        ...

    def access(self, run: RayUpRun) -> dict[str, str]:
        """How a person reaches the cluster, besides what the deployer says."""
        ...

    def removal_commands(self, run: RayUpRun) -> list[str]:
        """Shell commands that remove what ``--ray-keep-cluster`` kept, in order."""
        ...

    def collect_diagnostics(self, run: RayUpRun, dest: Path) -> None:
        """Copy the source's own logs (a head's, a rehearsal's services) into ``dest``."""
        ...

    def remove_machines(self, run: RayUpRun) -> None:
        """Remove what :meth:`prepare_machines` created. Idempotent; after a half-done one too."""
        ...

    def remove_files(self, run: RayUpRun) -> None:
        """The source's files of the run outside the workdir (a config holding a secret)."""
        ...

    def leak_query(self, run: RayUpRun) -> list[InventoryItem]:
        """What the source created that still exists (containers, instances, processes)."""
        ...


class SshMachineSource(MachineSource, Protocol):
    """A source whose nodes this machine reaches over SSH: what :class:`SshRayUpMode` needs."""

    #: True: the dashboard's forward is ``ray dashboard``; False: an SSH tunnel as every other
    #: port (a cloud's security group then opens no port for it).
    DASHBOARD_BY_LAUNCHER: ClassVar[bool]

    def identity(self, run: RayUpRun) -> tuple[str, Path | None]:
        """The SSH user and private key; no key means a fresh one for this run."""
        ...

    def setup_packages(self) -> list[str]:
        """Python modules the config's ``setup_commands`` install on every node."""
        ...

    def ssh_target(self, run: RayUpRun, machine: Machine, target: SshTarget) -> SshTarget:
        """How ``machine`` is dialed, given the plain ``target`` (a refused address, a jump)."""
        ...

    def ray_host(self, run: RayUpRun) -> str:
        """The head's address Ray listens on (a floating IP is NAT in front of it)."""
        ...


class DirectMachineSource(MachineSource, Protocol):
    """A source whose Ray this machine reaches without SSH: it answers the deployer's probes."""

    def head_address(self, run: RayUpRun) -> str:
        """The GCS address, ``HOST:PORT``."""
        ...

    def alive_nodes(self, run: RayUpRun) -> list[dict[str, Any]]:
        """Alive Ray nodes, as dicts with ``ip``, ``hostname`` and ``node_id``."""
        ...

    def versions(self, run: RayUpRun) -> tuple[str, str]:
        """The cluster's Ray version and Python ``major.minor``."""
        ...

    def port_forward(
        self, run: RayUpRun, remote_port: int
    ) -> contextlib.AbstractContextManager[Endpoint]:
        """Reach the head's ``remote_port`` on loopback (``Provisioner.port_forward``)."""
        ...

    def run_in_cluster(self, run: RayUpRun, script: str, timeout: float) -> str:
        """Run a script beside the head with ``RAY_ADDRESS`` set; its stdout."""
        ...


class MachineSourceBase:
    """Defaults of :class:`MachineSource` a source may inherit: the config from its template,
    ``ray up`` / ``ray down`` through the launcher, nothing of its own to remove or list.

    It keeps the run's spec from :meth:`plan` (a value, not the deployer): a source that
    overrides ``plan`` calls it first.
    """

    #: The cluster YAML template under ``provisioners/templates/``.
    TEMPLATE: ClassVar[str]
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (LAUNCHER_CONFIG,)
    DASHBOARD_BY_LAUNCHER: ClassVar[bool] = True

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None

    @property
    def spec(self) -> ClusterSpec:
        if self._spec is None:
            raise RuntimeError(f"{type(self).__name__}: not provisioned")
        return self._spec

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        return []

    def plan(self, run: RayUpRun) -> None:
        self._spec = run.spec

    def planned_machines(self, run: RayUpRun) -> list[Machine]:
        return []

    def template_values(self, run: RayUpRun) -> Mapping[str, object]:
        """``${field}`` values of the template (``cluster_name`` is always given)."""
        return {}

    def provider_section(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        """The source's keys laid over the template: ``provider``, ``max_workers``, ..."""
        return {}

    def render(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        spec = run.spec
        name = run_name(spec.run_id, spec.mode)
        values = {"cluster_name": name, **self.template_values(run)}
        provider = config.deep_merge({"cluster_name": name}, self.provider_section(run, machines))
        overrides = config.load_user_overrides(spec.get(LAUNCHER_CONFIG))
        rendered = config.render(self.TEMPLATE, values, provider, overrides)
        config.validate(rendered, source=f"{spec.mode} cluster config")
        return rendered

    def write_config(self, run: RayUpRun, rendered: Mapping[str, Any]) -> Path:
        return config.write(rendered, run.spec.workdir)

    def prepare_machines(self, run: RayUpRun, timeout: float) -> list[Machine]:
        return []

    def launcher_env(self, run: RayUpRun) -> dict[str, str]:
        return {}

    def launcher_for(self, run: RayUpRun, base: Launcher) -> Launcher:
        return base

    def up(self, run: RayUpRun, timeout: float) -> None:
        run.launcher.up(timeout)

    def down(self, run: RayUpRun, timeout: float) -> None:
        if run.has_launcher:
            run.launcher.down(timeout)

    def expected_nodes(self, run: RayUpRun) -> list[Machine]:
        return list(run.machines)

    def node_count(self, run: RayUpRun) -> int:
        return len(self.expected_nodes(run))

    def gave_up(self, run: RayUpRun) -> str | None:
        return None

    def discover_machines(self, run: RayUpRun) -> list[Machine]:
        return list(run.machines)

    def access(self, run: RayUpRun) -> dict[str, str]:
        return {}

    def removal_commands(self, run: RayUpRun) -> list[str]:
        return [run.launcher.down_command()] if run.has_launcher else []

    def collect_diagnostics(self, run: RayUpRun, dest: Path) -> None:
        pass

    def remove_machines(self, run: RayUpRun) -> None:
        pass

    def remove_files(self, run: RayUpRun) -> None:
        pass

    def leak_query(self, run: RayUpRun) -> list[InventoryItem]:
        return []

    # Defaults of SshMachineSource.

    def setup_packages(self) -> list[str]:
        return []

    def ssh_target(self, run: RayUpRun, machine: Machine, target: SshTarget) -> SshTarget:
        return target

    def ray_host(self, run: RayUpRun) -> str:
        return run.head().ip


# --- The deployer -----------------------------------------------------------------------------

S = TypeVar("S", bound=MachineSource)
D = TypeVar("D", bound=DirectMachineSource)
H = TypeVar("H", bound=SshMachineSource)


class RayUpDriver(abc.ABC, Generic[S]):
    """The ``ray up`` sequence and teardown order over a source; how Ray is reached is the
    subclass's (:class:`RayUpMode`, :class:`SshRayUpMode`)."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (LAUNCHER_CONFIG,)

    def __init__(self, source: S) -> None:
        self.source = source
        #: What the source's hooks are given.
        self.run = RayUpRun(self)
        self._spec: ClusterSpec | None = None
        self.machines: list[Machine] = []
        self.launcher: Launcher | None = None
        self.up_started = False  # `up` ran: Ray may be running somewhere
        self.torn_down = False
        self._held = False  # this provision holds the run (runstate)
        # The source was handed the run (plan); before that it made nothing and knows no spec.
        self._planned = False

    # --- How Ray is reached: the subclass's ---------------------------------------------------

    @abc.abstractmethod
    def alive_nodes(self) -> list[dict[str, Any]]:
        """Alive Ray nodes, as dicts with ``ip``, ``hostname`` and ``node_id``."""

    @abc.abstractmethod
    def versions(self) -> tuple[str, str]:
        """The cluster's Ray version and Python ``major.minor``."""

    @abc.abstractmethod
    def head_address(self) -> str:
        """The GCS address, ``HOST:PORT``."""

    @abc.abstractmethod
    def access(self) -> dict[str, str]:
        """How a person reaches the cluster (printed by ``--ray-keep-cluster``)."""

    def ssh_access(self) -> SshAccess:
        raise RuntimeError(f"{type(self).__name__} does not reach its nodes over SSH")

    def head(self) -> Machine:
        if self.machines:
            return self.machines[0]
        return Machine("head", self.require_launcher().head_ip())  # the provider made it

    def prepare_access(self) -> None:
        """Credentials the config names (an SSH key), before the first render."""

    def reach(self, machines: Sequence[Machine], timeout: float) -> None:
        """Wait until the machines answer (sshd) before ``ray up`` talks to them."""

    def remove_access(self) -> None:
        """Files of the access layer (a generated key)."""

    def node_logs(self, dest: Path) -> None:
        """Copy each node's Ray logs into ``dest``."""

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
        mine = [] if ray_cli() else ["no `ray` CLI beside the interpreter or on PATH"]
        return mine + self.source.missing_prerequisites(spec)

    def render(self, machines: Sequence[Machine]) -> dict[str, Any]:
        return self.source.render(self.run, machines)

    def private_dir(self) -> Path:
        """The mode's 0700 directory outside the report: keys, credentials, Ray's temp files."""
        return runstate.private_dir(self.spec.run_id, self.spec.mode)

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        source, run = self.source, self.run
        self._spec = spec
        runstate.hold(spec.run_id)
        self._held = True
        started = time.monotonic()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        self._planned = True
        source.plan(run)
        self.prepare_access()
        # Everything that can fail on bad input fails here, before any machine exists.
        self.render(source.planned_machines(run))
        self.machines = source.prepare_machines(run, spec.deadline.left())
        if self.machines:
            self.reach(self.machines, spec.deadline.left(spec.timeouts.preflight))
        path = source.write_config(run, self.render(self.machines))
        self.launcher = source.launcher_for(
            run,
            Launcher(
                path,
                run_id=spec.run_id,
                log=spec.workdir / "launcher.log",
                env={**runstate.run_env(spec.run_id, spec.mode), **source.launcher_env(run)},
                progress=spec.progress,
                tmp_dir=self.private_dir() / "tmp",
            ),
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
        self.up_started = True
        source.up(run, spec.deadline.left())
        spec.progress(f"started in {time.monotonic() - started:.1f} s; waiting for the nodes")
        alive = self._wait_nodes(spec.deadline.left(spec.timeouts.node_join))
        self.machines = source.discover_machines(run)
        spec.progress(f"{len(alive)} node(s) alive in {time.monotonic() - started:.1f} s")
        ray_version, python_version = self.versions()
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=source.node_count(run),
            ray_version=ray_version,
            python_version=python_version,
            head_address=self.head_address(),
            access={
                "config": str(path),
                **self.access(),
                "remove": "; ".join(source.removal_commands(run)),
            },
        )

    def _wait_nodes(self, timeout: float) -> list[dict[str, Any]]:
        """Wait once for every expected node; the error names each that never joined."""
        count = self.source.node_count(self.run)
        try:
            return wait_for_nodes(
                self.alive_nodes,
                count,
                timeout=timeout,
                # An autoscaling cluster may have added workers beyond the expected ones.
                at_least=True,
                expected={m.ip: f"{m.name} ({m.ip})" for m in self.source.expected_nodes(self.run)},
                on_change=lambda alive: self.spec.progress(f"{alive}/{count} node(s) alive"),
                give_up=lambda: self.source.gave_up(self.run),
                interval=1.0,  # each probe is an ssh round trip to the head
            )
        except WaitTimeout as exc:
            raise ProvisionError(str(exc)) from None

    # --- Teardown and leaks -------------------------------------------------------------------

    def teardown(self) -> None:
        if self._spec is None:
            return
        first = not self.torn_down
        self.torn_down = True
        try:
            if self.launcher is not None:
                self.launcher.close()  # tunnels first: they hold ssh sessions to the head
            if first and self.up_started:
                self.source.down(self.run, self.spec.timeouts.teardown * RAY_DOWN_SHARE)
            if self.launcher is not None:
                self.launcher.close()  # `ray down`'s own ssh control masters
            if self._planned:
                self.source.remove_machines(self.run)
            if self.launcher is not None:
                self.launcher.remove_state_files()
            self.remove_access()
            if self._planned:
                self.source.remove_files(self.run)
            runstate.remove_private_dir(self.spec.run_id, self.spec.mode)
        finally:
            if self._held:
                self._held = False
                runstate.release(self.spec.run_id)

    def inventory(self) -> list[InventoryItem]:
        if self._spec is None:
            return []
        items = self.launcher.inventory() if self.launcher else []
        items += self.source.leak_query(self.run) if self._planned else []
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
        self.source.collect_diagnostics(self.run, dest)


class RayUpMode(RayUpDriver[D], Generic[D]):
    """``ray up`` onto a :class:`DirectMachineSource`: its Ray is reached without SSH, so the
    source answers the probes, forwards and scripts, and the mode has no SSH abilities."""

    def alive_nodes(self) -> list[dict[str, Any]]:
        return self.source.alive_nodes(self.run)

    def versions(self) -> tuple[str, str]:
        return self.source.versions(self.run)

    def head_address(self) -> str:
        return self.source.head_address(self.run)

    def access(self) -> dict[str, str]:
        return self.source.access(self.run)

    # --- Provisioner ------------------------------------------------------------------------

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        return self.source.port_forward(self.run, remote_port)

    def run_in_cluster(self, script: str, timeout: float) -> str:
        return self.source.run_in_cluster(self.run, script, timeout)


class _SshAccess:
    """The SSH deployer's :class:`SshAccess`, read-only."""

    def __init__(self, deployer: SshRayUpMode[Any]) -> None:
        self._deployer = deployer

    @property
    def user(self) -> str:
        return self._deployer.ssh_user

    @property
    def key(self) -> Path:
        if self._deployer.ssh_key is None:
            raise RuntimeError("no SSH key yet")
        return self._deployer.ssh_key

    def target(self, machine: Machine) -> SshTarget:
        return self._deployer.target(machine)

    def head_ssh(self, command: str, timeout: float) -> str:
        return self._deployer.head_ssh(command, timeout)


class SshRayUpMode(RayUpDriver[H], Generic[H]):
    """``ray up`` onto an :class:`SshMachineSource`: nodes reached over SSH with the run's key.

    Adds the launcher abilities (``ray exec``, plain ssh to the head) and ``node_exec``;
    forwards go through ``ray dashboard`` or SSH tunnels, as the source declares.
    """

    def __init__(self, source: H) -> None:
        super().__init__(source)
        self.ssh_user = "root"
        self.ssh_key: Path | None = None
        self._generated_key: Path | None = None

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        mine = [] if ray_cli() else ["no `ray` CLI beside the interpreter or on PATH"]
        # `ray up` reaches nodes with ssh and copies file mounts with rsync from here.
        mine += [
            f"`{tool}` not on PATH"
            for tool in ("ssh", "ssh-keygen", "rsync")
            if shutil.which(tool) is None
        ]
        return mine + self.source.missing_prerequisites(spec)

    def ssh_access(self) -> SshAccess:
        return _SshAccess(self)

    def prepare_access(self) -> None:
        self.ssh_user, key = self.source.identity(self.run)
        if key is None:
            # Outside the report: the run's private dir (removed at teardown).
            key = self._generated_key = generate_key(self.private_dir())
        self.ssh_key = key

    def reach(self, machines: Sequence[Machine], timeout: float) -> None:
        wait_for_ssh([self.target(m) for m in machines], timeout)

    def remove_access(self) -> None:
        if self._generated_key is not None:
            remove_key(self._generated_key)

    def target(self, machine: Machine) -> SshTarget:
        """How the run dials ``machine``: every ssh of the run (probes, tunnels, node_exec)."""
        if self.ssh_key is None:
            raise RuntimeError("no SSH key yet")
        plain = SshTarget(machine.ip, self.ssh_user, self.ssh_key)
        return self.source.ssh_target(self.run, machine, plain)

    def head_address(self) -> str:
        return f"{self.source.ray_host(self.run)}:{GCS_PORT}"

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
            **self.source.access(self.run),
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
        if remote_port == DASHBOARD_PORT and self.source.DASHBOARD_BY_LAUNCHER:
            return launcher.dashboard(timeout=self.spec.timeouts.preflight)
        # Ray's services on the head listen on its own address, not its loopback.
        host = self.source.ray_host(self.run) if remote_port == CLIENT_PORT else "127.0.0.1"
        return launcher.tunnel(self.target(self.head()), host, remote_port)

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

    def setup_packages(self) -> list[str]:
        return self.source.setup_packages()

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
