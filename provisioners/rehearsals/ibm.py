"""The IBM rehearsal: the VPC stand-in as the cloud, containers as its instances, no way out.

The shared stage (:mod:`provisioners.rehearsals.stage`) on an IBM-like zone subnet (10.240.0.0/24 in
10.240.0.0/16): the stand-in of IAM and the VPC API (:mod:`provisioners.rehearsals.ibm_standin`, run with
the nodes' Python) and the client container on the run's internal network; one container per
instance the stand-in reports, at the private IP it assigned and named (hostname) as the
instance, as a VSI is, with the public key of the VPC key the instance names; and a second
internal network for floating IPs, where the head is attached at the floating IP the connector
bound to it. ``ray up`` through the Gen2 connector thus reaches the head over real SSH at its
floating IP (``use_hybrid_ips``, the book's way), and the head's autoscaler launches workers
through the stand-in that become containers too.
"""

from __future__ import annotations

import importlib.metadata
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from provisioners.contract.base import Deadline
from provisioners.rehearsals import stage
from provisioners.rehearsals.ibm_standin import READY_LINE, Cloud
from provisioners.rehearsals.stage import Instance, Layout
from provisioners.util.ibm_vpc import collect, primary_address, vpc_client

SUBNET = "10.240.0.0/16"
INSTANCES = "10.240.0.0/24"  # the stand-in's zone subnet: instances get .4 onwards
HELPER_RANGE = "10.240.250.0/24"
GATEWAY = "10.240.255.254"
FLOATING = "10.241.0.0/24"
FLOATING_GATEWAY = "10.241.0.254"
FLOATING_HELPERS = "10.241.0.240/29"  # the stand-in hands out floating IPs from .1 upwards
STANDIN_IP = "10.240.250.2"
CLIENT_IP = "10.240.250.3"
STANDIN_PORT = 8080
STANDIN_SCRIPT = Path(__file__).parent / "ibm_standin.py"
CONNECTOR = "gen2-connector==1.0.0b67"

#: The rehearsal image: the vm node image (sshd, rsync, Ray) plus the connector and the VPC SDK
#: for ``ray up`` in the client and the head's autoscaler.
DOCKERFILE = """FROM {node}
ARG RUN_ID=none
LABEL ray-conformance.run-id=$RUN_ID
COPY wheels /tmp/wheels
RUN /opt/ray/bin/pip install -q --no-cache-dir --no-index --find-links /tmp/wheels {requirements} \\
 && rm -rf /tmp/wheels
LABEL {hash_label}={image_hash}
"""
REPO = "ray-conformance-ibm-node"
STATES = {
    "pending": "running",
    "starting": "running",
    "running": "running",
    "stopping": "stopped",
    "stopped": "stopped",
}


def build_image(
    client: Any, node_image: str, progress: Callable[[str], None], timeout: float, run_id: str
) -> str:
    """The rehearsal image on ``node_image`` (cached by its inputs; ``prepare`` warms it)."""
    requirements = [CONNECTOR, f"ibm-vpc=={importlib.metadata.version('ibm-vpc')}"]
    return stage.ensure_image(
        client,
        node_image,
        repo=REPO,
        dockerfile=DOCKERFILE,
        requirements=requirements,
        values={"requirements": " ".join(f"'{r}'" for r in requirements)},
        progress=progress,
        timeout=timeout,
        run_id=run_id,
    )


class Stage(stage.Stage):
    """The IBM rehearsal of one run: the shared stage with the VPC stand-in as the cloud."""

    LAYOUT: ClassVar[Layout] = Layout(
        SUBNET,
        HELPER_RANGE,
        GATEWAY,
        instances=INSTANCES,
        floating=FLOATING,
        floating_gateway=FLOATING_GATEWAY,
        floating_helpers=FLOATING_HELPERS,
    )
    CLOUD: ClassVar[str] = "ibm"

    def __init__(
        self,
        run_id: str,
        mode: str,
        workdir: Path,
        docker_host: str | None,
        progress: Callable[[str], None],
    ) -> None:
        super().__init__(run_id, mode, workdir, docker_host, progress)
        self.endpoint = f"http://{STANDIN_IP}:{STANDIN_PORT}"
        self.api_key = "rehearsal-" + secrets.token_hex(8)  # the stand-in's; not anyone's secret
        defaults = Cloud(self.api_key)
        self.account = {
            "vpc_id": defaults.vpc_id,
            "subnet_id": defaults.subnet_id,
            "security_group_id": defaults.security_group_id,
            "resource_group_id": defaults.resource_group_id,
            "image_id": "r006-rehearsal-image",
        }

    def start(self, node_image: str, mounts: list[Path], timeout: float) -> None:
        """Image, networks, stand-in, client (``mounts`` at the same paths), instance loop."""
        deadline = Deadline.after(timeout, "the IBM rehearsal stage")
        with self._client() as client:
            image = build_image(client, node_image, self.progress, timeout, self.run_id)
            self.create_networks(client)
        self.run_helper(
            image,
            [
                "/opt/ray/bin/python",
                "/opt/rc/ibm_standin.py",
                "--port",
                str(STANDIN_PORT),
                "--api-key",
                self.api_key,
                "--subnet",
                INSTANCES,
                "--floating",
                FLOATING,
            ],
            "standin",
            STANDIN_IP,
            deadline.left(),
            wait=LogMessageWaitStrategy(READY_LINE).with_poll_interval(0.25),
            volumes={str(STANDIN_SCRIPT): {"bind": "/opt/rc/ibm_standin.py", "mode": "ro"}},
        )
        self.run_helper(
            image,
            ["sleep", "infinity"],
            "client",
            CLIENT_IP,
            deadline.left(),
            floating=True,
            volumes={str(p): {"bind": str(p), "mode": "rw"} for p in {self.workdir, *mounts}},
        )
        vpc = vpc_client(self.endpoint, self.api_key, self.endpoint)
        self.start_loop(image, {"RC_SSH_USER": "root", "RC_PROFILE": ""}, vpc_listing(vpc))
        self.progress(
            f"VPC stand-in at {self.endpoint} on {self.network} ({INSTANCES}; floating {FLOATING})"
        )

    def vpc(self) -> Any:
        return vpc_client(self.endpoint, self.api_key, self.endpoint)


def vpc_listing(vpc: Any) -> Callable[[], list[Instance]]:
    """The stand-in's instances in the loop's terms: floating IP, hostname, authorized key."""

    def listing() -> list[Instance]:
        keys = {k["id"]: k["public_key"] for k in collect(vpc.list_keys, "keys")}
        fips = {
            (f.get("target") or {}).get("id"): f["address"]
            for f in collect(vpc.list_floating_ips, "floating_ips")
        }
        out = []
        for inst in collect(vpc.list_instances, "instances"):
            key = next((keys[k["id"]] for k in inst.get("keys", []) if k.get("id") in keys), "")
            out.append(
                Instance(
                    inst["id"],
                    STATES.get(inst["status"], "gone"),
                    primary_address(inst),
                    inst["name"],
                    fips.get(inst["primary_network_interface"]["id"]),
                    {"RC_AUTHORIZED_KEY": key},
                )
            )
        return out

    return listing
