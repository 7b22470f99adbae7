"""Containers of one Docker engine as the ``ray start`` deployer's node source.

:class:`ContainerHosts` meets :class:`provisioners.deployers.raystart.NodeHosts`: each Ray node is one
container of the node image on the run's user bridge network, running ``ray start --block`` as
its command (:class:`ContainerNode`). The head's dashboard and client ports are published on
this machine's loopback; scripts and probes run by ``docker exec`` in the head.

Library choice: the docker SDK (``docker``), not testcontainers (which runs the run's service
containers, ``provisioners/util/services.py``): the nodes are the cluster under test, and the source
manages their shm size, networks, egress rules, exec and archives itself, all of them SDK calls
a testcontainers wrapper would only pass through. Everything carries the run-id and mode labels
(``containers.labels``) so removal and the leak inventory find what a half-done provision
created even when its id was never returned.
"""

from __future__ import annotations

import contextlib
import io
import math
import shlex
import shutil
import socket
import subprocess
import tarfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import docker
import docker.errors
import psutil
import requests.exceptions

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    ClusterSpec,
    InventoryError,
    InventoryItem,
    NodeAddresses,
    ProvisionError,
    listing,
)
from provisioners.contract.options import Option
from provisioners.deployers.raystart import RayNode
from provisioners.util import containers, nodeimage
from provisioners.util.containers import DOCKER_HOST, ENGINE_ERRORS, docker_client, http_timeout
from provisioners.util.iptables import NO_EGRESS, NO_UPSTREAM_DNS, EgressLock
from provisioners.util.naming import run_name
from provisioners.util.relay import free_port
from provisioners.util.runner import tail
from provisioners.util.waits import WaitTimeout, wait_for

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
#: The head's ports inside its container: each container has its own, so Ray's defaults.
_PORTS = {"gcs": 6379, "dashboard": DASHBOARD_PORT, "client": CLIENT_PORT}


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


class ContainerNode:
    """A node's container, whose command is its ``ray start --block``."""

    def __init__(self, client: docker.DockerClient, name: str) -> None:
        self.client = client
        self.name = name

    @property
    def what(self) -> str:
        return f"node container {self.name}"

    @property
    def hostname(self) -> str:
        return self.name  # each container is started with its name as hostname

    def ip(self) -> str:
        networks = self.client.api.inspect_container(self.name)["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])

    def exited(self) -> int | None:
        try:
            state = self.client.api.inspect_container(self.name)["State"]
        except docker.errors.NotFound:
            return -1  # removed: it can run no more
        return None if state.get("Running") else int(state.get("ExitCode") or 0)

    def terminate(self) -> None:
        # `docker stop` without its wait: the deployer bounds the drain, then close() kills.
        with contextlib.suppress(*ENGINE_ERRORS):
            self.client.api.kill(self.name, signal="SIGTERM")

    def kill(self) -> None:
        """SIGKILL the container: the machine lost, not a node drained."""
        self.client.api.kill(self.name)

    def last_words(self) -> str:
        try:
            raw = self.client.api.logs(self.name, tail=_LOG_TAIL * 4)
        except ENGINE_ERRORS as exc:
            return f"(logs unavailable: {containers.one_line(exc)})"
        return tail(raw.decode(errors="replace"), _LOG_TAIL) or "(no output)"


class ContainerHosts:
    """Containers of the node image, one per node, on a user bridge network of one engine."""

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
    #: `ray start --address` retries until the head's GCS answers: overlapping saves ~10 s.
    WORKERS_WITH_HEAD: ClassVar[bool] = True

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._client: docker.DockerClient | None = None
        self._image = ""
        self._network = ""  # network name, once created
        self._network_id = ""
        self._names: list[str] = []  # container names, head first, as asked of the engine
        self._ids: list[str] = []  # their short ids, for the removal command
        self._nodes: list[ContainerNode] = []  # the ones the engine started
        self._host_ports: dict[int, int] = {}  # container port -> 127.0.0.1 port asked
        self._published: dict[int, int] = {}  # container port -> 127.0.0.1 port bound
        self._shm_bytes = 0
        self._creating = False  # asking the engine for objects (an interrupt may land there)
        self._egress: EgressLock | None = None

    # -- NodeHosts ---------------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        problem = self._engine_problem(spec)
        missing = [problem] if problem else []
        return missing + (EgressLock.missing() if spec.get(NO_EGRESS) else [])

    def open(self, spec: ClusterSpec) -> None:
        self._spec = spec
        workers = spec.worker_count()
        if workers < 0:
            raise ProvisionError(f"--ray-workers must be 0 or more, got {workers}")
        problem = self._engine_problem(spec)
        if problem:
            raise ProvisionError(problem)
        client = self._connect(spec)
        self._shm_bytes = self._shm_size(spec, client, 1 + workers)
        self._host_ports = self._free_host_ports(spec)
        self._image = nodeimage.node_image_for(spec, spec.deadline.left())
        network = run_name(spec.run_id, "net")
        self._creating = True  # see containers.remove(late=)
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
        self._creating = False
        self._network, self._network_id = network, str(created.short_id)
        if spec.get(NO_EGRESS):  # before any node: nothing of the run ever had a way out
            self._egress = EgressLock(spec.run_id, spec.mode, spec.progress)
            self._egress.add(str(created.id))

    def address(self) -> str:
        return "127.0.0.1"  # the head's ports are published on loopback only

    def head_address(self) -> str:
        return self._container("head")

    def dashboard_host(self) -> str:
        return "0.0.0.0"  # inside the container: its published port must reach the dashboard

    def port(self, role: str) -> int:
        return _PORTS[role]

    def outside_port(self, port: int) -> int:
        return self._published[port]

    def node_args(self) -> list[str]:
        # Ray sizes its store from the machine's memory (30%), not the container's /dev/shm, and
        # falls back to slow /tmp when that does not fit; so size it to the shm we gave. Too
        # small an shm for Ray's minimum is left to Ray, so the suite can report it.
        store = int(self._shm_bytes * OBJECT_STORE_SHARE_OF_SHM)
        sized = [f"--object-store-memory={store}"] if store >= _RAY_MIN_OBJECT_STORE else []
        return ["--num-cpus=1", *sized]

    def start(self, name: str, argv: list[str]) -> ContainerNode:
        spec = self._require_spec()
        client = self._connect(spec)
        container = self._container(name)
        head = name == "head"
        worker_cmd = spec.get(WORKER_COMMAND)
        command = ["sh", "-c", worker_cmd] if worker_cmd and not head else ["ray", *argv]
        published = {
            f"{port}/tcp": ("127.0.0.1", self._host_ports[port]) for port in self._host_ports
        }
        # Recorded before the call: a create that succeeds and a start that fails still leaves
        # a container, which close() then finds by label.
        self._names.append(container)
        self._creating = True
        try:
            node = client.containers.run(
                self._image,
                command,
                name=container,
                hostname=container,
                network=self._network,
                labels=containers.labels(spec.run_id, spec.mode),
                environment=_NODE_ENV,
                shm_size=self._shm_bytes,
                ports=published if head else {},
                detach=True,
                **({"dns": NO_UPSTREAM_DNS} if self._egress is not None else {}),
            )
        except docker.errors.APIError as exc:
            explanation = str(exc.explanation or exc)
            if "port is already allocated" in explanation or "address already in use" in (
                explanation
            ):
                raise ProvisionError(
                    f"cannot start {container}: a published port is already in use ({explanation})"
                ) from None
            raise ProvisionError(f"cannot start {container}: {explanation}") from None
        self._creating = False
        self._ids.append(str(node.short_id))
        if head:
            self._published = self._read_published(client, container)
        self._nodes.append(ContainerNode(client, container))
        return self._nodes[-1]

    def versions(self, head: RayNode, timeout: float) -> tuple[str, str]:
        # Ask the image rather than trust what we asked for: --ray-image may hold another Ray.
        probe = "import sys, ray; print(ray.__version__, '%d.%d' % sys.version_info[:2])"
        out = self._exec(self._head(), ["python", "-c", probe], 60, what="ray version probe")
        fields = out.split()
        if len(fields) < 2:
            raise ProvisionError(f"cannot read Ray/Python versions on {self._head()}: {out!r}")
        return fields[-2], fields[-1]

    def run_script(
        self, script: str, env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        # Exec on the head, not a throwaway container: a driver with no raylet of its own on its
        # machine cannot attach to the cluster over the GCS port (it waits 60 s, then fails).
        return self._exec_result(
            self._head(),
            ["python", "-c", script],
            timeout,
            env={**env, **_NODE_ENV},
            what="script",
        )

    def access(self) -> dict[str, str]:
        return {
            "image": self._image,
            "network": self._network,
            "nodes": ", ".join(self._names),
            "shell": f"docker exec -it {self._head()} bash",
        }

    def remove_command(self, spec: ClusterSpec) -> str:
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

    def inventory(self) -> list[InventoryItem]:
        if self._spec is None:
            return []
        run_id = self._spec.run_id
        # An engine this run never reached holds nothing of it: no answer then means "none".
        made_nothing = self._client is None and not self._names and not self._network
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
                InventoryItem("container", n, run_id, "engine unreachable") for n in self._names
            ]
            if self._network:
                known.append(InventoryItem("network", self._network, run_id, "engine unreachable"))
            return [exc.item(run_id), *known]

    def collect_diagnostics(self, dest: Path) -> None:
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
        head = self._container("head")
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

    def close(self) -> None:
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
        self._names, self._ids, self._nodes = [], [], []
        self._network = self._network_id = ""
        self._published = {}

    # -- the mode's other abilities ------------------------------------------------------------

    def node_names(self) -> list[str]:
        return list(self._names)

    def node_addresses(self) -> list[NodeAddresses]:
        # The run's network is the nodes' network: from outside it, no address of theirs may
        # answer at all (the published ports are on this machine's loopback, checked apart).
        client = self._connect(self._require_spec())
        return [
            NodeAddresses(
                name, "", tuple(containers.addresses(client.containers.get(name)).values())
            )
            for name in self._names
        ]

    def probe_from_outside(
        self, targets: list[tuple[str, int]], timeout: float
    ) -> set[tuple[str, int]]:
        spec = self._require_spec()
        return containers.probe_from_outside(
            self._connect(spec), self._image, spec.run_id, spec.mode, targets, timeout
        )

    def kill_worker(self) -> str:
        """SIGKILL the last worker's container: a machine lost, not a node drained."""
        self._require_spec()
        if len(self._nodes) < 2:
            raise RuntimeError("no worker node to kill")
        worker = self._nodes[-1]
        ip = worker.ip()  # asked first: a killed container has no address left
        worker.kill()
        return ip

    def replaces_lost_nodes(self) -> bool:
        return False

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        if node not in self._names:
            raise ValueError(f"no node {node!r} in this run (nodes: {self._names})")
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
            return self._wait_container(container, timeout, what=" ".join(argv))
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    # -- helpers ------------------------------------------------------------------------------

    def _container(self, name: str) -> str:
        """The container of the deployer's node ``name`` ("head", "worker1")."""
        run_id = self._require_spec().run_id
        if name == "head":
            return run_name(run_id, "head")
        return run_name(run_id, "worker", name.removeprefix("worker"))

    def _engine_problem(self, spec: ClusterSpec) -> str:
        timeout = min(_PING_TIMEOUT_S, spec.timeouts.preflight)
        return containers.engine_problem(spec.get(DOCKER_HOST), timeout) or ""

    def _connect(self, spec: ClusterSpec) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(spec.get(DOCKER_HOST), timeout=60)
        return self._client

    def _require_spec(self) -> ClusterSpec:
        if self._spec is None:
            raise RuntimeError("not provisioned")
        return self._spec

    def _head(self) -> str:
        if not self._names:
            raise RuntimeError("not provisioned (no head container)")
        return self._names[0]

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

    def _free_host_ports(self, spec: ClusterSpec) -> dict[int, int]:
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

    def _exec_result(
        self,
        node: str,
        argv: list[str],
        timeout: float,
        *,
        env: Mapping[str, str] | None = None,
        what: str,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` run in ``node``, bounded; raises TimeoutError, never on its exit code."""
        client = self._connect(self._require_spec())
        # `timeout` (coreutils, in every image we run) bounds the process itself; the HTTP
        # timeout only bounds our wait for its output.
        bounded = ["timeout", "-k", "5", str(math.ceil(timeout)), *argv]
        exec_id = client.api.exec_create(node, bounded, environment=dict(env or {}))["Id"]
        try:
            with http_timeout(client, timeout + 15):
                stdout, stderr = client.api.exec_start(exec_id, demux=True)
        except requests.exceptions.RequestException as exc:
            raise TimeoutError(f"{what} on {node} did not finish in {timeout:.0f} s") from exc
        code = int(client.api.exec_inspect(exec_id).get("ExitCode") or 0)
        out = (stdout or b"").decode(errors="replace")
        err = (stderr or b"").decode(errors="replace")
        if code == 124:
            raise TimeoutError(
                f"{what} on {node} did not finish in {timeout:.0f} s; output:\n{out}{err}"
            )
        return subprocess.CompletedProcess(bounded, code, out, err)

    def _exec(
        self, node: str, argv: list[str], timeout: float, *, what: str, check: bool = True
    ) -> str:
        proc = self._exec_result(node, argv, timeout, what=what)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{what} on {node} exited {proc.returncode}; output:\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout if check else proc.stdout + proc.stderr

    def _wait_container(self, container: Any, timeout: float, *, what: str) -> str:
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
