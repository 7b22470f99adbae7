"""Docker objects of one run and one mode: the engine client, and their inventory and removal.

Every container, network and volume a mode creates carries two labels, the run id and the
mode, so two modes of one run (``docker`` and ``vm`` side by side under xdist) never list or
remove each other's objects, and a half-done provision is found even when no id came back.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions

from provisioners.contract.base import RUN_ID_LABEL, InventoryItem, listing
from provisioners.contract.options import Option
from provisioners.util.naming import run_name
from provisioners.util.waits import wait_for

#: Label key naming the mode that created an object (beside ``RUN_ID_LABEL``).
MODE_LABEL = "ray-conformance.mode"

DOCKER_HOST = Option.string(
    "docker-host", "Docker engine URL for container modes (default: the environment's engine)"
)

#: What a dead or unreachable engine raises through the SDK.
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def docker_client(docker_host: str | None = None, timeout: float = 60.0) -> docker.DockerClient:
    """A client for ``docker_host`` (or the environment's engine) without touching os.environ."""
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return docker.from_env(environment=env, timeout=max(1, round(timeout)))


def engine_problem(docker_host: str | None, timeout: float = 5.0) -> str | None:
    """Why no engine answers at ``docker_host`` (one line), or None when one does."""
    try:
        client = docker_client(docker_host, timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure to reach the engine means "skip", with why
        where = docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
        return f"no Docker engine answers at {where} ({type(exc).__name__}: {one_line(exc)})"
    return None


@contextlib.contextmanager
def http_timeout(client: docker.DockerClient, seconds: float) -> Iterator[None]:
    """Bound each HTTP request ``client`` makes inside the block (pulls, imports, exec)."""
    saved = client.api.timeout
    client.api.timeout = max(1, round(seconds))
    try:
        yield
    finally:
        client.api.timeout = saved


def one_line(exc: BaseException) -> str:
    """The engine's own explanation, without the SDK's "500 Server Error for http+docker://..."."""
    text = " ".join(str(getattr(exc, "explanation", None) or exc).split())
    return text[:300]


def labels(run_id: str, mode: str) -> dict[str, str]:
    """The labels every Docker object of ``mode`` in run ``run_id`` carries."""
    return {RUN_ID_LABEL: run_id, MODE_LABEL: mode}


@dataclass(frozen=True)
class RunObjects:
    containers: list[Any]
    networks: list[Any]
    volumes: list[Any]


def run_objects(client: docker.DockerClient, run_id: str, mode: str) -> RunObjects:
    """This run's objects of ``mode`` that still exist (both labels must match)."""
    flt = {"label": [f"{k}={v}" for k, v in labels(run_id, mode).items()]}
    return RunObjects(
        containers=client.containers.list(all=True, filters=flt),
        networks=client.networks.list(filters=flt),
        volumes=client.volumes.list(filters=flt),
    )


def inventory(client: docker.DockerClient, run_id: str, mode: str) -> list[InventoryItem]:
    """The run's containers, networks and volumes of ``mode``.

    A listing the engine refuses raises :class:`InventoryError` naming the kind, never "nothing".
    """
    flt = {"label": [f"{k}={v}" for k, v in labels(run_id, mode).items()]}
    with listing(f"Docker containers of run {run_id} ({mode})"):
        items = [
            InventoryItem("container", c.name, run_id, f"{c.short_id} {c.status}")
            for c in client.containers.list(all=True, filters=flt)
        ]
    with listing(f"Docker networks of run {run_id} ({mode})"):
        items += [
            InventoryItem("network", n.name, run_id, n.short_id)
            for n in client.networks.list(filters=flt)
        ]
    with listing(f"Docker volumes of run {run_id} ({mode})"):
        items += [InventoryItem("volume", v.name, run_id) for v in client.volumes.list(filters=flt)]
    return items


#: A create the run was interrupted in may still be finished by the engine after the process
#: stopped waiting (seen: a vm worker container appeared after teardown had listed the run's
#: objects). Removal after such an interruption keeps looking until nothing of the run has been
#: listed for LATE_QUIET_S, within LATE_BOUND_S.
LATE_QUIET_S = 3.0
LATE_BOUND_S = 30.0


def remove(client: docker.DockerClient, run_id: str, mode: str, *, late: bool = False) -> None:
    """Remove this run's containers (with their volumes), networks and volumes of ``mode``.

    ``late``: the run was interrupted while asking the engine to create something; look again
    until the engine has nothing more of it (bounded).
    """
    _remove_found(client, run_id, mode)
    if not late:
        return
    quiet_since = time.monotonic()

    def quiet() -> bool:
        nonlocal quiet_since
        if _remove_found(client, run_id, mode):
            quiet_since = time.monotonic()
        return time.monotonic() - quiet_since >= LATE_QUIET_S

    wait_for(
        quiet,
        timeout=LATE_BOUND_S,
        what=f"the engine to have nothing more of run {run_id} ({mode}) to remove",
        interval=0.5,
    )


def _remove_found(client: docker.DockerClient, run_id: str, mode: str) -> int:
    """Remove what of the run is listed now; how many objects that was."""
    found = run_objects(client, run_id, mode)
    for c in found.containers:
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True, v=True)
    for n in found.networks:
        with contextlib.suppress(docker.errors.NotFound):
            n.remove()
    for v in found.volumes:
        with contextlib.suppress(docker.errors.NotFound):
            v.remove(force=True)
    return len(found.containers) + len(found.networks) + len(found.volumes)


#: Tries a TCP connection to each ``[address, port]`` of argv[1] (JSON), bounded by argv[2]
#: seconds each; prints the ones that connected (JSON). Runs with the node image's Python.
PROBE_SCRIPT = """
import json, socket, sys
answered = []
for address, port in json.loads(sys.argv[1]):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(float(sys.argv[2]))
        try:
            s.connect((address, port))
            answered.append([address, port])
        except OSError:
            pass
print("ANSWERED " + json.dumps(answered))
"""


def probe_from_outside(
    client: docker.DockerClient,
    image: str,
    run_id: str,
    mode: str,
    targets: list[tuple[str, int]],
    timeout: float,
) -> set[tuple[str, int]]:
    """The targets that accept a connection from a container on a network of its own.

    A stranger's vantage point: another network on the same engine, as another tenant's
    container (or anything routed to the nodes' addresses from elsewhere) would be.
    """
    if not targets:
        return set()
    name = run_name(run_id, mode, "probe")
    net = client.networks.create(name, driver="bridge", labels=labels(run_id, mode))
    try:
        with http_timeout(client, 60 + timeout * len(targets)):
            out = client.containers.run(
                image,
                ["python3", "-c", PROBE_SCRIPT, json.dumps(targets), str(timeout)],
                name=name,
                network=net.name,
                labels=labels(run_id, mode),
                remove=True,
            )
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)
        net.remove()
    line = next(ln for ln in out.decode().splitlines() if ln.startswith("ANSWERED "))
    return {(str(a), int(p)) for a, p in json.loads(line.removeprefix("ANSWERED "))}


def addresses(container: Any) -> dict[str, str]:
    """A container's IPv4 address on each of its networks, by network name."""
    nets = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return {name: str(n.get("IPAddress")) for name, n in nets.items() if n.get("IPAddress")}
