"""Where a Kubernetes cluster comes from, separate from how Ray is deployed on it.

e2e-framework's split: a cluster provider creates (or finds) a cluster, hands out its
kubeconfig, loads an image into it, exports its logs and destroys it. ``KindCluster`` makes a
kind cluster of the run (or reuses a named one and deletes nothing of it); ``ExistingCluster``
is a cluster someone runs, reached by kubeconfig and context, of which nothing is deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import docker.errors

from provisioners.base import InventoryItem, ProvisionError
from provisioners.containers import docker_client
from provisioners.kube.api import Kube
from provisioners.kube.toolchain import KubeToolchain, ToolchainUnavailable, ensure_toolchain
from provisioners.kube.toolchain import kind_config as offline_kind_config
from provisioners.runner import CommandError, CommandTimeout, run

#: Label kind puts on its node containers: the cluster's name.
KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"


class ClusterProvider(Protocol):
    """One Kubernetes cluster's lifecycle, as the kube modes use it."""

    owned: bool  # False: the run did not create the cluster and deletes nothing of it

    def create(self, timeout: float) -> Kube:
        """Create (or reach) the cluster; return how to talk to it."""
        ...

    def load_image(self, image: str, timeout: float) -> None:
        """Make ``image`` available to the cluster's nodes (a no-op where they pull it)."""
        ...

    def export_logs(self, dest: Path) -> None: ...

    def destroy(self, timeout: float) -> None:
        """Remove the cluster if the run created it. Idempotent."""
        ...

    def inventory(self) -> list[InventoryItem]:
        """The cluster itself and its machines, while they exist and the run owns them."""
        ...


class KindCluster:
    """A kind cluster: the run's own (``rc-<run>-kind``), or a named one to reuse."""

    def __init__(
        self,
        *,
        run_id: str,
        name: str,
        workdir: Path,
        progress: Callable[[str], None],
        reuse: bool = False,
    ) -> None:
        self.run_id = run_id
        self.name = name
        self.workdir = workdir
        self.progress = progress
        self.owned = not reuse
        self.tools: KubeToolchain | None = None
        self._created = False

    def prepare(self, timeout: float) -> KubeToolchain:
        """kind, kubectl, the node and operator images: built once per machine, then cached."""
        if self.tools is None:
            try:
                self.tools = ensure_toolchain(self.progress, timeout)
            except ToolchainUnavailable as exc:
                raise ProvisionError(f"kind toolchain: {exc}") from None
        return self.tools

    def _env(self) -> dict[str, str]:
        tools = self.tools
        assert tools is not None
        # The docker wrapper (first on PATH) swaps --privileged for its equivalent only on
        # hosts whose capability bounding set lacks what --privileged asks for (ours).
        dirs = [str(d) for d in tools.path_dirs]
        return {
            "PATH": os.pathsep.join([*dirs, os.environ.get("PATH", "")]),
            # A network of the cluster's own, removed with it: kind's shared `kind` network
            # outlives every cluster (and would tie two runs' clusters together).
            "KIND_EXPERIMENTAL_DOCKER_NETWORK": self.name,
        }

    def _kind(self, args: list[str], timeout: float, what: str) -> str:
        tools = self.tools
        assert tools is not None
        return run([str(tools.kind), *args], timeout, what=what, env=self._env())

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def create(self, timeout: float) -> Kube:
        deadline = time.monotonic() + timeout
        tools = self.prepare(timeout)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.owned:
            config = self.workdir / "kind.yaml"
            config.write_text(offline_kind_config())
            t0 = time.monotonic()
            self.progress(f"kind create cluster {self.name} ({tools.kubernetes_version})")
            self._created = True  # from here on a failure may have left a half-made cluster
            try:
                self._kind(
                    [
                        "create", "cluster", "--name", self.name, "--image", tools.node_image,
                        "--config", str(config), "--kubeconfig", str(self.kubeconfig),
                        "--wait", f"{int(max(1, deadline - time.monotonic()))}s",
                    ],
                    max(1.0, deadline - time.monotonic()) + 30,
                    what=f"kind create cluster {self.name}",
                )  # fmt: skip
            except (CommandError, CommandTimeout) as exc:
                raise ProvisionError(str(exc)) from None
            self.progress(f"kind cluster {self.name} ready in {time.monotonic() - t0:.1f} s")
        else:
            try:
                out = self._kind(
                    ["get", "kubeconfig", "--name", self.name], 30, what="kind get kubeconfig"
                )
            except CommandError as exc:
                raise ProvisionError(
                    f"--ray-kind-cluster {self.name}: no such kind cluster ({exc})"
                ) from None
            self.kubeconfig.write_text(out)
        return Kube(
            self.kubeconfig,
            cache_file=self.workdir / "discovery.json",
            kubectl_path=str(tools.kubectl),
        )

    def load_image(self, image: str, timeout: float) -> None:
        t0 = time.monotonic()
        try:
            self._kind(
                ["load", "docker-image", image, "--name", self.name],
                timeout,
                what=f"kind load docker-image {image}",
            )
        except (CommandError, CommandTimeout) as exc:
            raise ProvisionError(str(exc)) from None
        self.progress(f"loaded {image} into {self.name} in {time.monotonic() - t0:.1f} s")

    def node_address(self) -> str:
        """The control-plane node's IP on the cluster's Docker network (reached from this host)."""
        client = docker_client()
        try:
            label = {"label": f"{KIND_CLUSTER_LABEL}={self.name}"}
            for c in client.containers.list(filters=label):
                networks = c.attrs["NetworkSettings"]["Networks"]
                for net_name, net in networks.items():
                    if net.get("IPAddress") and net_name in (self.name, "kind"):
                        return str(net["IPAddress"])
        finally:
            client.close()
        raise ProvisionError(f"kind cluster {self.name}: no node container with an address")

    def export_logs(self, dest: Path) -> None:
        if self.tools is None or not self._exists():
            return
        self._kind(["export", "logs", str(dest), "--name", self.name], 300, what="kind export logs")

    def destroy(self, timeout: float) -> None:
        if not self.owned or not self._created or self.tools is None:
            return
        self._kind(["delete", "cluster", "--name", self.name], timeout, what="kind delete cluster")
        with contextlib.suppress(FileNotFoundError):
            self.kubeconfig.unlink()
        client = docker_client()
        try:
            for net in client.networks.list(names=[self.name]):
                if net.name == self.name:  # `names` matches substrings
                    with contextlib.suppress(docker.errors.NotFound):
                        net.remove()
        finally:
            client.close()

    def _exists(self) -> bool:
        try:
            return (
                self.name in self._kind(["get", "clusters"], 30, what="kind get clusters").split()
            )
        except (CommandError, CommandTimeout):
            return False

    def inventory(self) -> list[InventoryItem]:
        if not self.owned or self.tools is None:
            return []
        items = []
        if self._exists():
            items.append(InventoryItem("kind-cluster", self.name, self.run_id))
        client = docker_client()
        try:
            label = {"label": f"{KIND_CLUSTER_LABEL}={self.name}"}
            for c in client.containers.list(all=True, filters=label):
                items.append(
                    InventoryItem("container", c.name, self.run_id, f"kind node {c.status}")
                )
            for net in client.networks.list(names=[self.name]):
                if net.name == self.name:
                    items.append(InventoryItem("network", net.name, self.run_id, "kind's network"))
        finally:
            client.close()
        return items

    def remove_command(self) -> str:
        if not self.owned:
            return ""
        return f"kind delete cluster --name {self.name} && docker network rm {self.name}"


class ExistingCluster:
    """A cluster someone else runs: the run creates only its namespace and what it installs."""

    owned = False

    def __init__(
        self,
        *,
        kubeconfig: Path,
        context: str | None,
        workdir: Path,
        kubectl: str | None = None,
    ) -> None:
        self.kubeconfig_path = kubeconfig
        self.context = context
        self.workdir = workdir
        self.kubectl = kubectl or shutil.which("kubectl") or "kubectl"

    def create(self, timeout: float) -> Kube:
        if not self.kubeconfig_path.is_file():
            raise ProvisionError(f"--ray-kubeconfig {self.kubeconfig_path}: no such file")
        self.workdir.mkdir(parents=True, exist_ok=True)
        return Kube(
            self.kubeconfig_path,
            cache_file=self.workdir / "discovery.json",
            context=self.context,
            kubectl_path=self.kubectl,
        )

    def load_image(self, image: str, timeout: float) -> None:
        """Nothing to do: an existing cluster's nodes pull (or already have) the image."""

    def export_logs(self, dest: Path) -> None:
        """Nothing of the cluster's own: the deployer saves the run namespace's logs."""

    def destroy(self, timeout: float) -> None:
        """Never: the cluster is not the run's."""

    def inventory(self) -> list[InventoryItem]:
        return []

    def remove_command(self) -> str:
        return ""
