"""The ``ray start`` deployer: a head and workers joined to it, on hosts a node source gives.

A mode made this way is :class:`RayStartMode` given a :class:`NodeHosts`. The deployer owns
Ray: the ``ray start`` commands, the head's ports, the waits, the handle, port-forward,
in-cluster scripts, the drain at teardown and head loss. The node source owns where the
processes run and what they leave behind: its directories, processes or containers, its inventory.
``local`` is this deployer on processes of this machine (:mod:`provisioners.sources.local`), ``docker``
on containers of one engine (:mod:`provisioners.sources.docker`); a vendor's node source plugs in
the same way (tests/vendor_example).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    DEFAULT_WORKERS,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.util import runstate
from provisioners.util.relay import tcp_relay
from provisioners.util.waits import NodesTimeout, WaitTimeout, urlopen_ok, wait_for, wait_for_nodes

#: How long `ray start --block` may drain its node after SIGTERM before the source kills it.
STOP_GRACE_S = 8.0
#: The head's ports by role, as `ray start --head` takes them and port_forward serves them.
_ROLES = {"gcs": "--port", "dashboard": "--dashboard-port", "client": "--ray-client-server-port"}
_FORWARDS = {CLIENT_PORT: "client", DASHBOARD_PORT: "dashboard"}


class ScriptResult(Protocol):
    """A finished in-cluster script (``subprocess.CompletedProcess`` is one)."""

    @property
    def returncode(self) -> int: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


class RayNode(Protocol):
    """One ``ray start --block`` a source started: the deployer waits on it and stops it."""

    @property
    def what(self) -> str:
        """How messages name it: "head", "worker1", "node container rc-1-docker-head"."""
        ...

    @property
    def hostname(self) -> str:
        """The hostname Ray lists it under where each node has its own, else "" (shared)."""
        ...

    def ip(self) -> str:
        """Its IP as Ray lists the node (kill_head returns the head's)."""
        ...

    def exited(self) -> int | None:
        """Its exit code once it has exited, else None."""
        ...

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM): ``ray start --block`` then drains its node and exits."""
        ...

    def kill(self) -> None:
        """Kill the node's every process at once (the head-loss check)."""
        ...

    def last_words(self) -> str:
        """Where its output is and its last lines, for a message saying why it died."""
        ...


class NodeHosts(Protocol):
    """Where ``ray start`` nodes run: the node source of :class:`RayStartMode`."""

    #: The options the source declares; the mode offers them as its own.
    OPTIONS: ClassVar[tuple[Option[Any], ...]]
    #: Workers start right beside the head, not once it is up (their `ray start` retries the GCS).
    WORKERS_WITH_HEAD: ClassVar[bool]

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        """What this machine lacks for the source, one line each; empty when it can run."""
        ...

    def open(self, spec: ClusterSpec) -> None:
        """Make what the nodes need before the first starts (directories, the run's notes)."""
        ...

    def address(self) -> str:
        """Where this machine reaches the head's dashboard and client ports."""
        ...

    def head_address(self) -> str:
        """The head's address as the nodes reach it (workers' and in-cluster RAY_ADDRESS)."""
        ...

    def dashboard_host(self) -> str:
        """The address the head's dashboard listens on (``--dashboard-host``)."""
        ...

    def port(self, role: str) -> int:
        """The head's port for ``role`` ("gcs", "dashboard", "client"), as ``ray start`` takes it."""
        ...

    def outside_port(self, port: int) -> int:
        """The port on :meth:`address` reaching the head's ``port`` (asked once the head started)."""
        ...

    def node_args(self) -> list[str]:
        """``ray start`` flags every node needs on this source (its IP, temp dir, ports)."""
        ...

    def start(self, name: str, argv: list[str]) -> RayNode:
        """Start ``argv`` (``ray start --block ...``, without the ``ray``) as node ``name``."""
        ...

    def versions(self, head: RayNode, timeout: float) -> tuple[str, str]:
        """(Ray version, Python major.minor) of the nodes, asked of the head's interpreter."""
        ...

    def run_script(self, script: str, env: Mapping[str, str], timeout: float) -> ScriptResult:
        """Run a Python script beside the head with the nodes' interpreter; never raises on
        its exit code (the deployer reads it)."""
        ...

    def access(self) -> dict[str, str]:
        """What a person needs besides Ray's addresses (a temp dir), label -> value."""
        ...

    def remove_command(self, spec: ClusterSpec) -> str:
        """A shell command that removes what the run left here, by its run id."""
        ...

    def inventory(self) -> list[InventoryItem]:
        """What the source holds for the run now (processes, ports, directories)."""
        ...

    def collect_diagnostics(self, dest: Path) -> None:
        """Copy the nodes' logs into ``dest``."""
        ...

    def close(self) -> None:
        """Remove everything of the run still here, after the deployer stopped the nodes."""
        ...


class RayStartMode:
    """Head and ``--ray-workers`` worker nodes started with ``ray start`` on ``hosts``."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = ()

    def __init__(self, hosts: NodeHosts, *, default_workers: int = DEFAULT_WORKERS) -> None:
        self.hosts = hosts
        self._default_workers = default_workers
        self._spec: ClusterSpec | None = None
        self._nodes: list[RayNode] = []  # head first
        self._ports: dict[str, int] = {}
        self._outside: dict[int, int] = {}  # CLIENT_PORT/DASHBOARD_PORT -> port on address()
        self._dashboard_url = ""
        self._held = False  # this provision holds the run (runstate)

    # -- contract ----------------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        return self.hosts.missing_prerequisites(spec)

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        runstate.hold(spec.run_id)
        self._held = True
        self.hosts.open(spec)
        workers = spec.worker_count(self._default_workers)
        self._ports = {role: self.hosts.port(role) for role in _ROLES}
        gcs = f"{self.hosts.head_address()}:{self._ports['gcs']}"
        t0 = time.monotonic()
        head_flags = [f"{flag}={self._ports[role]}" for role, flag in _ROLES.items()]
        self._start(
            "head", ["--head", f"--dashboard-host={self.hosts.dashboard_host()}", *head_flags]
        )
        address = self.hosts.address()
        self._outside = {
            port: self.hosts.outside_port(self._ports[role]) for port, role in _FORWARDS.items()
        }
        self._dashboard_url = f"http://{address}:{self._outside[DASHBOARD_PORT]}"
        reported = [0]

        def joined(alive: int) -> None:
            # Workers join only through the head, so the first node alive is the head.
            elapsed = time.monotonic() - t0
            for n in range(reported[0] + 1, alive + 1):
                spec.progress(
                    f"head up in {elapsed:.1f} s"
                    if n == 1
                    else f"worker {n - 1}/{workers} joined ({elapsed:.1f} s)"
                )
            reported[0] = max(reported[0], alive)

        if not self.hosts.WORKERS_WITH_HEAD:
            self._wait(
                lambda: urlopen_ok(f"{self._dashboard_url}/api/version"),
                f"the head's dashboard at {self._dashboard_url}",
            )
            self._wait_nodes(1, on_change=joined)
        for i in range(1, workers + 1):
            self._start(f"worker{i}", [f"--address={gcs}"])
        if workers or self.hosts.WORKERS_WITH_HEAD:
            self._wait_nodes(1 + workers, on_change=joined)
        spec.progress(f"{1 + workers} node(s) alive in {time.monotonic() - t0:.1f} s")
        ray_version, python_version = self.hosts.versions(self._nodes[0], spec.timeouts.job)
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=1 + workers,
            ray_version=ray_version,
            python_version=python_version,
            head_address=gcs,
            access={
                # The nodes' address is this machine's only when they share its network.
                (
                    "RAY_ADDRESS"
                    if self.hosts.head_address() == address
                    else "RAY_ADDRESS on a node"
                ): gcs,
                "ray client": f"ray://{address}:{self._outside[CLIENT_PORT]}",
                "dashboard": self._dashboard_url,
                **self.hosts.access(),
                "remove": self.hosts.remove_command(spec),
            },
        )

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        if remote_port not in self._outside:
            raise ValueError(
                f"port {remote_port} is not published by the head "
                f"(published: {sorted(self._outside) or 'none, not provisioned'})"
            )
        # A relay on a fresh port rather than the head's port itself: the caller's port then
        # exists only inside the context, as it does for modes with a real forwarder.
        return tcp_relay(self.hosts.address(), self._outside[remote_port])

    def run_in_cluster(self, script: str, timeout: float) -> str:
        if self._spec is None:
            raise RuntimeError("run_in_cluster before provision")
        env = {"RAY_ADDRESS": f"{self.hosts.head_address()}:{self._ports['gcs']}"}
        proc = self.hosts.run_script(script, env, timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"in-cluster script exited {proc.returncode}; output:\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def inventory(self) -> list[InventoryItem]:
        return self.hosts.inventory() if self._spec is not None else []

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if self._spec is not None:
            self.hosts.collect_diagnostics(dest)

    def teardown(self) -> None:
        try:
            if self._spec is not None:
                self._stop_nodes()
        finally:
            if self._held and self._spec is not None:
                self._held = False
                runstate.release(self._spec.run_id)

    def kill_head(self) -> str:
        """Kill the head node's every process; the address it had."""
        if not self._nodes:
            raise RuntimeError("no head to kill")
        head = self._nodes[0]
        ip = head.ip()  # asked first: a killed container has no address left
        head.kill()
        return ip

    def recovers_head(self) -> bool:
        return False  # nothing restarts a `ray start` head: the suites expect fail-fast

    # -- helpers -----------------------------------------------------------------------------

    def _start(self, name: str, args: list[str]) -> None:
        argv = ["start", "--block", "--disable-usage-stats", *self.hosts.node_args(), *args]
        self._nodes.append(self.hosts.start(name, argv))

    def _stop_nodes(self) -> None:
        # Workers first, then the head. SIGTERM to `ray start --block` alone lets it drain and
        # stop its children itself (seconds); killing the head's GCS under a worker's drain
        # leaves the rest lingering for ~20 s.
        try:
            for node in reversed(self._nodes):
                node.terminate()
            with contextlib.suppress(WaitTimeout):
                wait_for(
                    lambda: all(node.exited() is not None for node in self._nodes),
                    timeout=STOP_GRACE_S,
                    what="nodes to drain",
                    interval=0.05,
                )
        finally:
            self.hosts.close()  # whatever survived the drain, then the source's own things

    def _wait(self, probe: Callable[[], bool], what: str) -> None:
        assert self._spec is not None
        try:
            wait_for(
                probe,
                timeout=self._spec.deadline.left(self._spec.timeouts.node_join),
                what=what,
                give_up=self._node_died,
            )
        except WaitTimeout as exc:
            raise ProvisionError(str(exc)) from None

    def _wait_nodes(self, n: int, on_change: Callable[[int], None] | None = None) -> None:
        assert self._spec is not None
        # Nodes with hostnames of their own are awaited by name: a timeout names each that
        # never joined, with its last words (the dashboard's summary view lists hostnames).
        named = {node.hostname: node for node in self._nodes if node.hostname}
        try:
            wait_for_nodes(
                self._dashboard_url,
                n,
                timeout=self._spec.deadline.left(self._spec.timeouts.node_join),
                expected={hostname: hostname for hostname in named} or None,
                on_change=on_change,
                give_up=self._node_died,
                view="summary" if named else "state",
            )
        except NodesTimeout as exc:
            words = "\n".join(f"--- {h}:\n{named[h].last_words()}" for h in exc.never_joined)
            raise ProvisionError(
                f"{exc}; last log lines:\n{words}" if words else str(exc)
            ) from None
        except WaitTimeout as exc:
            raise ProvisionError(str(exc)) from None

    def _node_died(self) -> str | None:
        """Which ``ray start`` exited (a node that can no longer join), with its last words."""
        for node in self._nodes:
            code = node.exited()
            if code is not None:
                return (
                    f"{node.what} exited with code {code} before the cluster was up; "
                    f"last log lines:\n{node.last_words()}"
                )
        return None
