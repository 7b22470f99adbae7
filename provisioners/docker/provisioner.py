"""Mode ``docker``: a Ray head and workers as containers on a user bridge network of one engine.

Library choice: the docker SDK (``docker``), not testcontainers. testcontainers starts its reaper
(Ryuk) from a Docker Hub image, which our machines cannot pull, and disabling it leaves a thin
wrapper over the same SDK; the SDK also gives labels, shm size, networks, exec and archives
directly. Everything carries ``RUN_ID_LABEL`` so teardown and the leak inventory find what a
half-done provision created even when its id was never returned to us.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import socket
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psutil
import requests.exceptions

from provisioners.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    RUN_ID_LABEL,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    ProvisionError,
)
from provisioners.containers import docker_client, http_timeout
from provisioners.nodeimage import ensure_node_image
from provisioners.relay import free_port, tcp_relay
from provisioners.waits import alive_nodes

DEFAULT_WORKERS = 2
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
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from ``2g``, ``512m``, ``1.5GiB`` or a plain number of bytes (Docker's units)."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ProvisionError(
            f"docker: cannot read the shm size {text!r} (use bytes or a unit: 512m, 2g)"
        )
    number, unit = match.groups()
    return int(float(number) * 1024 ** "bkmgt".index(unit.lower() or "b"))


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def _prefix(run_id: str) -> str:
    # Container names and hostnames allow fewer characters than a run id may have.
    safe = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-") or "run"
    return f"rc-{safe[:40]}-"


class DockerProvisioner:
    """Head plus ``--ray-workers`` (default 2) containers of the node image, one per node."""

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._client: docker.DockerClient | None = None
        self._image = ""
        self._network = ""  # network name, once created
        self._nodes: list[str] = []  # container names, head first, as created
        self._published: dict[int, int] = {}  # container port -> 127.0.0.1 port
        self._shm_bytes = 0

    # -- contract ----------------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        problem = self._engine_problem(spec)
        return [problem] if problem else []

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        started = time.monotonic()
        deadline = started + spec.timeouts.provision
        workers = DEFAULT_WORKERS if spec.workers is None else spec.workers
        if workers < 0:
            raise ProvisionError(f"docker: --ray-workers must be 0 or more, got {workers}")
        problem = self._engine_problem(spec)
        if problem:
            raise ProvisionError(problem)
        client = self._connect(spec)
        self._shm_bytes = self._shm_size(spec, client, 1 + workers)
        host_ports = self._host_ports(spec)

        self._image = ensure_node_image(
            spec.progress,
            max(1.0, deadline - time.monotonic()),
            image=spec.option("ray_image"),
            force_build=_truthy(spec.option("ray_image_build", False)),
            docker_host=spec.option("docker_host"),
            run_id=spec.run_id,
        )
        prefix = _prefix(spec.run_id)
        labels = {RUN_ID_LABEL: spec.run_id}
        self._network = f"{prefix}net"
        try:
            client.networks.create(
                self._network, driver="bridge", labels=labels, check_duplicate=True
            )
        except docker.errors.APIError as exc:
            self._network = ""  # not ours: teardown must not count on removing it by name
            raise ProvisionError(
                f"docker: cannot create network {prefix}net: {exc.explanation or exc} "
                "(left by an earlier run with this run id? remove it or pick another run id)"
            ) from None

        head = f"{prefix}head"
        head_address = f"{head}:6379"
        t0 = time.monotonic()
        self._start_node(
            client,
            head,
            [
                "ray", "start", "--head", "--block", "--port=6379",
                "--dashboard-host=0.0.0.0", f"--ray-client-server-port={CLIENT_PORT}",
                "--num-cpus=1", *self._object_store_args(),
            ],
            ports={f"{CLIENT_PORT}/tcp": ("127.0.0.1", host_ports[CLIENT_PORT]),
                   f"{DASHBOARD_PORT}/tcp": ("127.0.0.1", host_ports[DASHBOARD_PORT])},
        )  # fmt: skip
        self._published = self._read_published(client, head)
        dashboard = f"http://127.0.0.1:{self._published[DASHBOARD_PORT]}"

        # Workers start right away rather than after the head is up: `ray start --address`
        # retries until the head's GCS answers, and overlapping the two start-ups saves ~10 s.
        worker_cmd = spec.option("worker_command")
        names = [f"{prefix}worker-{i}" for i in range(1, workers + 1)]
        for name in names:
            argv = (
                ["sh", "-c", str(worker_cmd)]
                if worker_cmd
                else ["ray", "start", "--block", f"--address={head_address}", "--num-cpus=1",
                      *self._object_store_args()]
            )  # fmt: skip
            self._start_node(client, name, argv)
        self._wait_alive(client, dashboard, head, names, started=t0, deadline=deadline)

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
            },
        )

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        if remote_port not in self._published:
            raise ValueError(
                f"docker: port {remote_port} is not published by the head "
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
        try:
            client = self._connect(self._spec)
            found = self._labeled(client)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            # Engine gone: report what we know we made, so a leak is not silently missed.
            known = [
                InventoryItem("container", n, run_id, "engine unreachable") for n in self._nodes
            ]
            if self._network:
                known.append(InventoryItem("network", self._network, run_id, "engine unreachable"))
            return known
        items = [
            InventoryItem("container", c.name, run_id, f"{c.short_id} {c.status}")
            for c in found["containers"]
        ]
        items += [InventoryItem("network", n.name, run_id, n.short_id) for n in found["networks"]]
        items += [InventoryItem("volume", v.name, run_id) for v in found["volumes"]]
        return items

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if self._spec is None:
            return
        notes: list[str] = []
        try:
            client = self._connect(self._spec)
            containers = self._labeled(client)["containers"]
        except Exception as exc:
            (dest / "docker-errors.txt").write_text(f"engine unreachable: {exc}\n")
            return
        for c in containers:
            try:
                (dest / f"{c.name}.log").write_bytes(c.logs(timestamps=True, tail=5000))
                (dest / f"{c.name}.inspect.txt").write_text(repr(c.attrs))
            except Exception as exc:
                notes.append(f"{c.name}: logs: {exc}")
        head = f"{_prefix(self._spec.run_id)}head"
        if any(c.name == head for c in containers):
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
            client = self._connect(self._spec)
            found = self._labeled(client)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return  # no engine: nothing we could have created is reachable to remove
        for c in found["containers"]:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
        for n in found["networks"]:
            with contextlib.suppress(docker.errors.NotFound):
                n.remove()
        for v in found["volumes"]:
            with contextlib.suppress(docker.errors.NotFound):
                v.remove(force=True)
        self._nodes = []
        self._network = ""
        self._published = {}

    # -- optional abilities -------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return list(self._nodes)

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        if node not in self._nodes:
            raise ValueError(f"docker: no node {node!r} in this run (nodes: {self._nodes})")
        return self._exec(node, argv, timeout, what=" ".join(argv))

    def shm_bytes_per_node(self) -> int:
        return self._shm_bytes

    def image_run(self, argv: list[str], timeout: float) -> str:
        spec = self._require_spec()
        client = self._connect(spec)
        container = client.containers.create(
            self._image,
            argv,
            name=f"{_prefix(spec.run_id)}run-{uuid.uuid4().hex[:8]}",
            labels={RUN_ID_LABEL: spec.run_id},
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
        host = spec.option("docker_host")
        where = host or "the environment's DOCKER_HOST (default unix:///var/run/docker.sock)"
        try:
            # from_env already asks the engine for its API version: that is the ping.
            client = docker_client(host, timeout=min(_PING_TIMEOUT_S, spec.timeouts.preflight))
            try:
                client.ping()
            finally:
                client.close()
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
        ) as exc:
            if "Permission denied" in str(exc):
                return f"docker: permission denied on {where} (join the docker group or use root)"
            return f"docker: no engine answers at {where} (start dockerd or Docker Desktop)"
        return ""

    def _connect(self, spec: ClusterSpec) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(spec.option("docker_host"), timeout=60)
        return self._client

    def _require_spec(self) -> ClusterSpec:
        if self._spec is None:
            raise RuntimeError("docker: not provisioned")
        return self._spec

    def _head(self) -> str:
        if not self._nodes:
            raise RuntimeError("docker: not provisioned (no head container)")
        return self._nodes[0]

    def _shm_size(self, spec: ClusterSpec, client: docker.DockerClient, nodes: int) -> int:
        # The engine's memory, not this process's host: with Docker Desktop they differ.
        try:
            total = int(client.info().get("MemTotal") or 0) or psutil.virtual_memory().total
        except docker.errors.DockerException:
            total = psutil.virtual_memory().total
        asked = spec.option("ray_shm_size")
        if asked is None:
            return int(total * SHM_SHARE / nodes)
        size = parse_size(asked)
        if size <= 0:
            raise ProvisionError(f"docker: --ray-shm-size must be positive, got {asked!r}")
        if size > total:
            raise ProvisionError(
                f"docker: --ray-shm-size {asked} ({_gib(size)} per node) is larger than the "
                f"engine's memory ({_gib(total)}); about 30% of memory split across nodes is usual"
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
        for remote, option in ((CLIENT_PORT, "client_port"), (DASHBOARD_PORT, "dashboard_port")):
            wanted = spec.option(option)
            if wanted is None:
                ports[remote] = free_port()
                continue
            port = int(wanted)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise ProvisionError(
                        f"docker: cannot publish {remote} on 127.0.0.1:{port}: the port is "
                        f"already in use ({exc.strerror}); choose another {option} or leave it "
                        "unset for a free one"
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
            client.containers.run(
                self._image,
                argv,
                name=name,
                hostname=name,
                network=self._network,
                labels={RUN_ID_LABEL: spec.run_id},
                environment=_NODE_ENV,
                shm_size=self._shm_bytes,
                ports=ports or {},
                detach=True,
            )
        except docker.errors.APIError as exc:
            explanation = str(exc.explanation or exc)
            if "port is already allocated" in explanation or "address already in use" in (
                explanation
            ):
                raise ProvisionError(
                    f"docker: cannot start {name}: a published port is already in use "
                    f"({explanation})"
                ) from None
            raise ProvisionError(f"docker: cannot start {name}: {explanation}") from None

    def _read_published(self, client: docker.DockerClient, name: str) -> dict[int, int]:
        attrs = client.api.inspect_container(name)
        bound = attrs["NetworkSettings"]["Ports"] or {}
        out: dict[int, int] = {}
        for remote in (CLIENT_PORT, DASHBOARD_PORT):
            entries = bound.get(f"{remote}/tcp") or []
            if not entries:
                raise ProvisionError(f"docker: {name} did not publish port {remote}")
            out[remote] = int(entries[0]["HostPort"])
        return out

    def _wait_alive(
        self,
        client: docker.DockerClient,
        dashboard: str,
        head: str,
        workers: list[str],
        *,
        started: float,
        deadline: float,
    ) -> None:
        """Wait until the head and every worker container is an alive Ray node (by hostname)."""
        spec = self._require_spec()
        expected = {head, *workers}
        join_deadline = min(deadline, time.monotonic() + spec.timeouts.node_join)
        reported: set[str] = set()
        last_error = ""
        while True:
            try:
                alive = {n["hostname"] for n in alive_nodes(dashboard, timeout=5, view="summary")}
                last_error = ""
            except Exception as exc:  # dashboard still starting
                alive = set()
                last_error = f"{type(exc).__name__}: {exc}"
            for name in [head, *workers]:
                if name in alive and name not in reported:
                    reported.add(name)
                    elapsed = time.monotonic() - started
                    if name == head:
                        spec.progress(f"head up in {elapsed:.1f} s")
                    else:
                        joined = len(reported - {head})
                        spec.progress(f"worker {joined}/{len(workers)} joined ({elapsed:.1f} s)")
            if expected <= alive:
                return
            for name in sorted(expected - alive):
                state = client.api.inspect_container(name)["State"]
                if not state.get("Running"):
                    raise ProvisionError(
                        f"docker: node container {name} exited with code {state.get('ExitCode')} "
                        f"before joining the cluster; last log lines:\n{self._tail(client, name)}"
                    )
            if time.monotonic() >= join_deadline:
                missing = sorted(expected - alive)
                detail = "\n".join(f"--- {n}:\n{self._tail(client, n)}" for n in missing)
                raise ProvisionError(
                    f"docker: timed out after {spec.timeouts.node_join:.0f} s waiting for "
                    f"{', '.join(missing)} to be alive Ray nodes (alive: "
                    f"{', '.join(sorted(alive)) or 'none'}"
                    + (f"; dashboard: {last_error}" if last_error else "")
                    + f"); last log lines:\n{detail}"
                )
            time.sleep(0.5)

    def _tail(self, client: docker.DockerClient, name: str) -> str:
        try:
            raw = client.api.logs(name, tail=_LOG_TAIL)
            return str(raw.decode(errors="replace").rstrip() or "(no output)")
        except docker.errors.DockerException as exc:
            return f"(logs unavailable: {exc})"

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
            raise ProvisionError(f"docker: cannot read Ray/Python versions on {head}: {out!r}")
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
            raise TimeoutError(
                f"docker: {what} on {node} did not finish in {timeout:.0f} s"
            ) from exc
        code = client.api.exec_inspect(exec_id).get("ExitCode")
        out = (stdout or b"").decode(errors="replace")
        err = (stderr or b"").decode(errors="replace")
        if code == 124:
            raise TimeoutError(
                f"docker: {what} on {node} did not finish in {timeout:.0f} s; output:\n{out}{err}"
            )
        if check and code != 0:
            raise RuntimeError(f"docker: {what} on {node} exited {code}; output:\n{out}{err}")
        return out if check else out + err

    def _wait_container(
        self, client: docker.DockerClient, container: Any, timeout: float, *, what: str
    ) -> str:
        container.start()
        try:
            with http_timeout(client, timeout):
                result = container.wait()
        except requests.exceptions.RequestException as exc:
            raise TimeoutError(
                f"docker: {what} in {container.name} did not finish in {timeout:.0f} s"
            ) from exc
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if result.get("StatusCode") != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            raise RuntimeError(
                f"docker: {what} in {container.name} exited {result.get('StatusCode')}; "
                f"output:\n{out}{err}"
            )
        return str(out)

    def _labeled(self, client: docker.DockerClient) -> dict[str, list[Any]]:
        spec = self._require_spec()
        label = {"label": f"{RUN_ID_LABEL}={spec.run_id}"}
        # By exact name too (a container created by hand while debugging has no label); only
        # names this class makes, since "rc-a-" is also the start of another run's "rc-a-b-".
        ours = re.compile(re.escape(_prefix(spec.run_id)) + r"(net|head|worker-\d+|run-[0-9a-f]+)$")
        containers = {c.id: c for c in client.containers.list(all=True, filters=label)}
        for c in client.containers.list(all=True, filters={"name": _prefix(spec.run_id)}):
            if ours.match(c.name):
                containers.setdefault(c.id, c)
        networks = {n.id: n for n in client.networks.list(filters=label)}
        for n in client.networks.list(names=[f"{_prefix(spec.run_id)}net"]):
            if ours.match(n.name):
                networks.setdefault(n.id, n)
        return {
            "containers": list(containers.values()),
            "networks": list(networks.values()),
            "volumes": client.volumes.list(filters=label),
        }


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _conforms(p: DockerProvisioner) -> None:
    """Static conformance check: mypy fails here when a method drifts from the contract."""
    from provisioners.base import (
        Provisioner,
        SupportsImageRun,
        SupportsNodeExec,
        SupportsSharedMemory,
    )

    _a: Provisioner = p
    _b: SupportsNodeExec = p
    _c: SupportsSharedMemory = p
    _d: SupportsImageRun = p
