"""The AWS rehearsal's stage: moto as the cloud, containers as its instances, no way out.

One ``--internal`` Docker network per run whose subnet is moto's default VPC (172.31.0.0/16)
holds everything: moto's server, a client container where every ``ray`` CLI call runs, and one
container per instance moto reports, started by :class:`InstanceLoop` with the very private IP
moto assigned. ``ray up`` with ``use_internal_ips: true`` therefore reaches real machines over
real SSH, and the head's own autoscaler launches workers through moto that become containers
too. Nothing of it can leave this machine: the network is internal (Docker drops what would be
forwarded off it), and an INPUT rule on its bridge drops new connections from it to this host,
whose counters must stay 0. This host dials only moto's and the instances' addresses on that
network (checked by :meth:`Stage.check_address`), and loopback.

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
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors
import docker.types
from botocore.config import Config

from provisioners import containers, nodeimage
from provisioners.base import InventoryItem, ProvisionError
from provisioners.launcher.cli import Launcher
from provisioners.naming import run_name
from provisioners.runner import CommandError, run, run_full
from provisioners.waits import WaitTimeout, urlopen_ok, wait_for

#: moto's default VPC and the addresses of the run's own helpers, outside its four default /20s
#: (172.31.0.0-172.31.63.255), so they never take an address moto gives an instance.
VPC_CIDR = "172.31.0.0/16"
HELPER_RANGE = "172.31.250.0/24"
GATEWAY = "172.31.255.254"
MOTO_IP = "172.31.250.2"
CLIENT_IP = "172.31.250.3"
MOTO_PORT = 5000
MOTO_VERSION = "5.2.5"

#: Fake credentials of the rehearsal's cloud; the user's own never leave the host process.
FAKE_KEY_ID = "rehearsal"
FAKE_SECRET = "rehearsal-secret"  # moto accepts any; not a secret of anyone

#: Label naming the moto instance a container stands for.
INSTANCE_LABEL = "ray-conformance.aws-instance"
SHM_SIZE = "400m"
#: How long the instance loop may run at most (the whole session; the harness stops it sooner).
LOOP_LIFETIME_S = 24 * 3600.0

#: Each instance at start: host keys, the SSH user with the run's public key (as cloud-init
#: does with the key pair), the AWS environment for login shells (Ray runs every command
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
printf '%s\n' "$RC_PROFILE" > /etc/profile.d/rc-aws.sh
exec /usr/sbin/sshd -D -e
"""

#: The rehearsal image: the vm node image (sshd, rsync, Ray) plus boto3 for the head's
#: autoscaler and moto's server in a venv of its own (its pins are not Ray's).
DOCKERFILE = """FROM {node}
ARG RUN_ID=none
LABEL ray-conformance.run-id=$RUN_ID
COPY wheels /tmp/wheels
RUN /opt/ray/bin/pip install -q --no-cache-dir --no-index --find-links /tmp/wheels boto3=={boto3} \\
 && python3 -m venv /opt/moto \\
 && /opt/moto/bin/pip install -q --no-cache-dir --no-index --find-links /tmp/wheels "moto[server]=={moto}" \\
 && rm -rf /tmp/wheels
LABEL {hash_label}={image_hash}
"""
REPO = "ray-conformance-aws-node"


def aws_env(region: str, endpoint: str) -> dict[str, str]:
    """What every AWS client of the rehearsal runs with: moto, fake keys, no metadata service."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def in_network(ip: str, cidr: str = VPC_CIDR) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
    except ValueError:
        return False


# --- The image ----------------------------------------------------------------------------------


def _boto3_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("boto3")


def ensure_image(
    client: docker.DockerClient,
    node_image: str,
    progress: Callable[[str], None],
    timeout: float,
    run_id: str,
) -> str:
    """The node image plus boto3 and moto, built offline from wheels downloaded here (cached)."""
    deadline = time.monotonic() + timeout
    boto3_version = _boto3_version()
    wheels = _wheels(boto3_version, progress, timeout)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    node_id = client.images.get(node_image).id
    digest = hashlib.sha256(
        json.dumps([DOCKERFILE, node_id, boto3_version, MOTO_VERSION, names]).encode()
    ).hexdigest()[:12]
    tag = f"{REPO}:{digest}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        progress(f"rehearsal image {tag} cached")
        return tag
    started = time.monotonic()
    progress(f"building {tag} (boto3, moto) ...")
    context = Path(tempfile.mkdtemp(prefix="aws-build-", dir=nodeimage.cache_dir()))
    try:
        (context / "Dockerfile").write_text(
            DOCKERFILE.format(
                node=node_image,
                boto3=boto3_version,
                moto=MOTO_VERSION,
                hash_label=nodeimage.IMAGE_HASH_LABEL,
                image_hash=digest,
            )
        )
        shutil.copytree(wheels, context / "wheels", copy_function=_link_or_copy)
        tail: list[str] = []
        try:
            for chunk in client.api.build(
                path=str(context), tag=tag, rm=True, forcerm=True, decode=True,
                network_mode="none",  # wheels come from the context: the build needs no network
                buildargs={"RUN_ID": run_id},
                timeout=max(1, round(deadline - time.monotonic())),
            ):  # fmt: skip
                line = str(chunk.get("stream") or chunk.get("status") or "").strip()
                tail = [*tail[-9:], line] if line else tail
                if "error" in chunk:
                    raise ProvisionError(
                        f"aws rehearsal: building {tag} failed: {chunk['error'].strip()}; "
                        + " | ".join(tail[-5:])
                    )
        except (docker.errors.DockerException, OSError) as exc:
            raise ProvisionError(
                f"aws rehearsal: building {tag} failed: {containers.one_line(exc)}"
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


def _wheels(boto3_version: str, progress: Callable[[str], None], timeout: float) -> Path:
    """boto3 and moto[server] with their dependencies, as wheels for the nodes' Python."""
    dest = nodeimage.cache_dir() / "aws-wheels" / f"boto3-{boto3_version}-moto-{MOTO_VERSION}"
    manifest = dest / "manifest.json"
    if manifest.exists() and all((dest / n).exists() for n in json.loads(manifest.read_text())):
        return dest
    started = time.monotonic()
    progress("downloading boto3 and moto wheels ...")
    dest.mkdir(parents=True, exist_ok=True)
    py = nodeimage.NODE_PYTHON.replace(".", "")
    argv = [
        sys.executable, "-m", "pip", "download", "-q",
        "--disable-pip-version-check", f"boto3=={boto3_version}", f"moto[server]=={MOTO_VERSION}",
        "-d", str(dest), "--only-binary=:all:", "--implementation", "cp",
        "--python-version", nodeimage.NODE_PYTHON, "--abi", f"cp{py}", "--abi", "abi3",
        "--abi", "none",
    ]  # fmt: skip
    for plat in ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "linux_x86_64", "any"):
        argv += ["--platform", plat]
    try:
        run(argv, timeout, what="pip download of boto3 and moto")
    except CommandError as exc:
        raise ProvisionError(f"aws rehearsal: cannot fetch boto3/moto wheels: {exc}") from None
    names = sorted(p.name for p in dest.glob("*.whl"))
    manifest.write_text(json.dumps(names))
    progress(f"downloaded {len(names)} wheels in {time.monotonic() - started:.1f} s")
    return dest


# --- The drop rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropRule:
    """``iptables`` INPUT rule dropping new connections from the run's bridge to this host.

    An internal Docker network still routes its containers to the bridge's gateway, which is
    this host: every service here listening on 0.0.0.0 would be reachable from instances.
    """

    bridge: str
    comment: str

    def spec(self) -> list[str]:
        return [
            "INPUT", "-i", self.bridge, "-m", "conntrack", "--ctstate", "NEW",
            "-m", "comment", "--comment", self.comment, "-j", "DROP",
        ]  # fmt: skip

    def add(self) -> None:
        run(["iptables", "-w", "5", "-I", *self.spec()], 30, what="iptables: add the drop rule")

    def present(self) -> bool:
        done = run_full(["iptables", "-w", "5", "-C", *self.spec()], 30, check=False)
        return done.returncode == 0

    def remove(self) -> None:
        """Delete exactly this rule (every copy of it), by its full spec."""

        def gone() -> bool:
            if self.present():
                run_full(["iptables", "-w", "5", "-D", *self.spec()], 30, check=False)
            return not self.present()

        wait_for(gone, timeout=30, what=f"iptables rule {self.comment} to be gone", interval=0.1)

    def hits(self) -> int:
        """Packets the rule dropped so far (0 when it is absent)."""
        out = run(["iptables", "-w", "5", "-nvxL", "INPUT"], 30, what="iptables: read counters")
        return sum(
            int(line.split()[0])
            for line in out.splitlines()
            if f"/* {self.comment} */" in line and line.split()[0].isdigit()
        )


# --- The instance loop --------------------------------------------------------------------------


@dataclass
class LoopState:
    """What the loop saw: the containers it backs instances with, and what went wrong."""

    backed: dict[str, str] = field(default_factory=dict)  # instance id -> its private ip
    refused: dict[str, str] = field(default_factory=dict)  # instance id -> why
    errors: list[str] = field(default_factory=list)
    crashed: str | None = None


class InstanceLoop:
    """Makes every instance moto reports a container of the run, in a thread of the harness.

    pending/running -> a container with the instance's private IP (started, or started again);
    stopping/stopped -> stopped; shutting-down/terminated -> removed. An instance whose address
    is outside the run's network is refused, never backed: Ray would SSH to it.
    """

    def __init__(self, stage: Stage, ec2: Any, image: str, env: dict[str, str]) -> None:
        self.stage = stage
        self.ec2 = ec2
        self.image = image
        self.env = env
        self.state = LoopState()
        self._stop = threading.Event()
        # A daemon: with --ray-keep-cluster the harness exits and leaves the cluster; the loop
        # must not hold the process open (teardown stops and joins it otherwise).
        self._thread = threading.Thread(
            target=self._main, name=f"aws-instances-{stage.network}", daemon=True
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
        except Exception as exc:  # moto or the engine hiccuped: say so once, try again
            error = f"{type(exc).__name__}: {containers.one_line(exc)}"
            if error not in self.state.errors:
                self.state.errors.append(error)
                self.stage.progress(f"instance loop: {error}")
        return self._stop.is_set()

    def sync(self) -> None:
        assert self._docker is not None
        pages = self.ec2.get_paginator("describe_instances").paginate()
        instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        flt = {"label": [f"{k}={v}" for k, v in self.stage.labels.items()] + [INSTANCE_LABEL]}
        have = {c.labels[INSTANCE_LABEL]: c for c in self._docker.containers.list(all=True, filters=flt)}  # fmt: skip
        for inst in instances:
            iid, state = inst["InstanceId"], inst["State"]["Name"]
            box = have.get(iid)
            if state in ("pending", "running"):
                if box is None:
                    self._back(inst)
                elif box.status != "running":
                    box.start()
            elif state in ("stopping", "stopped") and box is not None and box.status == "running":
                box.stop(timeout=5)
            elif state in ("shutting-down", "terminated") and box is not None:
                box.remove(force=True, v=True)
                self.state.backed.pop(iid, None)

    def _back(self, inst: dict[str, Any]) -> None:
        iid, ip = inst["InstanceId"], str(inst.get("PrivateIpAddress") or "")
        if iid in self.state.refused:
            return
        if not in_network(ip) or ipaddress.ip_address(ip) in ipaddress.ip_network(HELPER_RANGE):
            why = f"private ip {ip or 'none'} is not an instance address of {VPC_CIDR}"
            self.state.refused[iid] = why
            self.stage.progress(f"instance loop: refusing {iid}: {why}")
            return
        assert self._docker is not None
        net, name = self.stage.network, run_name(self.stage.run_id, self.stage.mode, iid)
        self._docker.containers.run(
            self.image, ["bash", "-c", INSTANCE_COMMAND], name=name,
            hostname="ip-" + ip.replace(".", "-"),  # as EC2 names its instances
            detach=True, labels={**self.stage.labels, INSTANCE_LABEL: iid}, shm_size=SHM_SIZE,
            environment=self.env,
            networking_config={net: self._docker.api.create_endpoint_config(ipv4_address=ip)},
            network=net,
        )  # fmt: skip
        self.state.backed[iid] = ip
        self.stage.progress(f"instance {iid} backed by a container at {ip}")


# --- The stage ----------------------------------------------------------------------------------


class ClientLauncher(Launcher):
    """Ray's launcher CLI run inside the client container, on the run's internal network.

    Whatever address moto's answers make ``ray`` dial (an invented public IP, the metadata
    service, PyPI), the packet can only meet Docker's drop rules. The workdir is mounted at
    the same path, so the config, the key and the log paths are the host's.
    """

    def __init__(self, base: Launcher, container: str, docker_host: str | None) -> None:
        env = {"DOCKER_HOST": docker_host} if docker_host else {}
        super().__init__(
            base.config_path, run_id=base.run_id, log=base.log, env={**base.env, **env},
            progress=base.progress,
        )  # fmt: skip
        self.container = container

    def _ray(self, *args: str, log_style: bool = True) -> list[str]:
        style = ["--log-style", "record"] if log_style else []
        env = [f"--env={k}={v}" for k, v in sorted(self.env.items()) if k != "DOCKER_HOST"]
        return ["docker", "exec", *env, self.container, "ray", *args, *style, str(self.config_path)]  # fmt: skip


class Stage:
    """The rehearsal of one run: network, drop rule, moto, client container, instance loop."""

    def __init__(
        self,
        run_id: str,
        mode: str,
        workdir: Path,
        region: str,
        docker_host: str | None,
        progress: Callable[[str], None],
    ) -> None:
        self.run_id = run_id
        self.mode = mode
        self.workdir = workdir
        self.region = region
        self.docker_host = docker_host
        self.progress = progress
        self.labels = containers.labels(run_id, mode)
        self.network = run_name(run_id, mode, "net")
        self.client_container = run_name(run_id, mode, "client")
        self.endpoint = f"http://{MOTO_IP}:{MOTO_PORT}"
        self.rule: DropRule | None = None
        self.loop: InstanceLoop | None = None
        self.rule_hits = 0

    @contextlib.contextmanager
    def _client(self) -> Iterator[docker.DockerClient]:
        client = containers.docker_client(self.docker_host)
        try:
            yield client
        finally:
            client.close()

    def session(self) -> boto3.session.Session:
        """A boto3 session for moto with the rehearsal's fake keys (never the user's)."""
        return boto3.session.Session(
            aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET,
            region_name=self.region,
        )  # fmt: skip

    def client(self, service: str) -> Any:
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2})
        return self.session().client(service, endpoint_url=self.endpoint, config=config)

    def start(self, node_image: str, ssh_user: str, public_key: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._client() as client:
            image = ensure_image(client, node_image, self.progress, timeout, self.run_id)
            net = self._create_network(client)
            bridge = f"br-{net.id[:12]}"
            self.rule = DropRule(bridge, run_name(self.run_id, self.mode, "drop"))
            self.rule.add()
            env = aws_env(self.region, self.endpoint)
            client.containers.run(
                image, ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", str(MOTO_PORT)],
                name=run_name(self.run_id, self.mode, "moto"), detach=True, labels=self.labels,
                environment={"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
                networking_config={self.network: client.api.create_endpoint_config(ipv4_address=MOTO_IP)},
                network=self.network,
            )  # fmt: skip
            client.containers.run(
                image, ["sleep", "infinity"], name=self.client_container, detach=True,
                labels=self.labels, environment=env,
                volumes={str(self.workdir): {"bind": str(self.workdir), "mode": "rw"}},
                networking_config={self.network: client.api.create_endpoint_config(ipv4_address=CLIENT_IP)},
                network=self.network,
            )  # fmt: skip
        try:
            wait_for(
                lambda: urlopen_ok(f"{self.endpoint}/moto-api/", timeout=2),
                timeout=max(1.0, deadline - time.monotonic()), what=f"moto at {self.endpoint}",
                interval=0.25,
            )  # fmt: skip
        except WaitTimeout as exc:
            raise ProvisionError(f"aws rehearsal: {exc}") from None
        profile = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
        instance_env = {"RC_SSH_USER": ssh_user, "RC_AUTHORIZED_KEY": public_key, "RC_PROFILE": profile}  # fmt: skip
        self.loop = InstanceLoop(self, self.client("ec2"), image, {**instance_env, **env})
        self.loop.start()
        self.progress(f"moto at {self.endpoint} on {self.network} ({VPC_CIDR}, internal)")

    def _create_network(self, client: docker.DockerClient) -> Any:
        pool = docker.types.IPAMPool(subnet=VPC_CIDR, iprange=HELPER_RANGE, gateway=GATEWAY)
        try:
            return client.networks.create(
                self.network, driver="bridge", internal=True, labels=self.labels,
                ipam=docker.types.IPAMConfig(pool_configs=[pool]),
            )  # fmt: skip
        except docker.errors.APIError as exc:
            holders = [
                n.name for n in client.networks.list()
                if any(c.get("Subnet") == VPC_CIDR for c in (n.attrs.get("IPAM") or {}).get("Config") or [])
            ]  # fmt: skip
            raise ProvisionError(
                f"aws rehearsal: cannot create network {self.network} on {VPC_CIDR} (moto's "
                f"default VPC): {containers.one_line(exc)}"
                + (f"; held by {', '.join(holders)}" if holders else "")
            ) from None

    def check_address(self, ip: str) -> str:
        """``ip`` when this host may dial it (an instance on the run's network), else raise."""
        if not in_network(ip):
            raise ProvisionError(
                f"aws rehearsal: refusing to dial {ip}: not on the run's network {VPC_CIDR}"
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
        """Stop the loop, remove every container and the network, then the drop rule."""
        if self.loop is not None:
            self.loop.stop()
        with contextlib.suppress(*containers.ENGINE_ERRORS), self._client() as client:
            containers.remove(client, self.run_id, self.mode)
        if self.rule is not None:
            try:
                self.rule_hits = self.rule.hits()
                self.rule.remove()
            except (CommandError, ProvisionError, WaitTimeout) as exc:
                self.progress(f"could not remove iptables rule {self.rule.comment}: {exc}")
            if self.rule_hits:
                self.progress(
                    f"SAFETY: instances tried {self.rule_hits} new connection(s) to this host "
                    f"(dropped by {self.rule.comment})"
                )

    def inventory(self) -> list[InventoryItem]:
        items: list[InventoryItem] = []
        with contextlib.suppress(*containers.ENGINE_ERRORS), self._client() as client:
            items += containers.inventory(client, self.run_id, self.mode)
        if self.rule is not None and self.rule.present():
            items.append(InventoryItem("iptables-rule", shlex.join(self.rule.spec()), self.run_id))
        if self.loop is not None and self.loop.alive():
            items.append(InventoryItem("thread", self.loop.thread_name, self.run_id, "instances"))
        if self.rule_hits:
            # Not a leftover but a breach: reported where a clean run must show nothing.
            items.append(
                InventoryItem(
                    "blocked-connection", f"{self.rule_hits} packet(s)", self.run_id,
                    "instances tried to open connections to this host",
                )
            )  # fmt: skip
        return items
