"""``python -m provisioners prepare``: the one-time builds, as their own step.

A fresh machine has none of the images and tools the modes run on; building them inside a
check's time limit is how a first ``make test`` once failed after 31 minutes. This step builds
(or finds cached, in seconds) each of them with its own bound and progress lines, and a failed
build fails here, naming the step. Whatever cannot be built on this machine (no Docker engine,
no Go) is reported in one line and left out: the modes that need it are then SKIPPED saying so.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from provisioners.contract.base import Deadline, ProvisionError
from provisioners.util import runner
from provisioners.util.containers import docker_client, engine_problem
from provisioners.util.runner import CommandError

Say = Callable[[str], None]


class Unavailable(Exception):
    """This machine cannot build the step at all (a missing tool); not a failure of the build."""


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    bound_s: float
    build: Callable[[Say, float], str]
    #: Off by default: nothing in ``make test`` needs it, and a mode that does builds it itself.
    default: bool = True


def _engine() -> None:
    if problem := engine_problem(None, timeout=30):
        raise Unavailable(problem)


def _node_image(say: Say, timeout: float) -> str:
    from provisioners.util import nodeimage

    _engine()
    return nodeimage.ensure_node_image(say, timeout, force_build=True, run_id=RUN_ID)


def _rehearsal_image(module: str) -> Callable[[Say, float], str]:
    def build(say: Say, timeout: float) -> str:
        import importlib

        from provisioners.util import nodeimage

        _engine()
        deadline = Deadline.after(timeout, f"the {module} image")
        node = nodeimage.ensure_node_image(say, timeout, force_build=True, run_id=RUN_ID)
        client = docker_client(None)
        try:
            built: str = importlib.import_module(module).build_image(
                client, node, say, deadline.left(), RUN_ID
            )
        finally:
            client.close()
        return built

    return build


def _toolchain(say: Say, timeout: float) -> str:
    from provisioners.kube.toolchain.build import ToolchainUnavailable, ensure_toolchain

    _engine()
    try:
        tools = ensure_toolchain(say, timeout)
    except ToolchainUnavailable as exc:
        if "not on PATH" in str(exc) or "not installed" in str(exc):
            raise Unavailable(str(exc)) from None
        raise ProvisionError(str(exc)) from None
    return f"{tools.node_image}, KubeRay {tools.kuberay_version}"


def _kind_node(say: Say, timeout: float) -> str:
    from provisioners.kube.clusters import node_image_with
    from provisioners.kube.toolchain.build import ToolchainUnavailable, ensure_toolchain
    from provisioners.util import nodeimage

    _engine()
    deadline = Deadline.after(timeout, "the kind node image")
    try:
        tools = ensure_toolchain(say, timeout)
    except ToolchainUnavailable as exc:
        raise Unavailable(str(exc)) from None
    node = nodeimage.ensure_node_image(say, deadline.left(), force_build=True)
    images = [node, tools.operator_image]
    return node_image_with(tools, images, say, deadline.left())


def _kube_artifacts(say: Say, timeout: float) -> str:
    """The kind runs' ingress controller (Traefik), cached by its version."""
    from provisioners.kube import artifacts

    return _artifact(lambda: artifacts.ensure_traefik(say, timeout).image)


def _kuberay_releases(say: Say, timeout: float) -> str:
    """The KubeRay releases besides the toolchain's (``--ray-operator-version``, the upgrade
    check), each cached by its version."""
    from provisioners.deployers.operator import KUBERAY_VERSIONS
    from provisioners.kube import artifacts
    from provisioners.kube.toolchain.build import KUBERAY_VERSION

    deadline = Deadline.after(timeout, "the KubeRay releases")
    return _artifact(
        lambda: ", ".join(
            artifacts.ensure_kuberay(version, say, deadline.left()).image
            for version in KUBERAY_VERSIONS
            if version != KUBERAY_VERSION
        )
    )


def _artifact(build: Callable[[], str]) -> str:
    from provisioners.kube.toolchain.build import ToolchainUnavailable

    _engine()
    try:
        return build()
    except ToolchainUnavailable as exc:
        if "not on PATH" in str(exc):
            raise Unavailable(str(exc)) from None
        raise ProvisionError(str(exc)) from None


def _legacy_wheel(say: Say, timeout: float) -> str:
    from provisioners.modes.kind_rayup import legacy_wheel

    return str(legacy_wheel(timeout))


#: Labels the build's intermediate containers, so a sweep can tell them from anyone else's.
RUN_ID = "prepare-" + time.strftime("%Y%m%d-%H%M%S")

#: In the order a cold machine needs them: the node image is the base of the rehearsal images;
#: the Kubernetes build is the longest (about 15 minutes cold on 2 cores).
STEPS: tuple[Step, ...] = (
    Step("node-image", "the node image (Debian + Ray wheels)", 1200, _node_image),
    Step(
        "aws-image",
        "the AWS rehearsal image (+ boto3, moto)",
        900,
        _rehearsal_image("provisioners.rehearsals.aws"),
    ),
    Step(
        "ibm-image",
        "the IBM rehearsal image (+ the Gen2 connector)",
        900,
        _rehearsal_image("provisioners.rehearsals.ibm"),
    ),
    Step(
        "kube-toolchain",
        "the offline Kubernetes toolchain (kind, Kubernetes, KubeRay)",
        3000,
        _toolchain,
    ),
    Step(
        "kind-node",
        "the kind node image with the Ray and operator images baked in",
        1200,
        _kind_node,
    ),
    Step("kube-artifacts", "the kind runs' ingress controller", 1200, _kube_artifacts),
    # The upgrade check (make test's kind-operator) and --ray-operator-version; 98 s cold.
    Step("kuberay-releases", "the other KubeRay releases", 1200, _kuberay_releases),
    Step("legacy-wheel", "Ray 2.1.0's wheel (kind-rayup's schema check)", 300, _legacy_wheel),
)


#: Steps that build on one another, in order; the chains themselves run side by side.
CHAINS: tuple[tuple[str, ...], ...] = (
    ("node-image", "aws-image", "ibm-image"),
    ("kube-toolchain", "kind-node", "kube-artifacts", "kuberay-releases"),
    ("legacy-wheel",),
)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioners prepare",
        description="Build (or find cached) the images and tools the modes need, each bounded.",
    )
    names = [step.name for step in STEPS]
    defaults = [step.name for step in STEPS if step.default]
    parser.add_argument(
        "--only",
        metavar="A,B",
        help=f"comma-separated steps to run, of {', '.join(names)} "
        f"(default: {', '.join(defaults)})",
    )
    args = parser.parse_args(argv)
    chosen = defaults if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; known: {', '.join(names)}")
    started = time.monotonic()
    failed: list[str] = []

    stopping = threading.Event()

    def run_chain(chain: tuple[str, ...]) -> None:
        for step in STEPS:
            if step.name not in chain or step.name not in chosen or stopping.is_set():
                continue
            if not _run_step(step):
                failed.append(step.name)
                return  # what comes after it in its chain builds on it

    # The chains share nothing, so they build side by side: the Kubernetes build is CPU-bound
    # (go), the images mostly wait on downloads and the engine.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    pool = ThreadPoolExecutor(max_workers=len(CHAINS))
    try:
        for future in [pool.submit(run_chain, chain) for chain in CHAINS]:
            future.result()
    except KeyboardInterrupt:
        # Only this thread hears the signal: stop the next steps and end the running commands.
        stopping.set()
        killed = runner.kill_running()
        pool.shutdown(wait=True, cancel_futures=True)
        sys.stderr.write(
            f"prepare: interrupted after {time.monotonic() - started:.0f} s; "
            f"{len(killed)} running build command(s) ended; prepare again to finish\n"
        )
        return 130
    finally:
        pool.shutdown(wait=True)
        signal.signal(signal.SIGTERM, previous)
    total = time.monotonic() - started
    if failed:
        sys.stderr.write(f"prepare: {', '.join(failed)} failed ({total:.0f} s in all)\n")
        return 1
    sys.stderr.write(f"prepare: done in {total:.1f} s\n")
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _run_step(step: Step) -> bool:
    """Build one step; False when it failed (a machine that cannot build it is not a failure)."""
    t0 = time.monotonic()

    def say(line: str) -> None:
        sys.stderr.write(f"prepare {step.name} (+{time.monotonic() - t0:.1f} s): {line}\n")
        sys.stderr.flush()

    say(f"{step.what}, bounded by {step.bound_s:.0f} s ...")
    try:
        result = step.build(say, step.bound_s)
    except Unavailable as exc:
        say(f"not built on this machine: {exc}; the modes that need it will be SKIPPED")
        return True
    except (ProvisionError, CommandError, TimeoutError, OSError) as exc:
        # The whole message: a failed build quotes the tail of the command's output.
        say(f"FAILED: {exc or type(exc).__name__}")
        return False
    say(f"ready in {time.monotonic() - t0:.1f} s: {result}")
    return True
