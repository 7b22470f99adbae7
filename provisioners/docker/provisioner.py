"""Mode ``docker``: a Ray head and workers as containers on a user bridge network of one engine.

Library choice: the docker SDK (``docker``), not testcontainers (which runs the run's service
containers, ``provisioners/util/services.py``): the nodes are the cluster under test, and the mode
manages their shm size, networks, egress rules, restarts, exec and archives itself, all of them
SDK calls a testcontainers wrapper would only pass through. Everything carries the run-id and
mode labels (``containers.labels``) so teardown and the leak inventory find what a half-done
provision created even when its id was never returned.
"""

from __future__ import annotations

import contextlib
import io
import math
import shlex
import shutil
import socket
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import docker
import docker.errors
import psutil
import requests.exceptions

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryError,
    InventoryItem,
    NodeAddresses,
    ProvisionError,
    listing,
)
from provisioners.contract.options import Option
from provisioners.util import containers, nodeimage, runstate
from provisioners.util.containers import DOCKER_HOST, ENGINE_ERRORS, docker_client, http_timeout
from provisioners.util.iptables import NO_EGRESS, NO_UPSTREAM_DNS, EgressLock
from provisioners.util.naming import run_name
from provisioners.util.relay import free_port, tcp_relay
from provisioners.util.runner import tail
from provisioners.util.waits import NodesTimeout, WaitGaveUp, WaitTimeout, wait_for, wait_for_nodes

#: Share of the engine's memory given to /dev/shm across all nodes (the Ray docs' "about 30%").
SHM_SHARE = 0.30
#: Ray's object store is sized to fit inside /dev/shm with room for Ray's own files there.
OBJECT_STORE_SHARE_OF_SHM = 0.80
#: Below this Ray refuses to start (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES).
_RAY_MIN_OBJECT_STORE = 75 * 1024**2
_PING_TIMEOUT_S = 5.0
_LOG_TAIL = 15
#: The nodes' environment: no usage-stats upload attempts (no internet here, and no surprise).
_NODE_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else 0
    if not 0 < port < 65536:
        raise ValueError("expected a TCP port number, 1 to 65535")
    return port


SHM_SIZE = Option.size(
    "shm-size",
    "docker: shared memory per node container, e.g. 2g (default: 30% of the engine's memory "
    "split across nodes)",
)
PUBLISH_CLIENT = Option(
    "client-port",
    "docker: publish the head's Ray Client port on this 127.0.0.1 port (default: a free one)",
    _port,
    None,
    metavar="PORT",
)
PUBLISH_DASHBOARD = Option(
    "dashboard-port",
    "docker: publish the head's dashboard on this 127.0.0.1 port (default: a free one)",
    _port,
    None,
    metavar="PORT",
)
WORKER_COMMAND = Option.string(
    "worker-command",
    "docker: shell command each worker container runs instead of `ray start` (to test failures)",
)


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


class DockerProvisioner:
    """Head plus ``--ray-workers`` (default 2) containers of the node image, one per node."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (
        nodeimage.IMAGE,
        nodeimage.IMAGE_BUILD,
        DOCKER_HOST,
        SHM_SIZE,
        PUBLISH_CLIENT,
        PUBLISH_DASHBOARD,
        WORKER_COMMAND,
        NO_EGRESS,
    )

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._client: docker.DockerClient | None = None
        self._image = ""
        self._network = ""  # network name, once created
        self._network_id = ""
        self._nodes: list[str] = []  # container names, head first, as created
        self._ids: list[str] = []  # their short ids, for the removal command
        self._published: dict[int, int] = {}  # container port -> 127.0.0.1 port
        self._shm_bytes = 0
        self._held = False  # this provision holds the run (runstate)
        self._creating = False  # asking the engine for the nodes (an interrupt may land there)
        self._egress: EgressLock | None = None

    # -- contract ----------------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        problem = self._engine_problem(spec)
        missing = [problem] if problem else []
        return missing + (EgressLock.missing() if spec.get(NO_EGRESS) else [])

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        runstate.hold(spec.run_id)
        self._held = True
        started = time.monotonic()
        deadline = spec.deadline
        workers = spec.worker_count()
        if workers < 0:
            raise ProvisionError(f"--ray-workers must be 0 or more, got {workers}")
        problem = self._engine_problem(spec)
        if problem:
            raise ProvisionError(problem)
        client = self._connect(spec)
        self._shm_bytes = self._shm_size(spec, client, 1 + workers)
        host_ports = self._host_ports(spec)

        self._image = nodeimage.node_image_for(spec, deadline.left())
        network = run_name(spec.run_id, "net")
        self._creating = True  # until every node exists: see containers.remove(late=)
        try:
            created = client.networks.create(
                network,
                driver="bridge",
                labels=containers.labels(spec.run_id, spec.mode),
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            raise ProvisionError(
                f"cannot create network {network}: {exc.explanation or exc} "
                "(left by an earlier run with this run id? remove it or pick another run id)"
            ) from None
        self._network, self._network_id = network, str(created.short_id)
        if spec.get(NO_EGRESS):  # before any node: nothing of the run ever had a way out
            self._egress = EgressLock(spec.run_id, spec.mode, spec.progress)
            self._egress.add(str(created.id))

        head = run_name(spec.run_id, "head")
        head_address = f"{head}:6379"
        t0 = time.monotonic()
        self._start_node(
            client,
            head,
            [
                "ray",
                "start",
                "--head",
                "--block",
                "--port=6379",
                "--dashboard-host=0.0.0.0",
                f"--ray-client-server-port={CLIENT_PORT}",
                "--num-cpus=1",
                *self._object_store_args(),
            ],
            ports={
                f"{CLIENT_PORT}/tcp": ("127.0.0.1", host_ports[CLIENT_PORT]),
                f"{DASHBOARD_PORT}/tcp": ("127.0.0.1", host_ports[DASHBOARD_PORT]),
            },
        )
        self._published = self._read_published(client, head)
        dashboard = f"http://127.0.0.1:{self._published[DASHBOARD_PORT]}"

        # Workers start right away rather than after the head is up: `ray start --address`
        # retries until the head's GCS answers, and overlapping the two start-ups saves ~10 s.
        worker_cmd = spec.get(WORKER_COMMAND)
        names = [run_name(spec.run_id, "worker", str(i)) for i in range(1, workers + 1)]
        for name in names:
            argv = (
                ["sh", "-c", worker_cmd]
                if worker_cmd
                else [
                    "ray",
                    "start",
                    "--block",
                    f"--address={head_address}",
                    "--num-cpus=1",
                    *self._object_store_args(),
                ]
            )
            self._start_node(client, name, argv)
        self._creating = False
        self._wait_alive(
            client,
            dashboard,
            [head, *names],
            started=t0,
            timeout=deadline.left(spec.timeouts.node_join),
        )

        ray_version, python_version = self._versions(client, head)
        spec.progress(f"cluster of {1 + workers} nodes up in {time.monotonic() - started:.1f} s")
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=1 + workers,
            ray_version=ray_version,
            python_version=python_version,
            head_address=head_address,
            access={
                "dashboard": dashboard,
                "ray client": f"ray://127.0.0.1:{self._published[CLIENT_PORT]}",
                "image": self._image,
                "network": self._network,
                "nodes": ", ".join(self._nodes),
                "shell": f"docker exec -it {head} bash",
                "remove": self._removal(spec),
            },
        )

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        if remote_port not in self._published:
            raise ValueError(
                f"port {remote_port} is not published by the head "
                f"(published: {sorted(self._published) or 'none, not provisioned'})"
            )
        # A relay on a fresh port rather than the published port itself: the caller's port then
        # exists only inside the context, as it does for modes with a real forwarder.
        return tcp_relay("127.0.0.1", self._published[remote_port])

    def run_in_cluster(self, script: str, timeout: float) -> str:
        # Exec on the head, not a throwaway container: a driver with no raylet of its own on its
        # machine cannot attach to the cluster over the GCS port (it waits 60 s, then fails).
        head = self._head()
        env = {"RAY_ADDRESS": f"{head}:6379", **_NODE_ENV}
        return self._exec(head, ["python", "-c", script], timeout, env=env, what="script")

    def inventory(self) -> list[InventoryItem]:
        if self._spec is None:
            return []
        run_id = self._spec.run_id
        # An engine this run never reached holds nothing of it: no answer then means "none".
        made_nothing = self._client is None and not self._nodes and not self._network
        try:
            with listing(f"Docker objects of run {run_id} (no engine client)"):
                client = self._connect(self._spec)
            egress = self._egress.inventory() if self._egress is not None else []
            return containers.inventory(client, run_id, self._spec.mode) + egress
        except InventoryError as exc:
            if made_nothing:
                return []
            # Engine gone: the failed listing, and what we know we made, so a leak is not missed.
            known = [
                InventoryItem("container", n, run_id, "engine unreachable") for n in self._nodes
            ]
            if self._network:
                known.append(InventoryItem("network", self._network, run_id, "engine unreachable"))
            return [exc.item(run_id), *known]

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if self._spec is None:
            return
        notes: list[str] = []
        try:
            client = self._connect(self._spec)
            nodes = containers.run_objects(client, self._spec.run_id, self._spec.mode).containers
        except Exception as exc:
            (dest / "docker-errors.txt").write_text(f"engine unreachable: {exc}\n")
            return
        for c in nodes:
            try:
                (dest / f"{c.name}.log").write_bytes(c.logs(timestamps=True, tail=5000))
                (dest / f"{c.name}.inspect.txt").write_text(repr(c.attrs))
            except Exception as exc:
                notes.append(f"{c.name}: logs: {exc}")
        head = run_name(self._spec.run_id, "head")
        if any(c.name == head for c in nodes):
            try:
                status = self._exec(head, ["ray", "status"], 60, what="ray status", check=False)
                (dest / "ray-status.txt").write_text(status)
            except Exception as exc:
                notes.append(f"ray status: {exc}")
            try:
                with http_timeout(client, 120):
                    stream, _ = client.api.get_archive(head, "/tmp/ray/session_latest/logs")
                    data = b"".join(stream)
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    tar.extractall(dest / "head-ray-logs", filter="data")
            except Exception as exc:
                notes.append(f"head ray logs: {exc}")
        if notes:
            (dest / "docker-errors.txt").write_text("\n".join(notes) + "\n")

    def teardown(self) -> None:
        if self._spec is None:
            return
        try:
            containers.remove(
                self._connect(self._spec), self._spec.run_id, self._spec.mode, late=self._creating
            )
        except ENGINE_ERRORS:
            return  # no engine: nothing we could have created is reachable to remove
        finally:
            if self._egress is not None:
                self._egress.remove()
            if self._held:
                self._held = False
                runstate.release(self._spec.run_id)
        self._nodes, self._ids = [], []
        self._network = self._network_id = ""
        self._published = {}

    # -- optional abilities -------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return list(self._nodes)

    # -- SupportsNodeAddresses ----------------------------------------------------------------

    def node_addresses(self) -> list[NodeAddresses]:
        # The run's network is the nodes' network: from outside it, no address of theirs may
        # answer at all (the published ports are on this machine's loopback, checked apart).
        client = self._connect(self._require_spec())
        return [
            NodeAddresses(
                name, "", tuple(containers.addresses(client.containers.get(name)).values())
            )
            for name in self._nodes
        ]

    def probe_from_outside(
        self, targets: list[tuple[str, int]], timeout: float
    ) -> set[tuple[str, int]]:
        spec = self._require_spec()
        return containers.probe_from_outside(
            self._connect(spec), self._image, spec.run_id, spec.mode, targets, timeout
        )

    # -- SupportsKillNode ---------------------------------------------------------------------

    def kill_worker(self) -> str:
        """SIGKILL the last worker's container: a machine lost, not a node drained."""
        spec = self._require_spec()
        if len(self._nodes) < 2:
            raise RuntimeError("no worker node to kill")
        client = self._connect(spec)
        container = client.containers.get(self._nodes[-1])
        networks = container.attrs["NetworkSettings"]["Networks"]
        ip = next(iter(networks.values()))["IPAddress"]
        container.kill()
        return str(ip)

    def replaces_lost_nodes(self) -> bool:
        return False

    def kill_head(self) -> str:
        """SIGKILL the head's container: the head machine lost; nothing starts another."""
        spec = self._require_spec()
        if not self._nodes:
            raise RuntimeError("no head container to kill")
        container = self._connect(spec).containers.get(self._nodes[0])
        networks = container.attrs["NetworkSettings"]["Networks"]
        ip = next(iter(networks.values()))["IPAddress"]
        container.kill()
        return str(ip)

    def recovers_head(self) -> bool:
        return False

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        if node not in self._nodes:
            raise ValueError(f"no node {node!r} in this run (nodes: {self._nodes})")
        return self._exec(node, argv, timeout, what=" ".join(argv))

    def shm_bytes_per_node(self) -> int:
        return self._shm_bytes

    def shm_advice(self) -> str:
        return (
            f"run each container with --shm-size=<size> ({SHM_SIZE.flag} here), "
            "about 30% of the node's memory"
        )

    def image_run(self, argv: list[str], timeout: float) -> str:
        spec = self._require_spec()
        client = self._connect(spec)
        container = client.containers.create(
            self._image,
            argv,
            name=run_name(spec.run_id, "run", uuid.uuid4().hex[:8]),
            labels=containers.labels(spec.run_id, spec.mode),
            environment=_NODE_ENV,
            shm_size=self._shm_bytes or None,
            # No network at all: the image must run Ray by itself, with loopback only.
            network_mode="none",
        )
        try:
            return self._wait_container(client, container, timeout, what=" ".join(argv))
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    # -- helpers ------------------------------------------------------------------------------

    def _engine_problem(self, spec: ClusterSpec) -> str:
        timeout = min(_PING_TIMEOUT_S, spec.timeouts.preflight)
        return containers.engine_problem(spec.get(DOCKER_HOST), timeout) or ""

    def _connect(self, spec: ClusterSpec) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(spec.get(DOCKER_HOST), timeout=60)
        return self._client

    def _removal(self, spec: ClusterSpec) -> str:
        """The command that removes what this run created, by id (for --ray-keep-cluster)."""
        host = spec.get(DOCKER_HOST)
        # Absolute: the command must run as printed in a clean shell.
        docker = shutil.which("docker") or "docker"
        docker_cli = shlex.join([docker, "-H", host]) if host else shlex.quote(docker)
        command = (
            f"{docker_cli} rm -f {' '.join(self._ids)} && "
            f"{docker_cli} network rm {self._network_id}"
        )
        rule = self._egress.removal_command() if self._egress is not None else None
        return f"{command} && {rule}" if rule else command

    def _require_spec(self) -> ClusterSpec:
        if self._spec is None:
            raise RuntimeError("not provisioned")
        return self._spec

    def _head(self) -> str:
        if not self._nodes:
            raise RuntimeError("not provisioned (no head container)")
        return self._nodes[0]

    def _shm_size(self, spec: ClusterSpec, client: docker.DockerClient, nodes: int) -> int:
        # The engine's memory, not this process's host: with Docker Desktop they differ.
        try:
            total = int(client.info().get("MemTotal") or 0) or psutil.virtual_memory().total
        except docker.errors.DockerException:
            total = psutil.virtual_memory().total
        size = spec.get(SHM_SIZE)
        if size is None:
            return int(total * SHM_SHARE / nodes)
        if size <= 0:
            raise ProvisionError(f"{SHM_SIZE.flag} must be positive, got {size}")
        if size > total:
            raise ProvisionError(
                f"{SHM_SIZE.flag} asks {_gib(size)} per node, more than the engine's "
                f"memory ({_gib(total)}); about 30% of memory split across nodes is usual"
            )
        return size

    def _object_store_args(self) -> list[str]:
        # Ray sizes its store from the machine's memory (30%), not the container's /dev/shm, and
        # falls back to slow /tmp when that does not fit; so size it to the shm we gave. Too
        # small an shm for Ray's minimum is left to Ray, so the suite can report it.
        store = int(self._shm_bytes * OBJECT_STORE_SHARE_OF_SHM)
        return [f"--object-store-memory={store}"] if store >= _RAY_MIN_OBJECT_STORE else []

    def _host_ports(self, spec: ClusterSpec) -> dict[int, int]:
        ports: dict[int, int] = {}
        for remote, option in ((CLIENT_PORT, PUBLISH_CLIENT), (DASHBOARD_PORT, PUBLISH_DASHBOARD)):
            port = spec.get(option)
            if port is None:
                ports[remote] = free_port()
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise ProvisionError(
                        f"cannot publish {remote} on 127.0.0.1:{port}: the port is "
                        f"already in use ({exc.strerror}); choose another {option.flag} or leave "
                        "it unset for a free one"
                    ) from None
            ports[remote] = port
        return ports

    def _start_node(
        self,
        client: docker.DockerClient,
        name: str,
        argv: list[str],
        ports: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        spec = self._require_spec()
        # Recorded before the call: a create that succeeds and a start that fails still leaves
        # a container, which teardown then finds by label.
        self._nodes.append(name)
        try:
            node = client.containers.run(
                self._image,
                argv,
                name=name,
                hostname=name,
                network=self._network,
                labels=containers.labels(spec.run_id, spec.mode),
                environment=_NODE_ENV,
                shm_size=self._shm_bytes,
                ports=ports or {},
                detach=True,
                **({"dns": NO_UPSTREAM_DNS} if self._egress is not None else {}),
            )
        except docker.errors.APIError as exc:
            explanation = str(exc.explanation or exc)
            if "port is already allocated" in explanation or "address already in use" in (
                explanation
            ):
                raise ProvisionError(
                    f"cannot start {name}: a published port is already in use ({explanation})"
                ) from None
            raise ProvisionError(f"cannot start {name}: {explanation}") from None
        self._ids.append(str(node.short_id))

    def _read_published(self, client: docker.DockerClient, name: str) -> dict[int, int]:
        attrs = client.api.inspect_container(name)
        bound = attrs["NetworkSettings"]["Ports"] or {}
        out: dict[int, int] = {}
        for remote in (CLIENT_PORT, DASHBOARD_PORT):
            entries = bound.get(f"{remote}/tcp") or []
            if not entries:
                raise ProvisionError(f"{name} did not publish port {remote}")
            out[remote] = int(entries[0]["HostPort"])
        return out

    def _wait_alive(
        self,
        client: docker.DockerClient,
        dashboard: str,
        names: list[str],
        *,
        started: float,
        timeout: float,
    ) -> None:
        """Wait until every node container (head first) is an alive Ray node (by hostname).

        Gives up at once, quoting its log, when a container exits: its node can never be alive.
        """
        spec = self._require_spec()
        reported = [0]

        def joined(alive: int) -> None:
            # Workers join only through the head, so the first node alive is the head.
            elapsed = time.monotonic() - started
            for n in range(reported[0] + 1, alive + 1):
                spec.progress(
                    f"head up in {elapsed:.1f} s"
                    if n == 1
                    else f"worker {n - 1}/{len(names) - 1} joined ({elapsed:.1f} s)"
                )
            reported[0] = max(reported[0], alive)

        def exited() -> str | None:
            for name in names:
                state = client.api.inspect_container(name)["State"]
                if not state.get("Running"):
                    return (
                        f"node container {name} exited with code {state.get('ExitCode')} before "
                        f"the cluster was up; last log lines:\n{self._log_tail(client, name)}"
                    )
            return None

        try:
            wait_for_nodes(
                dashboard,
                len(names),
                timeout=timeout,
                expected={name: name for name in names},
                on_change=joined,
                give_up=exited,
                view="summary",
            )
        except WaitGaveUp as exc:
            raise ProvisionError(str(exc)) from None
        except NodesTimeout as exc:
            logs = "\n".join(f"--- {n}:\n{self._log_tail(client, n)}" for n in exc.never_joined)
            raise ProvisionError(f"{exc}; last log lines:\n{logs}") from None

    def _log_tail(self, client: docker.DockerClient, name: str) -> str:
        try:
            raw = client.api.logs(name, tail=_LOG_TAIL * 4)
        except ENGINE_ERRORS as exc:
            return f"(logs unavailable: {containers.one_line(exc)})"
        return tail(raw.decode(errors="replace"), _LOG_TAIL) or "(no output)"

    def _versions(self, client: docker.DockerClient, head: str) -> tuple[str, str]:
        # Ask the image rather than trust what we asked for: --ray-image may hold another Ray.
        out = self._exec(
            head,
            [
                "python",
                "-c",
                "import sys, ray; print(ray.__version__, '%d.%d' % sys.version_info[:2])",
            ],
            60,
            what="ray version probe",
        )
        fields = out.split()
        if len(fields) < 2:
            raise ProvisionError(f"cannot read Ray/Python versions on {head}: {out!r}")
        return fields[-2], fields[-1]

    def _exec(
        self,
        node: str,
        argv: list[str],
        timeout: float,
        *,
        env: dict[str, str] | None = None,
        what: str,
        check: bool = True,
    ) -> str:
        client = self._connect(self._require_spec())
        # `timeout` (coreutils, in every image we run) bounds the process itself; the HTTP
        # timeout only bounds our wait for its output.
        bounded = ["timeout", "-k", "5", str(math.ceil(timeout)), *argv]
        exec_id = client.api.exec_create(node, bounded, environment=env)["Id"]
        try:
            with http_timeout(client, timeout + 15):
                stdout, stderr = client.api.exec_start(exec_id, demux=True)
        except requests.exceptions.RequestException as exc:
            raise TimeoutError(f"{what} on {node} did not finish in {timeout:.0f} s") from exc
        code = client.api.exec_inspect(exec_id).get("ExitCode")
        out = (stdout or b"").decode(errors="replace")
        err = (stderr or b"").decode(errors="replace")
        if code == 124:
            raise TimeoutError(
                f"{what} on {node} did not finish in {timeout:.0f} s; output:\n{out}{err}"
            )
        if check and code != 0:
            raise RuntimeError(f"{what} on {node} exited {code}; output:\n{out}{err}")
        return out if check else out + err

    def _wait_container(
        self, client: docker.DockerClient, container: Any, timeout: float, *, what: str
    ) -> str:
        container.start()

        def exit_code() -> int | None:
            container.reload()
            if container.status not in ("exited", "dead"):
                return None
            return int(container.attrs["State"]["ExitCode"])

        try:
            code = wait_for(
                exit_code, timeout=timeout, what=f"{what} in {container.name}", interval=0.2
            )
        except WaitTimeout:
            raise TimeoutError(
                f"{what} in {container.name} did not finish in {timeout:.0f} s"
            ) from None
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if code != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            raise RuntimeError(f"{what} in {container.name} exited {code}; output:\n{out}{err}")
        return str(out)
