"""The AWS rehearsal: moto as the cloud, containers as its instances, no way out.

The shared stage (:mod:`provisioners.rehearsals.stage`) on moto's default VPC (172.31.0.0/16): moto's
server and the client container on the run's internal network, and one container per instance
moto reports, with the very private IP moto assigned. ``ray up`` with ``use_internal_ips:
true`` therefore reaches real machines over real SSH, and the head's own autoscaler launches
workers through moto that become containers too.

Measured layout and pitfalls: ``../shared/NOTES.md``, "AWS rehearsal".
"""

from __future__ import annotations

import importlib.metadata
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import boto3
from botocore.config import Config
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from provisioners.contract.base import Deadline
from provisioners.rehearsals import stage
from provisioners.rehearsals.stage import Instance, Layout
from provisioners.util import runstate

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


def build_image(
    client: Any, node_image: str, progress: Callable[[str], None], timeout: float, run_id: str
) -> str:
    """The rehearsal image on ``node_image`` (cached by its inputs; ``prepare`` warms it)."""
    boto3_version = importlib.metadata.version("boto3")
    return stage.ensure_image(
        client,
        node_image,
        repo=REPO,
        dockerfile=DOCKERFILE,
        requirements=[f"boto3=={boto3_version}", f"moto[server]=={MOTO_VERSION}"],
        values={"boto3": boto3_version, "moto": MOTO_VERSION},
        progress=progress,
        timeout=timeout,
        run_id=run_id,
    )


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


def ec2_listing(ec2: Any) -> Callable[[], list[Instance]]:
    """moto's DescribeInstances in the instance loop's terms."""
    states = {
        "pending": "running",
        "running": "running",
        "stopping": "stopped",
        "stopped": "stopped",
        "shutting-down": "gone",
        "terminated": "gone",
    }

    def listing() -> list[Instance]:
        pages = ec2.get_paginator("describe_instances").paginate()
        return [
            Instance(
                i["InstanceId"],
                states.get(i["State"]["Name"], "gone"),
                str(i.get("PrivateIpAddress") or ""),
                "ip-" + str(i.get("PrivateIpAddress") or "").replace(".", "-"),  # as EC2 names them
            )
            for page in pages
            for r in page["Reservations"]
            for i in r["Instances"]
        ]

    return listing


class Stage(stage.Stage):
    """The AWS rehearsal of one run: the shared stage with moto as the cloud."""

    LAYOUT: ClassVar[Layout] = Layout(VPC_CIDR, HELPER_RANGE, GATEWAY, instances=VPC_CIDR)
    CLOUD: ClassVar[str] = "aws"

    def __init__(
        self,
        run_id: str,
        mode: str,
        workdir: Path,
        region: str,
        docker_host: str | None,
        progress: Callable[[str], None],
    ) -> None:
        super().__init__(run_id, mode, workdir, docker_host, progress)
        self.region = region
        self.endpoint = f"http://{MOTO_IP}:{MOTO_PORT}"

    def session(self) -> boto3.session.Session:
        """A boto3 session for moto with the rehearsal's fake keys (never the user's)."""
        return boto3.session.Session(
            aws_access_key_id=FAKE_KEY_ID,
            aws_secret_access_key=FAKE_SECRET,
            region_name=self.region,
        )

    def client(self, service: str) -> Any:
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2})
        return self.session().client(service, endpoint_url=self.endpoint, config=config)

    def start(self, node_image: str, ssh_user: str, public_key: str, timeout: float) -> None:
        deadline = Deadline.after(timeout, "the AWS rehearsal stage")
        with self._client() as client:
            image = build_image(client, node_image, self.progress, timeout, self.run_id)
            self.create_networks(client)
        env = aws_env(self.region, self.endpoint)
        self.run_helper(
            image,
            ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", str(MOTO_PORT)],
            "moto",
            MOTO_IP,
            deadline.left(),
            # werkzeug's line once the socket is bound
            wait=LogMessageWaitStrategy("Running on").with_poll_interval(0.25),
            env={"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
        )
        self.run_helper(
            image,
            ["sleep", "infinity"],
            "client",
            CLIENT_IP,
            deadline.left(),
            env=env,
            # The config and log (workdir), the key and Ray's temp files (private), at the
            # host's paths, for the `ray` commands run in it.
            volumes={
                str(p): {"bind": str(p), "mode": "rw"}
                for p in (self.workdir, runstate.private_dir(self.run_id, self.mode))
            },
        )
        profile = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
        instance_env = {
            "RC_SSH_USER": ssh_user,
            "RC_AUTHORIZED_KEY": public_key,
            "RC_PROFILE": profile,
        }
        self.start_loop(image, {**instance_env, **env}, ec2_listing(self.client("ec2")))
        self.progress(f"moto at {self.endpoint} on {self.network} ({VPC_CIDR}, internal)")
