"""The node image (a shared service of every container mode): Ray's official image when the engine has or can pull it, else a local build.

The build needs no container registry: ``debootstrap`` makes a Debian base from Debian's own
packages, ``docker import`` turns it into an image, and Ray is installed from wheels downloaded
on the host (pip inside a container fails TLS verification on our machines). Every input is
cached under ``~/.cache/ray-conformance/`` and images are tagged by a hash of their inputs, so a
second run finds them in seconds. Concurrent runs (xdist workers building for two modes) share
one build through a file lock.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors

from provisioners.contract.base import ClusterSpec, Deadline, ProvisionError
from provisioners.contract.options import Option
from provisioners.util.containers import DOCKER_HOST, docker_client, http_timeout, one_line
from provisioners.util.runner import CommandError, pip_download, run
from provisioners.util.runstate import project_cache
from provisioners.util.waits import WaitTimeout, file_lock

#: Options of every mode whose nodes come from this image (one declaration, shared).
IMAGE = Option.string(
    "image",
    "Node image for container modes; vm needs sshd in it (default: rayproject/ray matching the client, else a local build)",
)
IMAGE_BUILD = Option.switch(
    "image-build", "Build the node image from Debian packages and wheels instead of pulling"
)

#: Label stamped on images this module builds: the hash of their inputs.
IMAGE_HASH_LABEL = "ray-conformance.image-hash"

#: Debian release and packages of the base. openssh-server and rsync stay: Ray's cluster
#: launcher (the ``vm`` mode) drives containers of this image over SSH.
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "procps",
    "iproute2",
    "openssh-server",
    "rsync",
    "ca-certificates",
    # KubeRay's default liveness/readiness probes run `wget ... | grep success` in the Ray
    # container, as Ray's official image allows.
    "wget",
)
#: The Python the base gets from Debian; the wheels must match it.
NODE_PYTHON = "3.11"

BASE_REPO = "ray-conformance-base"
NODE_REPO = "ray-conformance-node"
_DOCKERFILE = Path(__file__).parent.parent / "templates" / "Dockerfile.node"
_PULL_TIMEOUT_S = 20.0


def cache_dir() -> Path:
    """Where bases, wheels and build contexts are kept between runs."""
    return project_cache()


def client_ray_version() -> str:
    """The Ray version installed next to this harness (read without importing Ray: ~1 s)."""
    return importlib.metadata.version("ray")


def official_image(ray_version: str) -> str:
    """Ray's published image for this Ray version and the node Python."""
    return f"rayproject/ray:{ray_version}-py{NODE_PYTHON.replace('.', '')}"


def node_image_for(spec: ClusterSpec, timeout: float, *, need_ssh: bool = False) -> str:
    """:func:`ensure_node_image` as a mode's flags ask for it (``--ray-image``,
    ``--ray-image-build``, ``--ray-docker-host``), for the mode's run."""
    return ensure_node_image(
        spec.progress,
        timeout,
        image=spec.get(IMAGE),
        force_build=spec.get(IMAGE_BUILD),
        need_ssh=need_ssh,
        docker_host=spec.get(DOCKER_HOST),
        run_id=spec.run_id,
    )


def ensure_node_image(
    progress: Callable[[str], None],
    timeout: float,
    ray_version: str | None = None,
    *,
    image: str | None = None,
    force_build: bool = False,
    need_ssh: bool = False,
    docker_host: str | None = None,
    run_id: str | None = None,
) -> str:
    """Return the tag of an image whose nodes run Ray ``ray_version`` on Python 3.11.

    Order: ``image`` when given (must exist locally or be pullable); else Ray's official image
    when present or pullable within a short bound; else a registry-free local build (cached).

    Args:
        progress: Receives one line per step, with elapsed seconds.
        timeout: Upper bound for the whole call, in seconds.
        ray_version: Ray version to install; defaults to the version next to this harness.
        image: An image the user named (``--ray-image``); never built, only found or pulled.
        force_build: Skip the official image and build (``--ray-image-build``).
        need_ssh: The caller needs sshd and rsync in the image; the official image has no
            sshd, so this implies a local build unless ``image`` is given.
        docker_host: Engine address; defaults to the environment's.
        run_id: Stamped on the build's intermediate containers so a leak check finds them.

    Raises:
        ProvisionError: The image cannot be found, pulled or built within ``timeout``.
    """
    deadline = Deadline.after(timeout, "the node image")
    version = ray_version or client_ray_version()
    client = docker_client(docker_host)
    try:
        if image:
            if _present_or_pulled(client, image, progress, deadline):
                return image
            raise ProvisionError(
                f"node image: {image!r} ({IMAGE.flag}) is not present on the engine and "
                f"could not be pulled (`docker load` it, or leave {IMAGE.flag} unset to use "
                f"Ray's image or a local build; {IMAGE_BUILD.flag} forces the build)"
            )
        if not (force_build or need_ssh):
            official = official_image(version)
            if _present_or_pulled(client, official, progress, deadline):
                return official
        return build_node_image(client, progress, deadline, version, run_id=run_id)
    except docker.errors.DockerException as exc:
        raise ProvisionError(f"node image: the engine failed: {one_line(exc)}") from exc
    finally:
        client.close()


def build_node_image(
    client: docker.DockerClient,
    progress: Callable[[str], None],
    deadline: Deadline,
    ray_version: str,
    *,
    run_id: str | None = None,
) -> str:
    """Build (or find cached) the node image within ``deadline``; return its tag."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(cache / "build.lock", deadline, progress, "node image build"):
            base = _ensure_base(client, progress, deadline, cache)
            wheels = _ensure_wheels(progress, deadline, cache, ray_version)
            template = _DOCKERFILE.read_text()
            image_hash = _digest(
                {
                    "dockerfile": template,
                    "base": base,
                    "ray": ray_version,
                    "wheels": sorted(p.name for p in wheels.glob("*.whl")),
                }
            )
            tag = f"{NODE_REPO}:{ray_version}-py{NODE_PYTHON.replace('.', '')}-{image_hash}"
            if _image_exists(client, tag):
                progress(f"node image {tag} cached")
                return tag
            _build(
                client, progress, deadline, cache, tag, template, base, wheels, image_hash, run_id
            )
            return tag
    except WaitTimeout as exc:  # another run's build held the lock past the deadline
        raise ProvisionError(f"node image: {exc} (provision timeout)") from None


def _present_or_pulled(
    client: docker.DockerClient, image: str, progress: Callable[[str], None], deadline: Deadline
) -> bool:
    if _image_exists(client, image):
        return True
    bound = deadline.left(_PULL_TIMEOUT_S)
    started = time.monotonic()
    repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
    try:
        with http_timeout(client, bound):
            client.api.pull(repo, tag=tag)
    except Exception as exc:  # any failure (no route, auth, timeout) means "not pullable"
        progress(f"pull {image} failed in {time.monotonic() - started:.1f} s: {one_line(exc)}")
        return False
    progress(f"pulled {image} in {time.monotonic() - started:.1f} s")
    return _image_exists(client, image)


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _ensure_base(
    client: docker.DockerClient, progress: Callable[[str], None], deadline: Deadline, cache: Path
) -> str:
    key = _digest({"suite": DEBIAN_SUITE, "variant": "minbase", "packages": sorted(BASE_PACKAGES)})
    tag = f"{BASE_REPO}:{DEBIAN_SUITE}-{key}"
    if _image_exists(client, tag):
        progress(f"base image {tag} cached")
        return tag
    if shutil.which("debootstrap") is None:
        raise ProvisionError(
            "node image: cannot build it: debootstrap is not installed "
            f"(apt-get install -y debootstrap, or pass {IMAGE.flag})"
        )
    started = time.monotonic()
    progress(f"debootstrap {DEBIAN_SUITE} (about 75 s) ...")
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(root),
            ],
            deadline,
            "debootstrap",
        )
        progress(f"debootstrap done in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        # Remove what a base image should not carry: apt's downloaded .debs and lists.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / sub).glob("*"):
                if entry.is_file():
                    entry.unlink()
        import_tree(client, root, tag, [f"LABEL {IMAGE_HASH_LABEL}={key}"], deadline)
        progress(f"base image {tag} imported in {time.monotonic() - started:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tag


def import_tree(
    client: docker.DockerClient, root: Path, tag: str, changes: list[str], deadline: Deadline
) -> None:
    """``docker import`` the directory ``root`` as image ``tag`` (a base of ``/bin/bash``)."""
    # Through a tar file rather than a pipe: the one runner bounds tar, and the upload is a
    # plain file (a second's cost on a ~200 MB tree that is built once and cached).
    archive = root.with_name(root.name + ".tar")
    try:
        _run(["tar", "--numeric-owner", "-C", root, "-cf", archive, "."], deadline, "tar")
        with archive.open("rb") as data, http_timeout(client, deadline.left()):
            client.api.import_image(
                src=data,  # a file: sent with its length (stream_src would claim chunks)
                repository=tag.split(":", 1)[0],
                tag=tag.split(":", 1)[1],
                changes=[*changes, 'CMD ["/bin/bash"]'],
            )
    finally:
        archive.unlink(missing_ok=True)
    if not _image_exists(client, tag):
        raise ProvisionError(f"node image: import of {root} did not create {tag}")


def _ensure_wheels(
    progress: Callable[[str], None], deadline: Deadline, cache: Path, ray_version: str
) -> Path:
    """Download ``ray[default]`` and its dependencies as wheels for the node's Python."""
    dest = cache / "wheels" / f"ray-{ray_version}-cp{NODE_PYTHON.replace('.', '')}-x86_64"
    manifest = dest / "manifest.json"
    if manifest.exists():
        names = json.loads(manifest.read_text())
        if all((dest / name).exists() for name in names):
            progress(f"wheels cached ({len(names)} in {dest})")
            return dest
    started = time.monotonic()
    progress(f"downloading ray[default]=={ray_version} wheels ...")
    dest.mkdir(parents=True, exist_ok=True)
    # Target the container's interpreter, not the host's: cp311, glibc 2.36 (bookworm), x86_64.
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)]
    argv = [f"ray[default]=={ray_version}", "-d", str(dest)]
    argv += ["--only-binary=:all:", "--implementation", "cp"]
    argv += ["--python-version", NODE_PYTHON, "--abi", f"cp{NODE_PYTHON.replace('.', '')}"]
    argv += ["--abi", "abi3", "--abi", "none"]
    for plat in [*platforms, "manylinux2014_x86_64", "linux_x86_64", "any"]:
        argv += ["--platform", plat]
    what = "pip download of the Ray wheels"
    try:
        pip_download(argv, _left(deadline, what), what=f"node image: {what}")
    except CommandError as exc:
        raise ProvisionError(str(exc)) from None
    names = sorted(p.name for p in dest.glob("*.whl"))
    manifest.write_text(json.dumps(names))
    progress(f"downloaded {len(names)} wheels in {time.monotonic() - started:.1f} s")
    return dest


def _build(
    client: docker.DockerClient,
    progress: Callable[[str], None],
    deadline: Deadline,
    cache: Path,
    tag: str,
    template: str,
    base: str,
    wheels: Path,
    image_hash: str,
    run_id: str | None,
) -> None:
    started = time.monotonic()
    progress(f"building {tag} (about 35 s) ...")
    context = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    try:
        (context / "Dockerfile").write_text(
            template.format(base=base, ray_version=_ray_version_of(tag), image_hash=image_hash)
        )
        (context / "wheels").mkdir()
        for wheel in wheels.glob("*.whl"):
            # Same filesystem as the cache: hard links make the context free to assemble.
            try:
                os.link(wheel, context / "wheels" / wheel.name)
            except OSError:
                shutil.copy2(wheel, context / "wheels" / wheel.name)
        tail: list[str] = []
        try:
            for chunk in client.api.build(
                path=str(context),
                tag=tag,
                rm=True,
                forcerm=True,
                # Wheels come from the context (--no-index): the build needs no network, and
                # without one it cannot depend on the engine's default bridge or reach out.
                network_mode="none",
                decode=True,
                buildargs={"RUN_ID": run_id or "none"},
                timeout=round(deadline.left()),  # docker-py takes whole seconds
            ):
                line = str(chunk.get("stream") or chunk.get("status") or "").strip()
                if line:
                    tail = [*tail[-19:], line]
                if "error" in chunk:
                    raise ProvisionError(
                        f"node image: building {tag} failed: {chunk['error'].strip()}; last output: "
                        + " | ".join(tail[-5:])
                    )
        except docker.errors.DockerException as exc:
            raise ProvisionError(f"node image: building {tag} failed: {one_line(exc)}") from exc
        except OSError as exc:  # requests' read timeout when the deadline passes mid-build
            raise ProvisionError(
                f"node image: building {tag} did not finish within the provision timeout "
                f"({one_line(exc)})"
            ) from exc
    finally:
        shutil.rmtree(context, ignore_errors=True)
    if not _image_exists(client, tag):
        raise ProvisionError(f"node image: build finished but {tag} is missing")
    progress(f"built {tag} in {time.monotonic() - started:.1f} s")


def _ray_version_of(tag: str) -> str:
    return tag.split(":", 1)[1].split("-py", 1)[0]


def _run(argv: Sequence[str | Path], deadline: Deadline, what: str) -> None:
    """Run a build step within what is left of the deadline (CommandTimeout when it runs out)."""
    try:
        run([str(a) for a in argv], _left(deadline, what), what=f"node image: {what}")
    except CommandError as exc:
        raise ProvisionError(str(exc)) from None


def _left(deadline: Deadline, what: str) -> float:
    """The time left for a build step; none left is an error naming the step, not a try."""
    if deadline.expired():
        raise ProvisionError(f"node image: no time left for {what} (provision timeout reached)")
    return deadline.remaining()


def _digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


__all__ = [
    "IMAGE_HASH_LABEL",
    "build_node_image",
    "cache_dir",
    "client_ray_version",
    "ensure_node_image",
    "import_tree",
    "node_image_for",
    "official_image",
]
