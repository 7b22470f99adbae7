"""Go-built images cached apart from the kube toolchain, each keyed by its own version.

The toolchain's hash covers every file of its package, so a tool added there would rebuild
Kubernetes. What a run adds on top of a kind cluster is built here instead, once per machine:
the Traefik ingress controller and KubeRay releases other than the toolchain's. Each artifact
has a directory of its own, ``~/.cache/ray-conformance/kube-artifacts/<name>-<version>-<key>/``
(``key``: a hash of its recipe), a ``FROM scratch`` image tagged ``<version>-<key>``, and a file
lock of its own; a warm call finds it all in under a second.

The build steps are the toolchain's own (``_Builder``: go with the module proxy, the SDK's
classic docker build with no network); they are imported, not copied, and not edited there.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioners.contract.base import Deadline
from provisioners.kube.toolchain.build import (
    ToolchainUnavailable,
    _Builder,
    _image_exists,
    cache_root,
)
from provisioners.util.waits import WaitTimeout, file_lock

Say = Callable[[str], None]

TRAEFIK_MODULE = "github.com/traefik/traefik/v3"
#: Newest v3 the module proxy lists (2026-12-03).
TRAEFIK_VERSION = "v3.7.13"
TRAEFIK_REPO = "ray-conformance-traefik"
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KUBERAY_REPO = "ray-conformance-kuberay-operator"

#: The extension module Traefik's go.mod replaces with ``./pkg/config/dynamic/ext``: a nested
#: module, so the proxy's zip of Traefik leaves it out, and the proxy does not serve it alone.
#: In Traefik's open-source build its types are empty (the hook of its commercial builds).
TRAEFIK_EXT = "package ext\n\n// HTTP extends dynamic.HTTP (empty here).\ntype HTTP struct{}\n\n// Router extends dynamic.Router (empty here).\ntype Router struct{}\n"
#: lego's DNS-challenge registry imports every DNS provider's SDK, and the proxy refuses about
#: a dozen of them (403, "not available"): the registry is replaced by one that has none. An
#: ingress of a test run answers plain HTTP on a cluster's network and asks no ACME CA.
LEGO_REGISTRY = """package dns

import (
\t"fmt"

\t"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName: no DNS-challenge provider is built in (ray-conformance).
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
\treturn nil, fmt.Errorf("no DNS-challenge provider %q in this build", name)
}
"""
#: Traefik replaces go-http-auth with a fork (containous/) that the proxy refuses. Upstream's
#: one tag, v0.4.0, lacks two functions the fork added and Traefik's auth middlewares call;
#: they are added to a copy of v0.4.0 with the behaviour Traefik relies on.
HTTP_AUTH_FORK = re.compile(
    r"^(\s*github\.com/abbot/go-http-auth) => github\.com/containous/go-http-auth \S+$", re.M
)
HTTP_AUTH_VERSION = "v0.4.0"
HTTP_AUTH_COMPAT = """package auth

import (
\t"net/http"
\t"strings"
)

// CheckSecret reports whether password matches secret (an htpasswd entry CheckAuth accepts).
func CheckSecret(password, secret string) bool {
\tcompare := compareFuncs[0].compare
\tfor _, cmp := range compareFuncs[1:] {
\t\tif strings.HasPrefix(secret, cmp.prefix) {
\t\t\tcompare = cmp.compare
\t\t\tbreak
\t\t}
\t}
\treturn compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale asks for credentials again; this version never reports a stale nonce.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
\ta.RequireAuth(w, r)
}
"""


@dataclass(frozen=True)
class Artifact:
    """One built artifact: its image (in the local engine) and its cache directory."""

    name: str
    version: str
    image: str
    directory: Path


def artifacts_root() -> Path:
    return cache_root().parent / "kube-artifacts"


def recipe_key(name: str, version: str, recipe: Mapping[str, str]) -> str:
    inputs = {"name": name, "version": version, "recipe": dict(recipe)}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def ensure_artifact(
    name: str,
    version: str,
    recipe: Mapping[str, str],
    build: Callable[[_Builder, str], None],
    progress: Say,
    timeout: float,
) -> Artifact:
    """Build (or find cached) artifact ``name`` at ``version``; ``build(builder, tag)`` makes it.

    Raises:
        ToolchainUnavailable: a step failed or the bound ran out, naming which.
    """
    started = time.monotonic()
    deadline = Deadline.after(timeout, f"the {name} build")

    def say(line: str) -> None:
        progress(f"[{time.monotonic() - started:6.1f} s] {line}")

    key = recipe_key(name, version, recipe)
    work = artifacts_root() / f"{name}-{version}-{key}"
    repo = recipe["repository"]
    tag = f"{repo}:{version}-{key}"
    state = work / "artifact.json"
    if state.is_file() and _image_exists(tag, deadline):
        return Artifact(name, version, tag, work)
    try:
        with file_lock(artifacts_root() / f"{name}.lock", deadline, say, f"{name} build"):
            if state.is_file() and _image_exists(tag, deadline):
                return Artifact(name, version, tag, work)
            work.mkdir(parents=True, exist_ok=True)
            say(f"{name} {version}: building ({work})")
            build(_Builder(work, key, deadline, say), tag)
            if not _image_exists(tag, deadline):
                raise ToolchainUnavailable(f"{name} {version}: the build made no image {tag}")
            result = Artifact(name, version, tag, work)
            state.write_text(json.dumps(asdict(result), default=str, indent=1))
            say(f"{name} {version}: {tag} built in {time.monotonic() - started:.0f} s")
            return result
    except WaitTimeout as exc:
        raise ToolchainUnavailable(str(exc)) from None


# -- Traefik ----------------------------------------------------------------------------------


def _require_version(gomod: str, module: str) -> str:
    found = re.search(rf"^\s*{re.escape(module)} (v\S+)", gomod, re.M)
    if not found:
        raise ToolchainUnavailable(f"{module} is not required by Traefik's go.mod")
    return found.group(1)


def _build_traefik(builder: _Builder, tag: str) -> None:
    """Traefik built in a copy of its module, as its own go.mod and go.sum pin it."""
    src = builder._module_dir(TRAEFIK_MODULE, TRAEFIK_VERSION)
    tree = builder.work / "src"
    shutil.rmtree(tree, ignore_errors=True)
    _copy_module(src, tree)
    ext = tree / "pkg/config/dynamic/ext"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "go.mod").write_text("module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n")
    (ext / "ext.go").write_text(TRAEFIK_EXT)
    gomod = (tree / "go.mod").read_text()
    lego_version = _require_version(gomod, "github.com/go-acme/lego/v5")
    local = tree / "_rc"  # "_": no package of Traefik's own ./...
    lego = local / "lego"
    _copy_module(builder._module_dir("github.com/go-acme/lego/v5", lego_version), lego)
    registry = lego / "providers/dns"
    for generated in registry.glob("*.go"):
        generated.unlink()
    (registry / "registry.go").write_text(LEGO_REGISTRY)
    auth = local / "go-http-auth"
    _copy_module(builder._module_dir("github.com/abbot/go-http-auth", HTTP_AUTH_VERSION), auth)
    (auth / "go.mod").write_text("module github.com/abbot/go-http-auth\n\ngo 1.16\n")
    (auth / "rc_compat.go").write_text(HTTP_AUTH_COMPAT)
    gomod, forks = HTTP_AUTH_FORK.subn(r"\1 => ./_rc/go-http-auth", gomod)
    if forks != 1:
        raise ToolchainUnavailable("Traefik's go.mod no longer replaces go-http-auth as expected")
    gomod += "\nreplace github.com/go-acme/lego/v5 => ./_rc/lego\n"
    (tree / "go.mod").write_text(gomod)
    builder.bin.mkdir(exist_ok=True)
    t0 = time.monotonic()
    builder.say(f"traefik {TRAEFIK_VERSION}: go build ./cmd/traefik ...")
    version_flag = f"-X github.com/traefik/traefik/v3/pkg/version.Version={TRAEFIK_VERSION}"
    builder._go(
        [
            "build",
            "-trimpath",
            f"-ldflags=-s -w {version_flag}",
            "-o",
            str(builder.bin / "traefik"),
            "./cmd/traefik",
        ],
        tree,
        "go build (traefik)",
    )
    builder.say(f"traefik {TRAEFIK_VERSION}: built in {time.monotonic() - t0:.0f} s")
    shutil.rmtree(tree, ignore_errors=True)
    # As upstream's image runs it: the binary alone, as a non-root user.
    builder._scratch_image(
        tag, {"traefik": "/traefik"}, ["USER 65532:65532", 'ENTRYPOINT ["/traefik"]']
    )


def _copy_module(src: Path, dest: Path) -> None:
    """A writable copy of a module from Go's (read-only) module cache."""
    shutil.copytree(src, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def ensure_traefik(progress: Say, timeout: float) -> Artifact:
    """The Traefik ingress controller's image, built from its Go module (cached)."""
    recipe = {
        "repository": TRAEFIK_REPO,
        "ext": TRAEFIK_EXT,
        "lego": LEGO_REGISTRY,
        "http-auth": HTTP_AUTH_VERSION + HTTP_AUTH_COMPAT,
    }
    return ensure_artifact("traefik", TRAEFIK_VERSION, recipe, _build_traefik, progress, timeout)


# -- KubeRay releases besides the toolchain's -------------------------------------------------


@dataclass(frozen=True)
class KubeRayBuild:
    """One KubeRay release built here: its operator image and its manifests (kustomize bases)."""

    version: str
    image: str
    manifests: Path


def _build_kuberay(version: str) -> Callable[[_Builder, str], None]:
    def build(builder: _Builder, tag: str) -> None:
        # As the toolchain builds its own release: the module's root package is the manager.
        builder.bin.mkdir(exist_ok=True)
        builder._go_build("kuberay", {KUBERAY_MODULE: version}, {"kuberay-manager": KUBERAY_MODULE})
        builder._scratch_image(
            tag, {"kuberay-manager": "/manager"}, ["USER 65532:65532", 'ENTRYPOINT ["/manager"]']
        )
        config = builder._module_dir(KUBERAY_MODULE, version) / "config"
        dest = builder.work / "kuberay-config"
        shutil.rmtree(dest, ignore_errors=True)
        for sub in ("crd", "rbac", "manager", "default"):
            if (config / sub).is_dir():
                _copy_module(config / sub, dest / sub)

    return build


def ensure_kuberay(version: str, progress: Say, timeout: float) -> KubeRayBuild:
    """KubeRay ``version``'s operator image and manifests, built from its Go module (cached)."""
    recipe = {"repository": KUBERAY_REPO, "package": KUBERAY_MODULE, "user": "65532"}
    built = ensure_artifact("kuberay", version, recipe, _build_kuberay(version), progress, timeout)
    return KubeRayBuild(version, built.image, built.directory / "kuberay-config")
