"""A cloud rehearsal's stage: the cloud's API as a container, its instances as containers.

Shared by the clouds (``aws`` on moto, ``ibm`` on the VPC stand-in). One ``--internal`` Docker
network per run whose subnet is the cloud VPC's holds everything: the API stand-in, a client
container where every ``ray`` CLI call runs, and one container per instance the API reports,
started by :class:`InstanceLoop` with the very private IP the API assigned. A cloud whose head
is reached at a floating (public) IP gets a second internal network for those addresses, and
the instance holding one is attached to it at that address. Nothing of it can leave this
machine: the networks are internal (Docker drops what would be forwarded off them), and an
INPUT rule on each bridge drops new connections from them to this host, whose counters must
stay 0. This host dials only addresses on those networks (checked by :meth:`Stage.check_address`)
and loopback.

Measured layout and pitfalls: ``../shared/NOTES.md``, "AWS rehearsal".
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import docker
import docker.errors
import docker.types
from testcontainers.core.waiting_utils import WaitStrategy

from provisioners.contract.base import (
    Deadline,
    InventoryError,
    InventoryItem,
    ProvisionError,
    listing,
)
from provisioners.deployers.launcher.cli import Launcher
from provisioners.deployers.launcher.ssh import SshTarget
from provisioners.util import containers, nodeimage, runstate
from provisioners.util.iptables import CountedRule
from provisioners.util.naming import run_name
from provisioners.util.runner import CommandError, pip_download
from provisioners.util.services import Service
from provisioners.util.waits import WaitTimeout, wait_for

#: Label naming the cloud instance a container stands for.
INSTANCE_LABEL = "ray-conformance.instance"
SHM_SIZE = "400m"
#: How long the instance loop may run at most (the whole session; the harness stops it sooner).
LOOP_LIFETIME_S = 24 * 3600.0


def in_network(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
    except ValueError:
        return False


@dataclass(frozen=True)
class Layout:
    """The addresses of one rehearsal: the VPC's subnet and where each kind of thing lives."""

    subnet: str  # the cloud VPC's CIDR, and the run network's subnet
    helpers: str  # the range Docker assigns from: the API stand-in and the client
    gateway: str
    instances: str  # where the cloud's private instance addresses fall
    floating: str | None = None  # a second network for floating IPs, when the cloud has them
    floating_gateway: str | None = None
    floating_helpers: str | None = None  # where Docker puts the client, clear of the cloud's IPs

    def networks(self) -> list[str]:
        return [self.subnet, *([self.floating] if self.floating else [])]


@dataclass(frozen=True)
class Instance:
    """One instance as the cloud's API reports it, in the loop's terms."""

    id: str
    state: str  # "running" (pending too), "stopped" (stopping too) or "gone"
    ip: str
    hostname: str
    floating_ip: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # for this instance only


# --- The image ----------------------------------------------------------------------------------


def ensure_image(
    client: docker.DockerClient,
    node_image: str,
    *,
    repo: str,
    dockerfile: str,
    requirements: Sequence[str],
    values: Mapping[str, str],
    progress: Callable[[str], None],
    timeout: float,
    run_id: str,
) -> str:
    """The node image plus ``requirements``, built offline from wheels downloaded here (cached).

    ``dockerfile`` is formatted with ``node``, ``hash_label``, ``image_hash`` and ``values``;
    the wheels are in ``wheels/`` of its context.
    """
    deadline = Deadline.after(timeout, f"building {repo}")
    wheels = _wheels(requirements, progress, timeout)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    node_id = client.images.get(node_image).id
    digest = hashlib.sha256(
        json.dumps(
            [dockerfile, node_id, sorted(values.items()), list(requirements), names]
        ).encode()
    ).hexdigest()[:12]
    tag = f"{repo}:{digest}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        progress(f"rehearsal image {tag} cached")
        return tag
    started = time.monotonic()
    progress(f"building {tag} ({', '.join(requirements)}) ...")
    context = Path(tempfile.mkdtemp(prefix="rehearsal-build-", dir=nodeimage.cache_dir()))
    try:
        (context / "Dockerfile").write_text(
            dockerfile.format(
                node=node_image, hash_label=nodeimage.IMAGE_HASH_LABEL, image_hash=digest, **values
            )
        )
        shutil.copytree(wheels, context / "wheels", copy_function=_link_or_copy)
        tail: list[str] = []
        try:
            for chunk in client.api.build(
                path=str(context),
                tag=tag,
                rm=True,
                forcerm=True,
                decode=True,
                network_mode="none",  # wheels come from the context: the build needs no network
                buildargs={"RUN_ID": run_id},
                timeout=round(deadline.left()),  # docker-py takes whole seconds
            ):
                line = str(chunk.get("stream") or chunk.get("status") or "").strip()
                tail = [*tail[-9:], line] if line else tail
                if "error" in chunk:
                    raise ProvisionError(
                        f"rehearsal: building {tag} failed: {chunk['error'].strip()}; "
                        + " | ".join(tail[-5:])
                    )
        except (docker.errors.DockerException, OSError) as exc:
            raise ProvisionError(
                f"rehearsal: building {tag} failed: {containers.one_line(exc)}"
            ) from exc
    finally:
        shutil.rmtree(context, ignore_errors=True)
    progress(f"built {tag} in {time.monotonic() - started:.1f} s")
    return tag


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _wheels(requirements: Sequence[str], progress: Callable[[str], None], timeout: float) -> Path:
    """``requirements`` with their dependencies, as wheels for the nodes' Python (cached)."""
    key = hashlib.sha256(json.dumps(sorted(requirements)).encode()).hexdigest()[:12]
    dest = nodeimage.cache_dir() / "rehearsal-wheels" / key
    manifest = dest / "manifest.json"
    if manifest.exists() and all((dest / n).exists() for n in json.loads(manifest.read_text())):
        return dest
    started = time.monotonic()
    progress(f"downloading wheels of {', '.join(requirements)} ...")
    dest.mkdir(parents=True, exist_ok=True)
    py = nodeimage.NODE_PYTHON.replace(".", "")
    argv = [
        *requirements,
        "-d",
        str(dest),
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        nodeimage.NODE_PYTHON,
        "--abi",
        f"cp{py}",
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for plat in ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "linux_x86_64", "any"):
        argv += ["--platform", plat]
    try:
        pip_download(argv, timeout, what=f"pip download of {', '.join(requirements)}")
    except CommandError as exc:
        raise ProvisionError(f"rehearsal: cannot fetch wheels: {exc}") from None
    names = sorted(p.name for p in dest.glob("*.whl"))
    manifest.write_text(json.dumps(names))
    progress(f"downloaded {len(names)} wheels in {time.monotonic() - started:.1f} s")
    return dest


# --- The drop rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropRule(CountedRule):
    """``iptables`` INPUT rule dropping new connections from the run's bridge to this host.

    An internal Docker network still routes its containers to the bridge's gateway, which is
    this host: every service here listening on 0.0.0.0 would be reachable from instances.
    """

    bridge: str
    comment: str

    def spec(self) -> list[str]:
        return [
            "INPUT",
            "-i",
            self.bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            self.comment,
            "-j",
            "DROP",
        ]


# --- The instance loop --------------------------------------------------------------------------

#: Each instance at start: host keys, the SSH user with its authorized key (as cloud-init does
#: with the cloud's key), the cloud's environment for login shells (Ray runs every command
#: through ``bash --login``, so ``docker run -e`` alone would not reach the autoscaler), sshd.
INSTANCE_COMMAND = r"""set -e
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
id -u "$RC_SSH_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$RC_SSH_USER"
usermod -p '*' "$RC_SSH_USER"
home=$(getent passwd "$RC_SSH_USER" | cut -d: -f6)
mkdir -p "$home/.ssh"
printf '%s\n' "$RC_AUTHORIZED_KEY" > "$home/.ssh/authorized_keys"
chmod 700 "$home/.ssh" && chmod 600 "$home/.ssh/authorized_keys"
chown -R "$RC_SSH_USER:" "$home/.ssh"
printf '%s\n' "$RC_PROFILE" > /etc/profile.d/rc-cloud.sh
exec /usr/sbin/sshd -D -e
"""


@dataclass
class LoopState:
    """What the loop saw: the containers it backs instances with, and what went wrong."""

    backed: dict[str, str] = field(default_factory=dict)  # instance id -> its private ip
    floating: dict[str, str] = field(default_factory=dict)  # instance id -> its floating ip
    refused: dict[str, str] = field(default_factory=dict)  # instance id -> why
    errors: list[str] = field(default_factory=list)
    crashed: str | None = None


class InstanceLoop:
    """Makes every instance the cloud reports a container of the run, in a thread of the harness.

    running -> a container with the instance's private IP (started, or started again), attached
    to the floating network at its floating IP once it has one; stopped -> stopped; gone (or no
    longer listed) -> removed. An instance whose address is outside the run's networks is
    refused, never backed: Ray would SSH to it.
    """

    def __init__(
        self, stage: Stage, image: str, env: dict[str, str], listing: Callable[[], list[Instance]]
    ) -> None:
        self.stage = stage
        self.image = image
        self.env = env
        self.listing = listing
        self.state = LoopState()
        self._stop = threading.Event()
        # A daemon: with --ray-keep-cluster the harness exits and leaves the cluster; the loop
        # must not hold the process open (teardown stops and joins it otherwise).
        self._thread = threading.Thread(
            target=self._main, name=f"rehearsal-instances-{stage.network}", daemon=True
        )
        self._docker: docker.DockerClient | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and join the thread (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def thread_name(self) -> str:
        return self._thread.name

    def _main(self) -> None:
        # Never dies with an exception: each tick catches its own; this catches the rest.
        try:
            self._docker = containers.docker_client(self.stage.docker_host)
            wait_for(self._tick, timeout=LOOP_LIFETIME_S, what="the instance loop", interval=1.0)
        except BaseException as exc:
            self.state.crashed = f"{type(exc).__name__}: {exc}"
        finally:
            if self._docker is not None:
                with contextlib.suppress(Exception):
                    self._docker.close()

    def _tick(self) -> bool:
        if self._stop.is_set():
            return True
        try:
            self.sync()
        except Exception as exc:  # the API or the engine hiccuped: say so once, try again
            error = f"{type(exc).__name__}: {containers.one_line(exc)}"
            if error not in self.state.errors:
                self.state.errors.append(error)
                self.stage.progress(f"instance loop: {error}")
        return self._stop.is_set()

    def sync(self) -> None:
        assert self._docker is not None
        instances = self.listing()
        flt = {"label": [f"{k}={v}" for k, v in self.stage.labels.items()] + [INSTANCE_LABEL]}
        have = {
            c.labels[INSTANCE_LABEL]: c for c in self._docker.containers.list(all=True, filters=flt)
        }
        for inst in instances:
            box = have.get(inst.id)
            if inst.state == "running":
                if box is None:
                    self._back(inst)
                    continue
                if box.status != "running":
                    box.start()
                if inst.floating_ip and inst.id not in self.state.floating:
                    self._float(inst, box)
            elif inst.state == "stopped" and box is not None and box.status == "running":
                box.stop(timeout=5)
        listed = {i.id for i in instances if i.state != "gone"}
        for iid, box in have.items():
            if iid not in listed:
                box.remove(force=True, v=True)
                self.state.backed.pop(iid, None)
                self.state.floating.pop(iid, None)

    def _refuse(self, iid: str, why: str) -> None:
        self.state.refused[iid] = why
        self.stage.progress(f"instance loop: refusing {iid}: {why}")

    def _back(self, inst: Instance) -> None:
        if inst.id in self.state.refused:
            return
        layout = self.stage.LAYOUT
        if not in_network(inst.ip, layout.instances) or in_network(inst.ip, layout.helpers):
            self._refuse(
                inst.id,
                f"private ip {inst.ip or 'none'} is not an instance address of {layout.subnet}",
            )
            return
        assert self._docker is not None
        net, name = self.stage.network, run_name(self.stage.run_id, self.stage.mode, inst.id)
        self._docker.containers.run(
            self.image,
            ["bash", "-c", INSTANCE_COMMAND],
            name=name,
            hostname=inst.hostname,
            detach=True,
            labels={**self.stage.labels, INSTANCE_LABEL: inst.id},
            shm_size=SHM_SIZE,
            environment={**self.env, **inst.env},
            networking_config={net: self._docker.api.create_endpoint_config(ipv4_address=inst.ip)},
            network=net,
        )
        self.state.backed[inst.id] = inst.ip
        self.stage.progress(f"instance {inst.id} backed by a container at {inst.ip}")

    def _float(self, inst: Instance, box: Any) -> None:
        layout, fip = self.stage.LAYOUT, str(inst.floating_ip)
        if layout.floating is None or not in_network(fip, layout.floating):
            self._refuse(
                inst.id, f"floating ip {fip} is not on the run's floating network {layout.floating}"
            )
            return
        assert self._docker is not None
        self._docker.networks.get(self.stage.floating_network).connect(box, ipv4_address=fip)
        self.state.floating[inst.id] = fip
        self.stage.progress(
            f"floating ip {fip} of {inst.id} backed on {self.stage.floating_network}"
        )


# --- The stage ----------------------------------------------------------------------------------


class ClientLauncher(Launcher):
    """Ray's launcher CLI run inside the client container, on the run's internal network.

    Whatever address the cloud's answers make ``ray`` dial (an invented public IP, the metadata
    service, PyPI), the packet can only meet Docker's drop rules. The workdir is mounted at
    the same path, so the config, the key and the log paths are the host's.
    """

    def __init__(self, base: Launcher, container: str, docker_host: str | None) -> None:
        env = {"DOCKER_HOST": docker_host} if docker_host else {}
        super().__init__(
            base.config_path,
            run_id=base.run_id,
            log=base.log,
            env={**base.env, **env},
            progress=base.progress,
            tmp_dir=base.tmp_dir,
        )
        self.container = container

    def _ray(self, *args: str, log_style: bool = True) -> list[str]:
        style = ["--log-style", "record"] if log_style else []
        env = [f"--env={k}={v}" for k, v in sorted(self.env.items()) if k != "DOCKER_HOST"]
        return ["docker", "exec", *env, self.container, "ray", *args, *style, str(self.config_path)]


class Stage:
    """One run's rehearsal: networks, drop rules, helper containers, the instance loop.

    A cloud subclasses it with its :data:`LAYOUT` and a ``start`` that builds its image, calls
    :meth:`create_networks`, starts its API stand-in and the client with :meth:`run_helper`
    (testcontainers, :mod:`provisioners.util.services`), and the loop with :meth:`start_loop`.
    """

    LAYOUT: ClassVar[Layout]
    CLOUD: ClassVar[str]  # "aws", "ibm": in messages
    endpoint: str  # the cloud API stand-in, on the run's network

    def __init__(
        self,
        run_id: str,
        mode: str,
        workdir: Path,
        docker_host: str | None,
        progress: Callable[[str], None],
    ) -> None:
        self.run_id = run_id
        self.mode = mode
        self.workdir = workdir
        self.docker_host = docker_host
        self.progress = progress
        self.labels = containers.labels(run_id, mode)
        self.network = run_name(run_id, mode, "net")
        # Named to sort after ``-net``: Docker 20.10 gives a container on two internal
        # networks its default route on the first by name, and Ray takes its node address
        # from that route; a head must advertise its private address, as behind a real NAT.
        self.floating_network = run_name(run_id, mode, "pub")
        self.client_container = run_name(run_id, mode, "client")
        self.rules: list[DropRule] = []
        self.loop: InstanceLoop | None = None
        self.services: list[Service] = []
        self.rule_hits = 0

    @contextlib.contextmanager
    def _client(self) -> Iterator[docker.DockerClient]:
        client = containers.docker_client(self.docker_host)
        try:
            yield client
        finally:
            client.close()

    def create_networks(self, client: docker.DockerClient) -> None:
        """The run's internal network(s), each with a drop rule on its bridge."""
        layout = self.LAYOUT
        nets = [
            (
                self.network,
                docker.types.IPAMPool(
                    subnet=layout.subnet, iprange=layout.helpers, gateway=layout.gateway
                ),
            )
        ]
        if layout.floating:
            pool = docker.types.IPAMPool(
                subnet=layout.floating,
                iprange=layout.floating_helpers,
                gateway=layout.floating_gateway,
            )
            nets.append((self.floating_network, pool))
        for name, pool in nets:
            try:
                net = client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    labels=self.labels,
                    ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                )
            except docker.errors.APIError as exc:
                holders = [
                    n.name
                    for n in client.networks.list()
                    if any(
                        c.get("Subnet") == pool["Subnet"]
                        for c in (n.attrs.get("IPAM") or {}).get("Config") or []
                    )
                ]
                raise ProvisionError(
                    f"{self.CLOUD} rehearsal: cannot create network {name} on {pool['Subnet']}: "
                    f"{containers.one_line(exc)}"
                    + (f"; held by {', '.join(holders)}" if holders else "")
                ) from None
            rule = DropRule(
                f"br-{net.id[:12]}", run_name(self.run_id, self.mode, "drop", name[-3:])
            )
            runstate.note(self.run_id, self.mode, "iptables-rule", spec=rule.spec())
            rule.add()
            self.rules.append(rule)

    def run_helper(
        self,
        image: str,
        command: list[str],
        name: str,
        ip: str,
        timeout: float,
        *,
        wait: WaitStrategy | None = None,
        env: Mapping[str, str] | None = None,
        volumes: Mapping[str, Mapping[str, str]] | None = None,
        floating: bool = False,
    ) -> Service:
        """A service container of the run on its network at ``ip`` (and on the floating one),
        ready by ``wait`` (default: running) within ``timeout``."""
        service = Service(
            image,
            command,
            name=run_name(self.run_id, self.mode, name),
            labels=self.labels,
            docker_host=self.docker_host,
            env=env,
            volumes=volumes,
            network=self.network,
            ip=ip,
            wait=wait,
        )
        self.services.append(service)
        try:
            service.start_within(timeout)
        except ProvisionError as exc:
            raise ProvisionError(f"{self.CLOUD} rehearsal: {exc}") from None
        if floating and self.LAYOUT.floating:
            with self._client() as client:
                client.networks.get(self.floating_network).connect(service.get_wrapped_container())
        return service

    def save_service_logs(self, dest: Path) -> None:
        """The service containers' logs (the cloud's API, the client) for a failure report."""
        for service in self.services:
            service.save_log(dest / "services")

    def start_loop(
        self, image: str, env: dict[str, str], listing: Callable[[], list[Instance]]
    ) -> None:
        self.loop = InstanceLoop(self, image, env, listing)
        self.loop.start()

    def check_address(self, ip: str) -> str:
        """``ip`` when this host may dial it (on the run's networks), else raise."""
        if not any(in_network(ip, cidr) for cidr in self.LAYOUT.networks()):
            raise ProvisionError(
                f"{self.CLOUD} rehearsal: refusing to dial {ip}: not on the run's network "
                + " or ".join(self.LAYOUT.networks())
            )
        return ip

    def launcher(self, base: Launcher) -> ClientLauncher:
        return ClientLauncher(base, self.client_container, self.docker_host)

    def gave_up(self) -> str | None:
        loop = self.loop
        if loop is None:
            return None
        if loop.state.crashed:
            return f"the instance loop crashed: {loop.state.crashed}"
        if loop.state.refused:
            return "instance(s) refused: " + "; ".join(
                f"{i}: {why}" for i, why in loop.state.refused.items()
            )
        return None

    def stop(self) -> None:
        """Stop the loop, remove every container and network, then the drop rules."""
        if self.loop is not None:
            self.loop.stop()
        for service in self.services:
            with contextlib.suppress(*containers.ENGINE_ERRORS):
                service.stop()
        # The instances, and whatever a half-done start left: found by the run's labels.
        with contextlib.suppress(*containers.ENGINE_ERRORS), self._client() as client:
            containers.remove(client, self.run_id, self.mode)
        for rule in self.rules:
            try:
                hits = rule.hits()
                self.rule_hits += hits
                rule.remove()
            except (CommandError, ProvisionError, WaitTimeout) as exc:
                self.progress(f"could not remove iptables rule {rule.comment}: {exc}")
                continue
            if hits:
                self.progress(
                    f"SAFETY: instances tried {hits} new connection(s) to this host "
                    f"(dropped by {rule.comment})"
                )

    def access(self, config: Path, head: SshTarget) -> dict[str, str]:
        """How a person reaches a kept rehearsal: ``ray`` in the client, a tunnel to the head."""
        return {
            "exec": f"docker exec {self.client_container} ray exec {config} 'ray status'",
            "dashboard": f"ssh tunnel: {shlex.join(head.argv(None, '-N', '-L', '8265:127.0.0.1:8265'))}",
            "cloud api": self.endpoint,
        }

    def removal_commands(self) -> list[str]:
        """What removes a kept rehearsal by hand (``--ray-keep-cluster``): the sweep of the run's
        mode finds the stage by its labels and the drop rules by the run's notes."""
        return [runstate.sweep_command(self.run_id, self.mode)]

    def inventory(self) -> list[InventoryItem]:
        items: list[InventoryItem] = []
        try:  # an engine that does not answer lists nothing: a failure, never "clean"
            with (
                listing(f"Docker objects of run {self.run_id} ({self.mode})"),
                self._client() as client,
            ):
                items += containers.inventory(client, self.run_id, self.mode)
        except InventoryError as exc:
            items.append(exc.item(self.run_id))
        for rule in self.rules:
            try:
                with listing(f"iptables rule {rule.comment}"):
                    present = rule.present()
            except InventoryError as exc:
                items.append(exc.item(self.run_id))
                continue
            if present:
                items.append(InventoryItem("iptables-rule", shlex.join(rule.spec()), self.run_id))
        if self.loop is not None and self.loop.alive():
            items.append(InventoryItem("thread", self.loop.thread_name, self.run_id, "instances"))
        if self.rule_hits:
            # Not a leftover but a breach: reported where a clean run must show nothing.
            items.append(
                InventoryItem(
                    "blocked-connection",
                    f"{self.rule_hits} packet(s)",
                    self.run_id,
                    "instances tried to open connections to this host",
                )
            )
        return items
