"""An offline Kubernetes toolchain for kind: every binary and image built here, none pulled.

Nothing comes from a container registry. Kubernetes, etcd, CoreDNS, crictl, kind and the
KubeRay operator are compiled from the Go module proxy; the node's root filesystem is Debian
bookworm from ``debootstrap`` (its systemd 252 still boots on cgroup v1 hosts, which kind's own
trixie base would refuse); the control-plane images are ``FROM scratch`` plus one static binary
and are imported into the node's containerd at build time, so a cluster starts with no pull.

Everything lands under ``${XDG_CACHE_HOME:-~/.cache}/ray-conformance/kube/<hash>/``, where the
hash covers the versions and the content of every file of this package, and images carry that
hash as a label and in their tag. A second call finds it all in seconds; a file lock makes
concurrent callers share one build.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors

from provisioners.contract.base import Deadline
from provisioners.util.containers import ENGINE_ERRORS, docker_client, engine_problem, one_line
from provisioners.util.nodeimage import IMAGE_HASH_LABEL
from provisioners.util.runner import CommandError, CommandTimeout, run_full
from provisioners.util.runstate import project_cache
from provisioners.util.waits import WaitTimeout, file_lock

#: Newest v1.34.z on the module proxy (2026-11-26). 1.35+ refuses cgroup v1 hosts unless
#: ``failCgroupV1: false``; 1.34 only warns, and kind v0.33 knows its kubeadm config (v1beta4).
KUBERNETES_VERSION = "v1.34.4"
#: The staging modules (k8s.io/api, client-go, ...) are tagged v0.x.y for Kubernetes v1.x.y.
STAGING_VERSION = "v0." + KUBERNETES_VERSION.split(".", 1)[1]
KIND_VERSION = "v0.33.0"
#: What kubeadm 1.34 deploys (constants.SupportedEtcdVersion / CoreDNSVersion).
ETCD_VERSION = "v3.6.5"
COREDNS_VERSION = "v1.12.1"
CRI_TOOLS_VERSION = "v1.34.0"
#: Newest ray-operator module on the proxy.
KUBERAY_VERSION = "v1.5.0"
DEBIAN_SUITE = "bookworm"

#: Label stamped on every image built here: the hash of the inputs.
NODE_REPO = "ray-conformance-kind-node"
OPERATOR_REPO = "ray-conformance-kuberay-operator"

#: The node's packages. containerd is Debian's 1.6 (kubelet 1.34 still accepts CRI v1 on it).
NODE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "nftables",
    "conntrack",
    "socat",
    "ethtool",
    "kmod",
    "iproute2",
    "util-linux",
    "mount",
    "procps",
    "ca-certificates",
    "libseccomp2",
    "pigz",
)
#: kube-proxy drives iptables and conntrack from inside its pod.
PROXY_PACKAGES = ("iptables", "conntrack", "kmod")

#: Registries whose names the node's containerd points at a closed port.
BLOCKED_REGISTRIES = (
    "_default",
    "docker.io",
    "registry-1.docker.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "quay.io",
    "ghcr.io",
    "public.ecr.aws",
    "mcr.microsoft.com",
)

POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/12"

_K8S_COMMANDS = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
)
_PACKAGE_DIR = Path(__file__).parent
_NODE_FILES = _PACKAGE_DIR / "node"
_TAIL_LINES = 15
T = TypeVar("T")


@dataclass(frozen=True)
class KubeToolchain:
    """What a kind-based mode needs; every path is inside the cache, every image local."""

    kind: Path
    kubectl: Path
    path_dirs: tuple[Path, ...]
    node_image: str
    operator_image: str
    operator_manifests: Path
    kubernetes_version: str
    kuberay_version: str


class ToolchainUnavailable(Exception):
    """A prerequisite is missing or a build step failed; the message names which."""


def cache_root() -> Path:
    return project_cache() / "kube"


def input_hash() -> str:
    """sha256 (12 hex) of the versions, the package lists and every file of this package."""
    files = {}
    for path in sorted(_PACKAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = str(path.relative_to(_PACKAGE_DIR))
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    inputs = {
        "versions": [
            KUBERNETES_VERSION,
            STAGING_VERSION,
            KIND_VERSION,
            ETCD_VERSION,
            COREDNS_VERSION,
            CRI_TOOLS_VERSION,
            KUBERAY_VERSION,
            DEBIAN_SUITE,
        ],
        "node_packages": NODE_PACKAGES,
        "proxy_packages": PROXY_PACKAGES,
        "files": files,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def kind_config(api_server_port: int | None = None) -> str:
    """The kind cluster config for the offline node image (single node).

    No default CNI (kindnetd has no image here; the node carries a bridge conflist), the API
    server on loopback only, and a kubelet on the cgroupfs driver like the node's containerd
    (systemd-managed cgroups inside a cgroup-v1 node are what kind >= 0.13 picks and what we
    avoid).
    """
    port = f"\n  apiServerPort: {api_server_port}" if api_server_port is not None else ""
    return f"""kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  ipFamily: ipv4
  apiServerAddress: "127.0.0.1"{port}
  disableDefaultCNI: true
  kubeProxyMode: iptables
  podSubnet: "{POD_SUBNET}"
  serviceSubnet: "{SERVICE_SUBNET}"
nodes:
- role: control-plane
kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  cgroupDriver: cgroupfs
  failSwapOn: false
"""


def ensure_toolchain(progress: Callable[[str], None], timeout: float) -> KubeToolchain:
    """Build (or find cached) the whole toolchain and return where everything is.

    Args:
        progress: Receives one line per step, prefixed with elapsed seconds.
        timeout: Upper bound for the whole call in seconds (a cold build takes ~20-30 min on
            2 cores; a warm call a few seconds).

    Raises:
        ToolchainUnavailable: A prerequisite is missing (go, docker, debootstrap, gcc), or a
            step failed or ran out of time; the message names the command and its output tail.
    """
    started = time.monotonic()
    deadline = Deadline.after(timeout, "the toolchain build")

    def say(line: str) -> None:
        progress(f"[{time.monotonic() - started:6.1f} s] {line}")

    key = input_hash()
    root = cache_root()
    work = root / key
    state = work / "toolchain.json"
    cached = _load_state(state)
    if cached is not None and _images_present(cached, deadline):
        say(f"kube toolchain {key} cached")
        return cached
    _check_prerequisites()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(root / "build.lock", deadline, say, "toolchain build"):
            cached = _load_state(state)
            if cached is not None and _images_present(cached, deadline):
                say(f"kube toolchain {key} cached (built by another process)")
                return cached
            work.mkdir(parents=True, exist_ok=True)
            result = _Builder(work, key, deadline, say).build()
            state.write_text(json.dumps(asdict(result), default=str, indent=1))
            say(f"kube toolchain {key} ready")
            return result
    except WaitTimeout as exc:  # another process's build held the lock past the deadline
        raise ToolchainUnavailable(str(exc)) from None


class _Builder:
    def __init__(
        self, work: Path, key: str, deadline: Deadline, say: Callable[[str], None]
    ) -> None:
        self.work = work
        self.key = key
        self.deadline = deadline
        self.say = say
        self.bin = work / "bin"
        self.go = _go_binary()
        self.env = {
            **os.environ,
            "GOWORK": "off",
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-mod=mod",
            "CGO_ENABLED": "0",
        }

    def build(self) -> KubeToolchain:
        self.bin.mkdir(exist_ok=True)
        # debootstrap is network-bound and the Go build CPU-bound: run them side by side.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            node_root = pool.submit(self._rootfs, "node-rootfs", NODE_PACKAGES)
            proxy_root = pool.submit(self._rootfs, "proxy-rootfs", PROXY_PACKAGES)
            self._go_builds()
            self._pause()
            node_dir, proxy_dir = node_root.result(), proxy_root.result()
        images = self._component_images(proxy_dir)
        node_image = self._node_image(node_dir, images)
        operator_image = self._operator_image()
        manifests = self._manifests(operator_image)
        wrapper_dir = self._docker_wrapper()
        return KubeToolchain(
            kind=self.bin / "kind",
            kubectl=self.bin / "kubectl",
            path_dirs=(wrapper_dir,),
            node_image=node_image,
            operator_image=operator_image,
            operator_manifests=manifests,
            kubernetes_version=KUBERNETES_VERSION,
            kuberay_version=KUBERAY_VERSION,
        )

    # -- Go ---------------------------------------------------------------------------------

    def _go(self, args: Sequence[str], cwd: Path, what: str) -> str:
        return _run([str(self.go), *args], self.deadline, what, cwd=cwd, env=self.env)

    def _module_dir(self, module: str, version: str) -> Path:
        out = self._go(
            ["mod", "download", "-json", f"{module}@{version}"],
            self.work,
            f"go mod download {module}",
        )
        return Path(json.loads(out)["Dir"])

    def _gen_module(
        self, name: str, requires: Mapping[str, str], replaces: Mapping[str, str]
    ) -> Path:
        """A throwaway main module: lets us build modules whose own replace directives make
        ``go install pkg@version`` refuse them (Kubernetes, etcd)."""
        mod = self.work / "gomod" / name
        mod.mkdir(parents=True, exist_ok=True)
        lines = [f"module rcbuild/{name}", "", "go 1.24", ""]
        lines += [f"require {m} {v}" for m, v in sorted(requires.items())]
        if replaces:
            lines += ["", "replace ("]
            lines += [f"\t{m} => {m} {v}" for m, v in sorted(replaces.items())]
            lines += [")"]
        (mod / "go.mod").write_text("\n".join(lines) + "\n")
        return mod

    def _go_build(
        self,
        name: str,
        requires: Mapping[str, str],
        packages: Mapping[str, str],
        *,
        replaces: Mapping[str, str] | None = None,
        ldflags: str = "",
    ) -> None:
        """Build each ``packages`` entry (binary name -> import path) into ``self.bin``."""
        if all((self.bin / b).exists() for b in packages):
            self.say(f"{name}: cached ({', '.join(packages)})")
            return
        t0 = time.monotonic()
        self.say(f"{name}: go build {', '.join(packages)} ...")
        mod = self._gen_module(name, requires, replaces or {})
        version = next(iter(requires.values()))
        self._go(["get", *(f"{p}@{version}" for p in packages.values())], mod, f"go get ({name})")
        out = mod / "bin"
        out.mkdir(exist_ok=True)
        flags = f"-s -w {ldflags}".strip()
        self._go(
            ["build", "-trimpath", f"-ldflags={flags}", "-o", f"{out}/", *packages.values()],
            mod,
            f"go build ({name})",
        )
        for binary, pkg in packages.items():
            built = out / pkg.rstrip("/").rsplit("/", 1)[-1]
            if pkg.endswith("/v3"):  # a module root package is named after the path's element
                built = out / pkg.rsplit("/", 2)[-2]
            if not built.exists():
                raise ToolchainUnavailable(f"go build ({name}) made no {built}")
            shutil.move(built, self.bin / binary)
        self.say(f"{name}: built in {time.monotonic() - t0:.0f} s")

    def _go_builds(self) -> None:
        k8s_dir = self._module_dir("k8s.io/kubernetes", KUBERNETES_VERSION)
        staging = _staging_modules(k8s_dir / "go.mod")
        if not staging:
            raise ToolchainUnavailable(f"no k8s.io staging replace directives in {k8s_dir}/go.mod")
        major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
        ldflags = " ".join(
            f"-X {pkg}.{var}={val}"
            for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
            for var, val in (
                ("gitVersion", KUBERNETES_VERSION),
                ("gitMajor", major),
                ("gitMinor", minor),
                ("gitTreeState", "clean"),
                ("buildDate", "1970-01-01T00:00:00Z"),
            )
        )
        self._go_build(
            "kubernetes",
            {"k8s.io/kubernetes": KUBERNETES_VERSION},
            {c: f"k8s.io/kubernetes/cmd/{c}" for c in _K8S_COMMANDS},
            replaces={m: STAGING_VERSION for m in staging},
            ldflags=ldflags,
        )
        self._go_build(
            "etcd",
            {"go.etcd.io/etcd/server/v3": ETCD_VERSION},
            {"etcd": "go.etcd.io/etcd/server/v3"},
        )
        self._go_build(
            "coredns",
            {"github.com/coredns/coredns": COREDNS_VERSION},
            {"coredns": "github.com/coredns/coredns"},
        )
        self._go_build(
            "cri-tools",
            {"sigs.k8s.io/cri-tools": CRI_TOOLS_VERSION},
            {"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
            ldflags=f"-X sigs.k8s.io/cri-tools/pkg/version.Version={CRI_TOOLS_VERSION}",
        )
        self._go_build("kind", {"sigs.k8s.io/kind": KIND_VERSION}, {"kind": "sigs.k8s.io/kind"})
        self._go_build(
            "kuberay",
            {"github.com/ray-project/kuberay/ray-operator": KUBERAY_VERSION},
            {"kuberay-manager": "github.com/ray-project/kuberay/ray-operator"},
        )

    def _pause(self) -> None:
        """Kubernetes' pause, compiled statically from the source in the module cache."""
        target = self.bin / "pause"
        if target.exists():
            return
        src = (
            self._module_dir("k8s.io/kubernetes", KUBERNETES_VERSION) / "build/pause/linux/pause.c"
        )
        version = _pause_version(self._module_dir("k8s.io/kubernetes", KUBERNETES_VERSION))
        _run(
            [
                "gcc",
                "-Os",
                "-Wall",
                "-Werror",
                "-static",
                f"-DVERSION=v{version}",
                "-o",
                str(target),
                str(src),
            ],
            self.deadline,
            "gcc -static pause.c",
        )
        _run(["strip", str(target)], self.deadline, "strip pause")

    # -- root filesystems -------------------------------------------------------------------

    def _rootfs(self, name: str, packages: Sequence[str]) -> Path:
        """A debootstrap tree, kept as a tarball so later steps start from a pristine copy."""
        tarball = self.work / f"{name}.tar"
        if tarball.exists():
            self.say(f"{name}: cached")
            return tarball
        t0 = time.monotonic()
        self.say(f"{name}: debootstrap {DEBIAN_SUITE} ({len(packages)} packages) ...")
        tree = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        try:
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(packages)}",
                    DEBIAN_SUITE,
                    str(tree),
                ],
                self.deadline,
                f"debootstrap ({name})",
            )
            for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (tree / sub).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            partial = tarball.with_suffix(".partial")
            _run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-cf", str(partial), "."],
                self.deadline,
                f"tar ({name})",
            )
            partial.rename(tarball)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        self.say(f"{name}: done in {time.monotonic() - t0:.0f} s")
        return tarball

    def _unpack(self, tarball: Path) -> Path:
        tree = Path(tempfile.mkdtemp(prefix="tree-", dir=self.work))
        _run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-xf", str(tarball)],
            self.deadline,
            "untar rootfs",
        )
        return tree

    def _import(self, tree: Path, tag: str, changes: Sequence[str]) -> None:
        # tar keeps owners and xattrs exactly (the SDK's own tar helper is for build contexts).
        archive = tree.with_name(tree.name + ".tar")
        repository, _, version = tag.rpartition(":")
        try:
            _run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-cf", str(archive), "."],
                self.deadline,
                f"tar {tree.name}",
            )
            said = _sdk(
                f"docker import {tag}",
                self.deadline,
                lambda client: client.api.import_image_from_file(
                    str(archive),
                    repository=repository,
                    tag=version,
                    changes=[*changes, f"LABEL {IMAGE_HASH_LABEL}={self.key}"],
                ),
            )
        finally:
            archive.unlink(missing_ok=True)
        if _image_label(tag, self.deadline) != self.key:  # the engine answers errors in the body
            raise ToolchainUnavailable(f"docker import {tag}: no image came of it ({said!s:.300})")

    # -- images -----------------------------------------------------------------------------

    def _image_list(self) -> list[str]:
        out = _run(
            [
                str(self.bin / "kubeadm"),
                "config",
                "images",
                "list",
                "--kubernetes-version",
                KUBERNETES_VERSION,
            ],
            self.deadline,
            "kubeadm config images list",
        )
        return [line.strip() for line in out.splitlines() if line.strip()]

    def _component_images(self, proxy_tar: Path) -> list[str]:
        """Build every image kubeadm will ask for, tagged exactly as it prints them."""
        images = self._image_list()
        for ref in images:
            name = ref.rsplit("/", 1)[-1].split(":", 1)[0]
            old = _image_id(ref, self.deadline)
            if old and _image_label(ref, self.deadline) == self.key:
                continue
            if name == "kube-proxy":
                self._proxy_image(proxy_tar, ref)
                _drop_superseded(old, ref, self.deadline)
                continue
            if name == "pause":
                files, extra = {"pause": "/pause"}, ["USER 65535:65535", 'ENTRYPOINT ["/pause"]']
            elif name == "coredns":
                files, extra = {"coredns": "/coredns"}, ['ENTRYPOINT ["/coredns"]']
            elif name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
                files, extra = (
                    {name: f"/usr/local/bin/{name}"},
                    [f'ENTRYPOINT ["/usr/local/bin/{name}"]'],
                )
            else:
                raise ToolchainUnavailable(
                    f"kubeadm asks for an image this toolchain cannot build: {ref}"
                )
            self._scratch_image(ref, files, extra)
            _drop_superseded(old, ref, self.deadline)
        self.say(f"component images ready: {' '.join(images)}")
        return images

    def _scratch_image(self, tag: str, files: Mapping[str, str], extra: Sequence[str]) -> None:
        context = Path(tempfile.mkdtemp(prefix="ctx-", dir=self.work))
        try:
            lines = ["FROM scratch"]
            for binary, dest in files.items():
                shutil.copy2(self.bin / binary, context / binary)
                lines.append(f"COPY {binary} {dest}")
            lines += ["ENV PATH=/usr/local/bin:/usr/bin:/bin", *extra]
            (context / "Dockerfile").write_text("\n".join(lines) + "\n")
            self._docker_build(context, tag)
        finally:
            shutil.rmtree(context, ignore_errors=True)

    def _docker_build(self, context: Path, tag: str) -> None:
        docker_build(context, tag, self.key, self.deadline)

    def _proxy_image(self, proxy_tar: Path, tag: str) -> None:
        tree = self._unpack(proxy_tar)
        try:
            dest = tree / "usr/local/bin"
            shutil.copy2(self.bin / "kube-proxy", dest / "kube-proxy.bin")
            shutil.copy2(_NODE_FILES / "kube-proxy-wrapper", dest / "kube-proxy")
            (dest / "kube-proxy").chmod(0o755)
            self._import(
                tree,
                tag,
                [
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    'ENTRYPOINT ["/usr/local/bin/kube-proxy"]',
                ],
            )
        finally:
            shutil.rmtree(tree, ignore_errors=True)

    def _node_image(self, node_tar: Path, images: Sequence[str]) -> str:
        tag = f"{NODE_REPO}:{KUBERNETES_VERSION}-{self.key}"
        if _image_exists(tag, self.deadline):
            self.say(f"node image {tag} cached")
            return tag
        t0 = time.monotonic()
        base = f"{NODE_REPO}-base:{KUBERNETES_VERSION}-{self.key}"
        tree = self._unpack(node_tar)
        try:
            self._lay_node_files(tree, images)
            self._import(tree, base, ["ENV container=docker"])
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        self.say(
            f"node base {base} imported in {time.monotonic() - t0:.0f} s; importing images into its containerd ..."
        )
        self._preload(base, tag, images)
        _sdk(f"docker rmi {base}", self.deadline, lambda client: client.images.remove(base))
        self.say(f"node image {tag} built in {time.monotonic() - t0:.0f} s")
        return tag

    def _lay_node_files(self, tree: Path, images: Sequence[str]) -> None:
        """kind's own node files, our containerd/CNI/egress files, and the binaries."""
        kind_files = self._module_dir("sigs.k8s.io/kind", KIND_VERSION) / "images/base/files"
        for src in kind_files.rglob("*"):
            if src.is_file():
                dest = tree / src.relative_to(kind_files)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                executable = "bin" in src.relative_to(kind_files).parts
                dest.chmod(0o755 if executable else 0o644)
        for d in ("kind", "kind/bin"):
            (tree / d).chmod(0o755)
        pause = next(i for i in images if "/pause:" in i)
        config = (
            (_NODE_FILES / "containerd-config.toml").read_text().replace("{pause_image}", pause)
        )
        (tree / "etc/containerd/config.toml").write_text(config)
        for registry in BLOCKED_REGISTRIES:
            hosts = tree / "etc/containerd/certs.d" / registry
            hosts.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_NODE_FILES / "hosts.toml", hosts / "hosts.toml")
        cni = tree / "etc/cni/net.d"
        cni.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_NODE_FILES / "10-rc-bridge.conflist", cni / "10-rc-bridge.conflist")
        (tree / "opt/cni").mkdir(parents=True, exist_ok=True)
        _symlink(tree / "opt/cni/bin", "/usr/lib/cni")
        manifests = tree / "kind/manifests"
        manifests.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_NODE_FILES / "default-storage.yaml", manifests / "default-storage.yaml")
        (tree / "kind/version").write_text(KUBERNETES_VERSION)
        for binary in ("kubeadm", "kubelet", "kubectl"):
            _install(self.bin / binary, tree / "usr/bin" / binary)
        _install(self.bin / "crictl", tree / "usr/local/bin/crictl")
        # kind's containerd.service runs /usr/local/bin/containerd; Debian installs /usr/bin's.
        _symlink(tree / "usr/local/bin/containerd", "/usr/bin/containerd")
        _install(_NODE_FILES / "rc-pre-entrypoint", tree / "usr/local/bin/rc-pre-entrypoint")
        _install(_NODE_FILES / "rc-egress-lock", tree / "usr/local/sbin/rc-egress-lock")
        shutil.copyfile(
            _NODE_FILES / "rc-egress-lock.service",
            tree / "etc/systemd/system/rc-egress-lock.service",
        )
        (tree / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
        # As kind's base Dockerfile: no services but ours, no kernel log reading.
        for pattern in (
            "lib/systemd/system/multi-user.target.wants/*",
            "etc/systemd/system/*.wants/*",
            "lib/systemd/system/local-fs.target.wants/*",
            "lib/systemd/system/sockets.target.wants/*udev*",
            "lib/systemd/system/sockets.target.wants/*initctl*",
            "lib/systemd/system/basic.target.wants/*",
            "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service",
        ):
            for entry in tree.glob(pattern):
                entry.unlink()
        with (tree / "etc/systemd/journald.conf").open("a") as handle:
            handle.write("ReadKMsg=no\n")
        wants = tree / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        for unit in (
            "kubelet.service",
            "containerd.service",
            "undo-mount-hacks.service",
            "rc-egress-lock.service",
        ):
            _symlink(wants / unit, f"/etc/systemd/system/{unit}")
        _symlink(tree / "etc/systemd/system/systemd-binfmt.service", "/dev/null")

    def _preload(self, base: str, tag: str, images: Sequence[str]) -> None:
        preload(base, tag, images, self.work, self.key, self.deadline)

    def _operator_image(self) -> str:
        tag = f"{OPERATOR_REPO}:{KUBERAY_VERSION}-{self.key}"
        if _image_exists(tag, self.deadline):
            self.say(f"operator image {tag} cached")
            return tag
        # As upstream's image: the manager alone, as the distroless non-root user.
        self._scratch_image(
            tag, {"kuberay-manager": "/manager"}, ["USER 65532:65532", 'ENTRYPOINT ["/manager"]']
        )
        self.say(f"operator image {tag} built")
        return tag

    def _manifests(self, operator_image: str) -> Path:
        """KubeRay's kustomize bases plus ``local/``: ``default`` with our operator image."""
        dest = self.work / "kuberay-config"
        if dest.exists():
            return dest
        src = (
            self._module_dir("github.com/ray-project/kuberay/ray-operator", KUBERAY_VERSION)
            / "config"
        )
        partial = self.work / "kuberay-config.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for sub in ("crd", "rbac", "manager", "default"):
            if (src / sub).is_dir():
                shutil.copytree(src / sub, partial / sub)
        # The module cache is read-only; a deployer edits or overlays these copies.
        for path in partial.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        # kustomize refuses absolute resource paths, so the overlay lives beside the bases.
        repo, _, tag = operator_image.rpartition(":")
        (partial / "local").mkdir()
        (partial / "local/kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            "resources:\n"
            "- ../default\n"
            "images:\n"
            "- name: quay.io/kuberay/operator\n"
            f"  newName: docker.io/library/{repo}\n"
            f"  newTag: {tag}\n"
        )
        partial.rename(dest)
        return dest

    def _docker_wrapper(self) -> Path:
        wrapper_dir = self.work / "docker-wrapper"
        wrapper_dir.mkdir(exist_ok=True)
        _install(_PACKAGE_DIR / "docker-wrapper.sh", wrapper_dir / "docker")
        return wrapper_dir


# -- helpers ---------------------------------------------------------------------------------


def preload(
    base: str, tag: str, images: Sequence[str], work: Path, key: str, deadline: Deadline
) -> None:
    """Import ``images`` into ``base``'s containerd and commit the result as ``tag``.

    Layers are imported without unpacking (the build container's /var is overlay, where the
    overlay snapshotter cannot work); the CRI unpacks an image on its first use, on the
    node's /var volume. ``docker save`` and ``docker run`` stay CLI calls: the SDK saves one
    image per call, and cannot unmask /proc (``--security-opt systempaths=unconfined`` is
    the CLI's own translation into the container's config).
    """
    archive = work / "images.tar"
    _run(
        ["docker", "save", "-o", str(archive), *images],
        deadline,
        "docker save component images",
    )
    name = f"rc-kind-preload-{key}"
    _remove_container(name, deadline)
    script = (
        "set -e; containerd >/tmp/containerd.log 2>&1 & pid=$!; "
        "for i in $(seq 1 60); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done; "
        "ctr -n k8s.io images import --no-unpack --all-platforms /images.tar; "
        "ctr -n k8s.io images ls -q; kill $pid; wait $pid || true"
    )
    try:
        _run(
            [
                "docker",
                "run",
                "--name",
                name,
                "--network=none",
                *_privileged_equivalent(),
                "-v",
                f"{archive}:/images.tar:ro",
                "--entrypoint",
                "/bin/bash",
                base,
                "-c",
                script,
            ],
            deadline,
            "importing component images into the node's containerd",
        )
        stage = f"{tag}-stage"
        repository, _, version = stage.rpartition(":")
        _sdk(
            f"docker commit {stage}",
            deadline,
            lambda client: client.containers.get(name).commit(repository, version),
        )
        # `docker commit/import --change` cannot set STOPSIGNAL (systemd shuts down on
        # SIGRTMIN+3): a metadata-only build on top sets it and the entrypoint.
        context = Path(tempfile.mkdtemp(prefix="ctx-", dir=work))
        try:
            (context / "Dockerfile").write_text(
                f"FROM {stage}\n"
                "ENV container=docker\n"
                "STOPSIGNAL SIGRTMIN+3\n"
                'ENTRYPOINT ["/usr/local/bin/rc-pre-entrypoint", "/sbin/init"]\n'
                "CMD []\n"
            )
            docker_build(context, tag, key, deadline)
        finally:
            shutil.rmtree(context, ignore_errors=True)
            _remove_image(stage, deadline)
    finally:
        _remove_container(name, deadline)
        archive.unlink(missing_ok=True)


def docker_build(context: Path, tag: str, key: str, deadline: Deadline) -> None:
    """Build ``context`` as ``tag``, labelled with ``key``; no network in the build."""

    # The SDK speaks the classic builder (as DOCKER_BUILDKIT=0 did).
    def build(client: docker.DockerClient) -> None:
        try:
            client.images.build(
                path=str(context),
                tag=tag,
                labels={IMAGE_HASH_LABEL: key},
                network_mode="none",
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as exc:
            log = "".join(str(line.get("stream", line.get("error", ""))) for line in exc.build_log)
            tail = "\n".join(log.strip().splitlines()[-_TAIL_LINES:])
            raise ToolchainUnavailable(f"docker build {tag}: {exc.msg}\n{tail}") from None

    _sdk(f"docker build {tag}", deadline, build)


def _privileged_equivalent() -> list[str]:
    """``--privileged`` spelled out, minus capabilities this host's bounding set lacks."""
    argv = ["--cap-add", "ALL"]
    argv += [a for cap in _missing_caps() for a in ("--cap-drop", cap)]
    argv += ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    argv += ["--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm"]
    return argv


def _missing_caps() -> list[str]:
    names = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
    bnd = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bnd = int(line.split()[1], 16)
    return [name for i, name in enumerate(names) if not bnd >> i & 1]


def _staging_modules(gomod: Path) -> list[str]:
    """The k8s.io modules k8s.io/kubernetes replaces with its ./staging directories."""
    mods = []
    for line in gomod.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
            mods.append(parts[0])
    return mods


def _pause_version(k8s_dir: Path) -> str:
    for line in (k8s_dir / "build/pause/Makefile").read_text().splitlines():
        if line.startswith(("TAG ?=", "TAG=")):
            return line.split("=", 1)[1].strip()
    return "3.10.1"


def go_binary() -> str | None:
    """The ``go`` on PATH, else the one Go's own tarball installs; None without either."""
    beside = Path("/usr/local/go/bin/go")
    return shutil.which("go") or (str(beside) if beside.exists() else None)


def _go_binary() -> Path:
    found = go_binary()
    if found is None:
        raise ToolchainUnavailable("go not on PATH (nor /usr/local/go/bin/go)")
    return Path(found)


def _check_prerequisites() -> None:
    _go_binary()
    for tool, hint in (
        ("docker", "docker not on PATH"),
        ("debootstrap", "debootstrap not installed (apt-get install -y debootstrap)"),
        ("gcc", "gcc not installed (needed to build the static pause binary)"),
        ("tar", "tar not on PATH"),
    ):
        if shutil.which(tool) is None:
            raise ToolchainUnavailable(hint)
    if problem := engine_problem(None, timeout=30):
        raise ToolchainUnavailable(problem)
    for lib in ("/usr/lib/x86_64-linux-gnu/libc.a", "/usr/lib/aarch64-linux-gnu/libc.a"):
        if Path(lib).exists():
            break
    else:
        raise ToolchainUnavailable("static libc not installed (apt-get install -y libc6-dev)")


def _load_state(path: Path) -> KubeToolchain | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    result = KubeToolchain(
        kind=Path(raw["kind"]),
        kubectl=Path(raw["kubectl"]),
        path_dirs=tuple(Path(p) for p in raw["path_dirs"]),
        node_image=raw["node_image"],
        operator_image=raw["operator_image"],
        operator_manifests=Path(raw["operator_manifests"]),
        kubernetes_version=raw["kubernetes_version"],
        kuberay_version=raw["kuberay_version"],
    )
    paths = [result.kind, result.kubectl, result.operator_manifests, *result.path_dirs]
    return result if all(p.exists() for p in paths) else None


def _images_present(toolchain: KubeToolchain, deadline: Deadline) -> bool:
    return all(_image_exists(i, deadline) for i in (toolchain.node_image, toolchain.operator_image))


def _sdk(what: str, deadline: Deadline, call: Callable[[docker.DockerClient], T]) -> T:
    """One Docker SDK call, each request bounded by what is left until ``deadline``.

    An engine error becomes `ToolchainUnavailable` naming ``what`` and the engine's reason.
    """
    remaining = deadline.remaining()
    if remaining <= 0:
        raise ToolchainUnavailable(f"no time left for {what} (toolchain timeout reached)")
    try:
        client = docker_client(None, timeout=remaining)
        try:
            return call(client)
        finally:
            client.close()
    except ENGINE_ERRORS as exc:
        raise ToolchainUnavailable(f"{what}: {one_line(exc)}") from None


def _image(ref: str, deadline: Deadline) -> Any:
    """The engine's image ``ref`` (``docker.models.images.Image``), or None when it has none."""

    def get(client: docker.DockerClient) -> Any:
        try:
            return client.images.get(ref)
        except docker.errors.ImageNotFound:
            return None

    return _sdk(f"docker image inspect {ref}", deadline, get)


def _image_id(ref: str, deadline: Deadline) -> str:
    image = _image(ref, deadline)
    return str(image.id) if image is not None else ""


def _image_exists(ref: str, deadline: Deadline) -> bool:
    return _image(ref, deadline) is not None


def _image_label(ref: str, deadline: Deadline) -> str:
    image = _image(ref, deadline)
    return str((image.labels or {}).get(IMAGE_HASH_LABEL, "")) if image is not None else ""


def _remove_image(ref: str, deadline: Deadline) -> None:
    """Remove an image this build made, if it can be (one still in use is left)."""

    def remove(client: docker.DockerClient) -> None:
        # Gone already, or still used by a container: either way not this build's to force.
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(ref)

    _sdk(f"docker rmi {ref}", deadline, remove)


def _remove_container(name: str, deadline: Deadline) -> None:
    def remove(client: docker.DockerClient) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)

    _sdk(f"docker rm -f {name}", deadline, remove)


def _drop_superseded(old_id: str, ref: str, deadline: Deadline) -> None:
    """Remove the image a rebuilt tag used to name (an older build of this toolchain)."""
    if old_id and old_id != _image_id(ref, deadline):
        _remove_image(old_id, deadline)


def _install(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(0o755)


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def _run(
    argv: Sequence[str],
    deadline: Deadline,
    what: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """The one runner, bounded by ``deadline``; stdout ("" on failure when not ``check``)."""
    remaining = deadline.remaining()
    if remaining <= 0:
        raise ToolchainUnavailable(f"no time left for {what} (toolchain timeout reached)")
    try:
        done = run_full(argv, remaining, what=what, cwd=cwd, env=env, merge=False, check=check)
    except (CommandError, CommandTimeout) as exc:
        raise ToolchainUnavailable(f"{exc} ({shlex.join(str(a) for a in argv)})") from None
    return done.stdout if done.returncode == 0 else ""


__all__ = [
    "COREDNS_VERSION",
    "ETCD_VERSION",
    "IMAGE_HASH_LABEL",
    "KIND_VERSION",
    "KUBERAY_VERSION",
    "KUBERNETES_VERSION",
    "KubeToolchain",
    "ToolchainUnavailable",
    "cache_root",
    "ensure_toolchain",
    "input_hash",
    "kind_config",
]
