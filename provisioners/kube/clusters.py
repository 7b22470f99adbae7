"""Where a Kubernetes cluster comes from, separate from how Ray is deployed on it.

e2e-framework's split: a cluster provider creates (or finds) a cluster, hands out its
kubeconfig, loads an image into it, exports its logs and destroys it. ``KindCluster`` makes a
kind cluster of the run (or reuses a named one and deletes nothing of it); ``ExistingCluster``
is a cluster someone runs, reached by kubeconfig and context, of which nothing is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import docker.errors

from provisioners.contract.base import Deadline, InventoryItem, ProvisionError, listing
from provisioners.kube.api import Kube
from provisioners.kube.toolchain import KubeToolchain, ToolchainUnavailable, ensure_toolchain
from provisioners.kube.toolchain import kind_config as offline_kind_config
from provisioners.kube.toolchain.build import cache_root, preload
from provisioners.util import runstate
from provisioners.util.containers import docker_client, one_line
from provisioners.util.runner import Background, CommandError, CommandTimeout, run
from provisioners.util.waits import WaitTimeout, file_lock

#: Label kind puts on its node containers: the cluster's name.
KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"
#: The kind node image with the run's Ray and operator images baked in.
LOADED_NODE_REPO = "ray-conformance-kind-node-loaded"
#: A `docker` first on kind's PATH that labels kind's node containers and network with the run.
LABELS_WRAPPER_DIR = Path(__file__).resolve().parent / "labels"


class ClusterProvider(Protocol):
    """One Kubernetes cluster's lifecycle, as the kube modes use it."""

    owned: bool  # False: the run did not create the cluster and deletes nothing of it

    def create(self, timeout: float) -> Kube:
        """Create (or reach) the cluster; return how to talk to it."""
        ...

    def preload(self, images: Sequence[str], timeout: float) -> None:
        """Before ``create``: put ``images`` where new nodes start with them, if the cluster can."""
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

    def remove_command(self) -> str:
        """The command that removes a kept cluster the run owns; "" when it owns none."""
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
        mode: str = "",
        secrets_dir: Path | None = None,
    ) -> None:
        self.run_id = run_id
        self.name = name
        self.workdir = workdir
        self.progress = progress
        self.owned = not reuse
        self.mode = mode
        #: Where the admin kubeconfig goes: never the report (the workdir), when given.
        self.secrets_dir = secrets_dir
        self.tools: KubeToolchain | None = None
        self._created = False
        self._node_image: str | None = None  # the toolchain's, or one with images baked in
        self._preloaded: set[str] = set()
        self._background = Background(run_id, workdir / "warm-up")

    def prepare(self, timeout: float) -> KubeToolchain:
        """kind, kubectl, the node and operator images: built once per machine, then cached."""
        if self.tools is None:
            try:
                self.tools = ensure_toolchain(self.progress, timeout)
            except ToolchainUnavailable as exc:
                raise ProvisionError(f"kind toolchain: {exc}") from None
        return self.tools

    def preload(self, images: Sequence[str], timeout: float) -> None:
        """Bake ``images`` into the node image this run's cluster starts from.

        Built once per machine (cached by the node image's and the images' ids): a run then
        starts with them in its containerd and skips ``kind load`` (docker save, copy, import:
        about half a minute for the Ray image). A reused cluster's node exists already.
        """
        tools = self.prepare(timeout)
        if not self.owned:
            return
        t0 = time.monotonic()
        self._node_image = node_image_with(tools, images, self.progress, timeout)
        self._preloaded = set(images)
        self.progress(
            f"node image with {len(images)} image(s) ready in {time.monotonic() - t0:.1f} s"
        )

    def _env(self) -> dict[str, str]:
        tools = self.tools
        assert tools is not None
        # The docker wrapper (first on PATH) swaps --privileged for its equivalent only on
        # hosts whose capability bounding set lacks what --privileged asks for (ours).
        # Then the labels wrapper: the toolchain's takes the first other `docker` on PATH as
        # the real one, and the labels wrapper hands on to the next after itself.
        dirs = [*(str(d) for d in tools.path_dirs), str(LABELS_WRAPPER_DIR)]
        return {
            "PATH": os.pathsep.join([*dirs, os.environ.get("PATH", "")]),
            # Read by the labels wrapper: kind's node containers and network carry the run's.
            **runstate.run_env(self.run_id, self.mode),
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
        return (self.secrets_dir or self.workdir) / "kubeconfig"

    def create(self, timeout: float) -> Kube:
        deadline = Deadline.after(timeout, f"kind cluster {self.name}")
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
                        "create",
                        "cluster",
                        "--name",
                        self.name,
                        "--image",
                        self._node_image or tools.node_image,
                        "--config",
                        str(config),
                        "--kubeconfig",
                        str(self.kubeconfig),
                        "--wait",
                        f"{int(deadline.left())}s",
                    ],
                    deadline.left() + 30,  # kind's own --wait first
                    what=f"kind create cluster {self.name}",
                )
            except (CommandError, CommandTimeout) as exc:
                raise ProvisionError(str(exc)) from None
            self.progress(f"kind cluster {self.name} ready in {time.monotonic() - t0:.1f} s")
            self._warm_up()
        else:
            try:
                out = self._kind(
                    ["get", "kubeconfig", "--name", self.name], 30, what="kind get kubeconfig"
                )
            except CommandError as exc:
                raise ProvisionError(
                    f"--ray-kind-cluster {self.name}: no such kind cluster ({exc})"
                ) from None
            runstate.write_private(self.kubeconfig, out)
        return Kube(
            self.kubeconfig,
            cache_file=self.workdir / "discovery.json",
            kubectl_path=str(tools.kubectl),
        )

    def load_image(self, image: str, timeout: float) -> None:
        if image in self._preloaded and self._created:
            return  # in the node image the cluster started from
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

    def _warm_up(self) -> None:
        """Unpack the baked-in images now, while the operator comes up (about 14 s for Ray's).

        Baked in packed (a build container cannot unpack onto overlay), they would otherwise
        be unpacked when the first Ray pod starts, in series with everything before it.
        """
        node = f"{self.name}-control-plane"  # kind's name for a single node's container
        for ref in sorted(self._preloaded):
            full = ref if "/" in ref.split(":", 1)[0] else f"docker.io/library/{ref}"
            mount = f"/tmp/rc-warm-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"
            script = (
                f"mkdir -p {mount} && ctr -n k8s.io images mount --snapshotter overlayfs "
                f"{full} {mount} >/dev/null && ctr -n k8s.io images unmount --rm {mount}"
            )
            self._background.spawn(["docker", "exec", node, "sh", "-c", script], f"unpack {ref}")

    def destroy(self, timeout: float) -> None:
        self._background.close()
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
        # A listing that fails raises InventoryError naming it: never read as "no such cluster".
        with listing("kind clusters"):
            names = self._kind(["get", "clusters"], 30, what="kind get clusters").split()
        if self.name in names:
            items.append(InventoryItem("kind-cluster", self.name, self.run_id))
        with listing(f"Docker containers and network of kind cluster {self.name}"):
            client = docker_client()
            try:
                label = {"label": f"{KIND_CLUSTER_LABEL}={self.name}"}
                for c in client.containers.list(all=True, filters=label):
                    items.append(
                        InventoryItem("container", c.name, self.run_id, f"kind node {c.status}")
                    )
                for net in client.networks.list(names=[self.name]):
                    if net.name == self.name:
                        items.append(
                            InventoryItem("network", net.name, self.run_id, "kind's network")
                        )
            finally:
                client.close()
        return items

    def remove_command(self) -> str:
        if not self.owned:
            return ""
        # kind is in the project's cache, not on PATH: the sweep removes the cluster's node
        # containers and network by the run's labels, and the kubeconfig, from any shell.
        return runstate.sweep_command(self.run_id, self.mode)


def node_image_with(
    tools: KubeToolchain, images: Sequence[str], progress: Callable[[str], None], timeout: float
) -> str:
    """The toolchain's kind node image with ``images`` in its containerd (built once, cached)."""
    deadline = Deadline.after(timeout, "the kind node image build")
    client = docker_client(timeout=timeout)
    try:
        ids = [client.images.get(ref).id for ref in (tools.node_image, *images)]
    except docker.errors.ImageNotFound as exc:
        raise ProvisionError(f"kind node image: {one_line(exc)}") from None
    finally:
        client.close()
    key = hashlib.sha256(json.dumps([ids, sorted(images)]).encode()).hexdigest()[:12]
    tag = f"{LOADED_NODE_REPO}:{tools.kubernetes_version}-{key}"
    work = cache_root() / "loaded"
    try:
        with file_lock(work / "build.lock", deadline, progress, "kind node image build"):
            if _has_image(tag):
                return tag
            progress(f"baking {', '.join(images)} into {tag} (once per machine) ...")
            work.mkdir(parents=True, exist_ok=True)
            preload(tools.node_image, tag, images, work, key, deadline)
    except (ToolchainUnavailable, WaitTimeout) as exc:
        raise ProvisionError(f"kind node image: {exc}") from None
    return tag


def _has_image(ref: str) -> bool:
    client = docker_client()
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return True


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

    def preload(self, images: Sequence[str], timeout: float) -> None:
        """Nothing to do: the cluster's nodes exist already."""

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
