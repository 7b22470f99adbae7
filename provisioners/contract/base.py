"""The contract every deployment mode implements, and the values it passes around.

A mode is any object that structurally satisfies :class:`Provisioner`; vendors never have to
import this module to conform. Optional abilities are separate ``runtime_checkable`` Protocols
that suites probe with ``isinstance`` and skip without.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from provisioners.contract.options import Option

T = TypeVar("T")

#: Label key stamped on everything a run creates (containers, networks, pods, instances, ...).
RUN_ID_LABEL = "ray-conformance.run-id"

#: Ray's in-cluster ports, the ones suites ask ``port_forward`` for.
CLIENT_PORT = 10001
DASHBOARD_PORT = 8265
#: The head's GCS port (``ray start --head --port``).
GCS_PORT = 6379
#: Worker nodes a multi-node mode makes when ``--ray-workers`` is not given.
DEFAULT_WORKERS = 2


class ProvisionError(RuntimeError):
    """Provisioning failed; the message is shown to the user as-is, so make it say why.

    Like every message of a mode, it does not start with the mode's name: the harness names
    the mode wherever it shows one (``docker: provisioning failed: ...``), once.
    """


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds, in seconds, for every wait a provisioner or suite makes."""

    provision: float = 900.0  # whole provision step (image builds included)
    node_join: float = 180.0  # each expected node becoming alive
    preflight: float = 30.0  # an address answering at all
    job: float = 180.0  # a script or job run in the cluster
    teardown: float = 600.0  # whole teardown step (the harness stops waiting after it)


#: The least a wait inside a step gets, even when the step's time is up: one real try whose
#: failure names what it waited for, rather than a zero-second wait that names nothing.
MIN_WAIT_S = 1.0


@dataclass(frozen=True)
class Deadline:
    """When a step must be done by (``time.monotonic()`` seconds): the one shape of "time left".

    ``remaining()`` is never negative; ``left(cap)`` is what a wait inside the step may take;
    ``part(what, seconds)`` is a named sub-budget that never outlives this deadline.
    """

    at: float
    what: str = "the step"

    @classmethod
    def after(cls, seconds: float, what: str) -> Deadline:
        return cls(time.monotonic() + seconds, what)

    def remaining(self) -> float:
        """Seconds until the deadline; 0 once it has passed."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() == 0.0

    def left(self, cap: float = math.inf) -> float:
        """The bound for one wait inside the step: what is left, at most ``cap``, at least
        :data:`MIN_WAIT_S`."""
        return max(MIN_WAIT_S, min(cap, self.remaining()))

    def part(self, what: str, seconds: float) -> Deadline:
        """A named share of this step: done ``seconds`` from now or with the step, if earlier."""
        return Deadline(min(self.at, time.monotonic() + seconds), what)


@dataclass(frozen=True)
class ClusterSpec:
    """What to provision: one per mode per session, built from the ``--ray-*`` options."""

    mode: str
    run_id: str
    workdir: Path  # scratch space owned by this mode for this run (rendered files, keys, logs)
    workers: int | None = None  # extra worker nodes; None means the mode's own default
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: The typed values of the options the mode declares (``OPTIONS``), by ``Option.key``;
    #: read them with :meth:`get`. An option not given is absent and reads as its default.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Live one-line progress ("head up in 14.2 s"); the harness prefixes the mode name.
    progress: Callable[[str], None] = field(default=lambda _msg: None, compare=False)
    #: When provisioning must be done by: every wait of a provision takes its bound from it.
    #: The harness starts it as provisioning starts (:meth:`provisioning`); a spec built
    #: without one (a test, a bench) runs it from its creation.
    deadline: Deadline = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.deadline is None:
            object.__setattr__(
                self, "deadline", Deadline.after(self.timeouts.provision, "provisioning")
            )

    def provisioning(self) -> ClusterSpec:
        """This spec with its provision deadline starting now."""
        return replace(self, deadline=Deadline.after(self.timeouts.provision, "provisioning"))

    def get(self, option: Option[T]) -> T:
        """The typed value of one of the mode's declared options (its default when not given)."""
        value = self.options.get(option.key)
        return option.default if value is None else value

    def worker_count(self, default: int = DEFAULT_WORKERS) -> int:
        """The worker nodes to make: ``workers``, else the mode's ``default``."""
        return default if self.workers is None else self.workers


@dataclass(frozen=True)
class ClusterHandle:
    """A provisioned cluster, as the suites see it."""

    mode: str
    expected_nodes: int  # alive Ray nodes the suites must find
    ray_version: str  # the cluster's Ray version, as the provisioner installed it
    python_version: str  # "major.minor" of the cluster's Python
    head_address: str  # GCS address as seen from inside the cluster ("ray-head:6379")
    #: How a person reaches the cluster (printed by --ray-keep-cluster): label -> value.
    access: Mapping[str, str] = field(default_factory=dict)
    #: False when the run did not create the cluster (``external``): teardown deletes nothing
    #: and there is nothing of the run's to inventory.
    owned: bool = True


@dataclass(frozen=True)
class Endpoint:
    """A forwarded port on this machine's loopback."""

    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


#: The kind of an :class:`InventoryItem` saying a listing failed: what could not be listed is
#: its ``name``, the error its ``detail``. No leak check passes while one is there.
INVENTORY_ERROR = "inventory-error"


@dataclass(frozen=True)
class InventoryItem:
    """One thing a run created (process, port, container, Service, instance, ...)."""

    kind: str  # "process", "container", "network", "service", "security-group", ...
    name: str  # its id or name, enough to find and remove it by hand
    run_id: str
    detail: str = ""

    def __str__(self) -> str:
        if self.kind == INVENTORY_ERROR:
            return f"could not list {self.name}: {self.detail}"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.name}{extra}"


class InventoryError(RuntimeError):
    """A listing an inventory needs failed: an inventory that cannot list never says "nothing".

    ``what`` names the kind of object ("EC2 instances", "Docker containers of the run").
    """

    def __init__(self, what: str, error: BaseException | str) -> None:
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.what = what
        self.detail = " ".join(detail.split())[:500]
        super().__init__(f"could not list {what}: {self.detail}")

    def item(self, run_id: str) -> InventoryItem:
        return InventoryItem(INVENTORY_ERROR, self.what, run_id, self.detail)


@contextlib.contextmanager
def listing(what: str) -> Iterator[None]:
    """Any error of the block (an API's, an engine's) becomes an InventoryError naming ``what``."""
    try:
        yield
    except InventoryError:
        raise
    except Exception as exc:
        raise InventoryError(what, exc) from exc


def take_inventory(provisioner: Provisioner, run_id: str) -> list[InventoryItem]:
    """``provisioner.inventory()``, or the item saying why it could not list (never empty then)."""
    try:
        return provisioner.inventory()
    except InventoryError as exc:
        return [exc.item(run_id)]
    except Exception as exc:  # a vendor's inventory: whatever it raised, the check must see it
        return [InventoryError("the mode's objects (inventory() raised)", exc).item(run_id)]


@runtime_checkable
class Provisioner(Protocol):
    """One deployment mode's lifecycle. Instances hold one cluster; classes hold no state.

    The harness calls, per session: ``missing_prerequisites`` (skip if non-empty), ``provision``,
    the suites' ``port_forward`` / ``run_in_cluster`` calls, ``collect_diagnostics`` when
    something failed, ``teardown``, and ``inventory`` after it for the leak check.
    """

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        """What this machine lacks for the mode ("no engine answers"); empty if ready.

        The mode is SKIPPED with each line, named by the harness (``docker: no engine answers``).

        Must be quick and side-effect free: it decides SKIPPED before anything is created.
        """
        ...

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        """Create the cluster and wait (bounded by ``spec.timeouts``) until every node is alive.

        Raise :class:`ProvisionError` saying what failed; the harness still calls ``teardown``.
        """
        ...

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        """Reach the head's ``remote_port`` on loopback; closing the context frees the port."""
        ...

    def run_in_cluster(self, script: str, timeout: float) -> str:
        """Run a Python script inside the cluster and return its stdout.

        The script runs where the cluster's own jobs run (a job, or exec on the head) with
        ``RAY_ADDRESS`` set to ``head_address``, so ``ray.init()`` connects in-cluster.
        Raise ``RuntimeError`` with the script's output when it exits non-zero.
        """
        ...

    def inventory(self) -> list[InventoryItem]:
        """Everything this run created that still exists; empty after a clean teardown."""
        ...

    def collect_diagnostics(self, dest: Path) -> None:
        """Copy logs, events and state useful for a failure report into ``dest``."""
        ...

    def teardown(self) -> None:
        """Remove everything this run created. Idempotent; safe after a half-done provision."""
        ...


@runtime_checkable
class SupportsKillNode(Protocol):
    """A mode that can take one worker node away abruptly (the node-loss checks)."""

    def kill_worker(self) -> str:
        """Stop one worker node without warning (no drain); return its IP as Ray reports it."""
        ...

    def replaces_lost_nodes(self) -> bool:
        """True when the platform brings up a replacement by itself (an operator's reconcile)."""
        ...


@runtime_checkable
class SupportsKillHead(Protocol):
    """A mode that can take the head node away abruptly (the head-loss checks)."""

    def kill_head(self) -> str:
        """Stop the head node without warning (no drain); return its IP as Ray reported it."""
        ...

    def recovers_head(self) -> bool:
        """True when the platform brings a new head up by itself (an operator's reconcile)."""
        ...


@dataclass(frozen=True)
class OperatorUpgrade:
    """An operator upgrade a run was asked for: the platform's operator, from and to."""

    operator: str  # "KubeRay"
    from_version: str
    to_version: str


@runtime_checkable
class SupportsOperatorUpgrade(Protocol):
    """A mode whose cluster is run by an operator that can be upgraded in place under it."""

    def operator_upgrade(self) -> OperatorUpgrade | None:
        """The upgrade this run was asked for (the cluster runs under ``from_version``); else None."""
        ...

    def upgrade_operator(self, timeout: float) -> str:
        """Upgrade the operator in place to ``to_version`` and wait until only it runs; say what runs."""
        ...

    def reconcile_probe(self, timeout: float) -> str:
        """Take away one object the operator owns for the cluster and wait until the operator
        makes it again; say what it saw. Raise ``RuntimeError`` naming what did not come back."""
        ...


@runtime_checkable
class SupportsAutoscaling(Protocol):
    """A mode whose cluster adds workers on demand and removes idle ones."""

    def autoscaling_limits(self) -> AutoscalingLimits | None:
        """The bounds the autoscaler was configured with; None when this run has none."""
        ...


@runtime_checkable
class SupportsPendingNodes(Protocol):
    """A mode that can tell which machines it was asked for never became nodes."""

    def pending_nodes(self) -> list[str]:
        """Machines asked for and not running yet (Pending pods, launching instances), described."""
        ...


@dataclass(frozen=True)
class AutoscalingLimits:
    """Autoscaler settings a check needs to know what to expect."""

    min_workers: int
    max_workers: int
    cpus_per_worker: float
    head_cpus: float
    idle_timeout_s: float
    scale_up_timeout_s: float  # bound for new workers to be alive once work is queued
    scale_down_timeout_s: float  # bound for idle workers to be gone, idle timeout included
    #: A custom resource only the autoscaled workers have (one unit each), or "": the check's work
    #: asks for it, so it runs only on workers the autoscaler adds, however big the fixed nodes.
    resource: str = ""


@dataclass(frozen=True)
class IngressRoute:
    """An ingress in front of the head: where it listens and the host its routes answer to."""

    address: str  # HOST:PORT of the ingress controller, as reached from this machine
    host: str  # the name its routes match: sent as Host (HTTP/1) and :authority (gRPC)
    dashboard_prefix: str  # the path prefix routed to the dashboard, ending in "/"
    controller: str  # who serves it, for messages ("Traefik in rc-...")


@runtime_checkable
class SupportsIngress(Protocol):
    """A mode that routes the dashboard and Ray Client (gRPC) to the head through an ingress."""

    def ingress_route(self) -> IngressRoute | None:
        """The run's ingress route; None when this run has none (nothing was asked for)."""
        ...


@contextlib.contextmanager
def direct_endpoint(host: str, port: int) -> Iterator[Endpoint]:
    """A "forward" for a port that is already on loopback (local mode, published ports)."""
    yield Endpoint(host, port)


# --- Optional abilities of container and launcher modes -------------------------------------


@runtime_checkable
class SupportsNodeExec(Protocol):
    """A mode that can run a command on each node (containers, SSH hosts, pods)."""

    def node_names(self) -> list[str]:
        """The nodes as the mode names them (container names, host names, pod names)."""
        ...

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        """Run ``argv`` on ``node``; return stdout; raise RuntimeError with output on failure."""
        ...


@runtime_checkable
class SupportsSharedMemory(Protocol):
    """A mode that sizes each node's shared memory (Docker's ``--shm-size``)."""

    def shm_bytes_per_node(self) -> int:
        """The /dev/shm size each node was asked to have."""
        ...

    def shm_advice(self) -> str:
        """How a user of this mode gives nodes more shared memory (its own flag or setting)."""
        ...


@runtime_checkable
class SupportsImageRun(Protocol):
    """A mode whose nodes come from a container image that can also run code by itself."""

    def image_run(self, argv: list[str], timeout: float) -> str:
        """Run ``argv`` in a throwaway container of the node image; return its stdout."""
        ...


@runtime_checkable
class SupportsLauncher(Protocol):
    """A mode driven by Ray's cluster launcher (``ray up`` / ``ray exec`` / ``ray down``)."""

    def cluster_config(self) -> Path:
        """The rendered cluster YAML this run passed to ``ray up``."""
        ...

    def launcher_exec(self, command: str, timeout: float) -> str:
        """``ray exec <yaml> '<command>'``; return its output."""
        ...

    def head_ssh(self, command: str, timeout: float) -> str:
        """Plain ``ssh`` to the head with the run's key; return the command's output."""
        ...

    def setup_packages(self) -> list[str]:
        """Python modules ``setup_commands`` installed on every node."""
        ...


@dataclass(frozen=True)
class NodeAddresses:
    """One node's addresses, as the exposure check probes them."""

    node: str  # as the mode names it
    #: The address the cluster's own traffic uses (the GCS and the client may answer there,
    #: to the nodes' network only); empty when the node has none a stranger could reach.
    private: str
    #: Every other address of the node (public, floating, another network's): none of the
    #: cluster's ports may answer there.
    others: tuple[str, ...] = ()


@runtime_checkable
class SupportsNodeAddresses(Protocol):
    """A mode that names its nodes' addresses and can knock on them from outside their network."""

    def node_addresses(self) -> list[NodeAddresses]:
        """Each node's addresses (loopback left out)."""
        ...

    def probe_from_outside(
        self, targets: list[tuple[str, int]], timeout: float
    ) -> set[tuple[str, int]]:
        """The ``(address, port)`` of ``targets`` that accept a TCP connection, tried from
        outside the nodes' network where the mode has one (a container on another network),
        else from this machine. Every target gets one bounded try."""
        ...


# --- Where a mode runs in the nightly matrix ------------------------------------------------

#: The kinds of runner the nightly workflow has (.github/workflows/nightly.yml).
RUNNERS = ("plain", "root", "kind", "secrets")


@dataclass(frozen=True)
class NightlyRun:
    """One run of a mode in the nightly matrix (``python -m provisioners modes --matrix``).

    ``runner`` says where it runs: "plain" a hosted runner with Docker; "root" the same as root
    (the cloud rehearsals add iptables rules); "kind" a runner that can run kind; "secrets" a job
    of its own in the workflow, named after the run, that holds the platform's secrets and runs
    only when they are set. ``name`` defaults to the mode's name (give one to a variant:
    "aws-rehearsal"); ``args`` are extra pytest flags.
    """

    runner: str = "plain"
    name: str = ""
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ValueError(
                f"NightlyRun runner {self.runner!r} is not one of {', '.join(RUNNERS)}"
            )
        # A bare string would be joined letter by letter into the run's flags.
        if not isinstance(self.args, tuple) or not all(isinstance(a, str) for a in self.args):
            raise TypeError(f"NightlyRun args must be a tuple of strings, not {self.args!r}")

    def named(self, mode: str) -> str:
        """The run's name in the matrix: its own, else its mode's."""
        return self.name or mode


def nightly_runs(provisioner_class: Any) -> tuple[NightlyRun, ...]:
    """The runs a provisioner class (or factory) declares as ``NIGHTLY``; one plain run if none.

    An empty ``NIGHTLY`` is an error too: the mode would drop out of the nightly unseen.
    """
    runs = getattr(provisioner_class, "NIGHTLY", (NightlyRun(),))
    if not isinstance(runs, tuple) or not runs or not all(isinstance(r, NightlyRun) for r in runs):
        raise TypeError(
            f"NIGHTLY must be a non-empty tuple of provisioners.contract.base.NightlyRun, not {runs!r}"
        )
    return runs
