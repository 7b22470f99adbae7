"""A run's throwaway service containers, as testcontainers ``DockerContainer``s.

The rehearsals' cloud stand-ins (moto's server, the IBM VPC stand-in) and their client
container, and the containers the harness's tests start: testcontainers gives them their
lifecycle (create, start, a wait strategy, logs, stop). Each carries the run's labels, so the
run's inventory lists it and ``provisioners sweep`` removes it after a crash like every other
object of the run. The node containers of the docker and vm modes stay on the Docker SDK
(``provisioners/modes/docker``, ``provisioners/sources/vm.py``): they are the cluster under test, with shm,
egress rules, restarts and per-node exec that the modes manage themselves.

Images are never pulled: each is built or cached here first, and a missing one is an error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker.errors
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import ContainerStatusWaitStrategy
from testcontainers.core.waiting_utils import WaitStrategy

from provisioners.contract.base import ProvisionError
from provisioners.util.containers import addresses, one_line

# Ryuk, testcontainers' reaper, is an image pulled from Docker Hub at the first start, which
# machines without registry access cannot do: off. The run's labels and the sweep reap instead.
testcontainers_config.ryuk_disabled = True

#: How much of a failed container's log a message quotes (the whole log goes to diagnostics).
LOG_TAIL_CHARS = 1500


class Service(DockerContainer):
    """One service container of a run: labelled, never pulled, its failure quoting its log.

    ``network`` and ``ip`` put it on a network the run created (with its own address plan);
    ``wait`` is the testcontainers wait strategy that says it is ready (default: running).
    """

    def __init__(
        self,
        image: str,
        command: list[str],
        *,
        name: str,
        labels: Mapping[str, str],
        docker_host: str | None = None,
        env: Mapping[str, str] | None = None,
        volumes: Mapping[str, Mapping[str, str]] | None = None,
        network: str | None = None,
        ip: str | None = None,
        wait: WaitStrategy | None = None,
        **kwargs: Any,
    ) -> None:
        client_kw: dict[str, Any] = {}
        if docker_host:
            client_kw["environment"] = {**os.environ, "DOCKER_HOST": docker_host}
        super().__init__(image, docker_client_kw=client_kw, name=name)
        self.with_command(command)
        self.with_envs(**dict(env or {}))
        for host, bind in (volumes or {}).items():
            self.with_volume_mapping(host, bind["bind"], bind.get("mode", "ro"))
        # Always a network of our choosing: without one, testcontainers guesses the "host
        # network" (on a machine inside a container, some network of that engine's).
        run_kwargs: dict[str, Any] = {"labels": dict(labels), "network": network or "bridge"}
        if network is not None:
            api = self.get_docker_client().client.api
            run_kwargs["networking_config"] = {network: api.create_endpoint_config(ipv4_address=ip)}
        run_kwargs.update(kwargs)
        self.with_kwargs(**run_kwargs)
        self.waiting_for(wait or ContainerStatusWaitStrategy())
        self.name = name

    def start_within(self, timeout: float) -> Service:
        """Start it and wait for its strategy, both within ``timeout``; on failure, remove it
        and raise :class:`ProvisionError` naming it, with the tail of its log."""
        client = self.get_docker_client().client
        try:
            client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise ProvisionError(
                f"{self.name}: image {self.image} is not on this engine (built or cached "
                "here first, never pulled)"
            ) from None
        assert self._wait_strategy is not None
        self._wait_strategy.with_startup_timeout(max(1, round(timeout)))
        started = time.monotonic()
        try:
            self.start()
        # StopIteration: testcontainers' status strategy saw the container exit.
        except (TimeoutError, RuntimeError, StopIteration, docker.errors.DockerException) as exc:
            tail = self.log_text()[-LOG_TAIL_CHARS:]
            self.stop()
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ProvisionError(
                f"{self.name} not ready after {time.monotonic() - started:.0f} s "
                f"(bounded by {timeout:.0f} s): {one_line(Exception(first))}"
                + (f"; its log ends: {tail}" if tail else "")
            ) from None
        return self

    def log_text(self) -> str:
        """Its stdout and stderr so far ('' when it never got created or is gone)."""
        if self._container is None:
            return ""
        try:
            out, err = self.get_logs()
        except docker.errors.DockerException:
            return ""
        return (out + err).decode(errors="replace")

    def save_log(self, dest: Path) -> None:
        """Its log into ``dest/<name>.log`` (diagnostics of a failed run)."""
        text = self.log_text()
        if text:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / f"{self.name}.log").write_text(text)

    def address(self, network: str) -> str:
        """Its IPv4 address on ``network``."""
        box = self.get_wrapped_container()
        box.reload()
        return addresses(box)[network]

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        """Remove it (gone already is fine) and close its engine client."""
        try:
            super().stop(force, delete_volume)
        except docker.errors.NotFound:
            self.get_docker_client().client.close()


def network(labels: Mapping[str, str], **kwargs: Any) -> Network:
    """A throwaway network (testcontainers names it), labelled as the run's objects are."""
    return Network(docker_network_kw={"labels": dict(labels), **kwargs})
