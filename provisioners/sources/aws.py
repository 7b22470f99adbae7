"""The node source of mode ``aws``: ``ray up`` with Ray's aws provider, as the book does, or rehearsed on moto.

The cluster YAML is the book's made safe (``templates/aws.yaml``) or the user's
(``--ray-cluster-yaml``); the run lays its own cluster name, a key pair it generates and
imports, run tags on instances and volumes, and ``cache_stopped_nodes: false`` over it. The
dashboard and client are reached through SSH tunnels to the head. Teardown is ``ray down``,
then what it leaves that the run created: instances still alive (terminated, and waited for),
the security group ``ray-autoscaler-<cluster>``, the key pair. Ray's IAM role and instance
profile are shared by every Ray cluster of an account: reported as kept, never removed.

The mode is the SSH ``ray up`` deployer given a machine source, ``SshRayUpMode(AwsMachines())``
(:mod:`provisioners.deployers.launcher.driver`). :class:`AwsMachines` owns the config, the key pair, the
rehearsal's stage, the cleanup after ``ray down`` and the EC2 inventory; the mode adds only
one-line delegations for its autoscaling abilities.

``--ray-aws-rehearsal`` runs the same sequence against moto on this machine, each instance a
container (:mod:`provisioners.rehearsals.aws`): no account, no cost, no packet off the machine.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import boto3
import botocore.exceptions
from botocore.config import Config

from provisioners.contract.base import (
    RUN_ID_LABEL,
    ClusterSpec,
    InventoryError,
    InventoryItem,
    ProvisionError,
    listing,
)
from provisioners.contract.options import Option
from provisioners.deployers.launcher import (
    CLUSTER_YAML,
    LAUNCHER_CONFIG,
    Launcher,
    Machine,
    MachineSourceBase,
    RayUpRun,
    autoscaling,
)
from provisioners.deployers.launcher import config as launcher_config
from provisioners.deployers.launcher.ssh import SshTarget
from provisioners.rehearsals.aws import Stage
from provisioners.util import containers, nodeimage, runstate
from provisioners.util.iptables import iptables
from provisioners.util.naming import run_name
from provisioners.util.runner import CommandError
from provisioners.util.waits import WaitTimeout, wait_for

REGION = Option.string("aws-region", "aws: region (default: the cluster YAML's, else us-west-2)")
REHEARSAL = Option.switch(
    "aws-rehearsal", "aws: rehearse on moto with containers as instances (no account, no cost)"
)
SKIP_SETUP = Option.switch(
    "aws-skip-setup", "aws rehearsal: drop the config's setup commands (they need the internet)"
)

DEFAULT_REGION = "us-west-2"
OBJECT_STORE_BYTES = 150_000_000  # fits a rehearsal container's /dev/shm
#: Ray's IAM role and instance profile: one per account, shared by all its Ray clusters.
SHARED_IAM = "ray-autoscaler-v1"
SETUP_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
)
#: Printed by a rehearsed setup command that failed, with its key and index.
SETUP_MARK = "rc-setup-failed:"
TERMINATE_TIMEOUT_S = 300.0
#: Ray's instance tags (``ray.autoscaler.tags``; not imported: Ray is slow to import).
CLUSTER_TAG = "ray-cluster-name"
NODE_KIND_TAG = "ray-node-type"


def credentials_found() -> bool:
    """Whether boto3's chain finds credentials, without asking a metadata service.

    The instance-metadata and container providers are left out: asking them dials
    169.254.169.254 (or a container endpoint), which a test run must never do by accident.
    """
    import botocore.session

    session = botocore.session.Session()
    resolver = session.get_component("credential_provider")
    for method in ("iam-role", "container-role"):
        resolver.remove(method)
    return resolver.load_credentials() is not None


def security_group_name(cluster_name: str) -> str:
    """The security group Ray's aws provider creates for a cluster (and ``ray down`` keeps)."""
    return f"ray-autoscaler-{cluster_name}"


def aws_inventory(ec2: Any, cluster_name: str, run_id: str, key_name: str) -> list[InventoryItem]:
    """What of the run still exists in EC2: instances not terminated, security groups, the
    key pair, network interfaces and volumes (by the run's tag, the cluster, or attachment).

    A listing EC2 refuses raises :class:`InventoryError` naming the kind, never "nothing".
    """
    tag = {"Name": f"tag:{RUN_ID_LABEL}", "Values": [run_id]}
    items: list[InventoryItem] = []
    instances: dict[str, dict[str, Any]] = {}
    with listing("EC2 instances"):
        for flt in (tag, {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_name]}):
            for page in ec2.get_paginator("describe_instances").paginate(Filters=[flt]):
                for r in page["Reservations"]:
                    instances.update({i["InstanceId"]: i for i in r["Instances"]})
    alive = {k: i for k, i in instances.items() if i["State"]["Name"] != "terminated"}
    items += [
        InventoryItem(
            "instance", iid, run_id, f"{i['State']['Name']} {i.get('PrivateIpAddress', '')}"
        )
        for iid, i in sorted(alive.items())
    ]
    groups: dict[str, str] = {}
    with listing("EC2 security groups"):
        for flt in (tag, {"Name": "group-name", "Values": [security_group_name(cluster_name)]}):
            for g in ec2.describe_security_groups(Filters=[flt])["SecurityGroups"]:
                groups[g["GroupId"]] = g["GroupName"]
    items += [
        InventoryItem("security-group", gid, run_id, name) for gid, name in sorted(groups.items())
    ]
    with listing("EC2 key pairs"):
        pairs = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [key_name]}])
    items += [InventoryItem("key-pair", k["KeyName"], run_id) for k in pairs["KeyPairs"]]
    filters = [[tag]]
    filters += [[{"Name": "group-id", "Values": list(groups)}]] if groups else []
    filters += [[{"Name": "attachment.instance-id", "Values": list(alive)}]] if alive else []
    with listing("EC2 network interfaces"):
        enis = {
            n["NetworkInterfaceId"]: n.get("PrivateIpAddress", "")
            for flt in filters
            for n in ec2.describe_network_interfaces(Filters=flt)["NetworkInterfaces"]
        }
    items += [InventoryItem("network-interface", n, run_id, ip) for n, ip in sorted(enis.items())]
    filters = [[tag]]
    filters += [[{"Name": "attachment.instance-id", "Values": list(alive)}]] if alive else []
    with listing("EBS volumes"):
        volumes = {
            v["VolumeId"]: v["State"]
            for flt in filters
            for v in ec2.describe_volumes(Filters=flt)["Volumes"]
        }
    items += [InventoryItem("volume", v, run_id, state) for v, state in sorted(volumes.items())]
    return items


def shared_iam(iam: Any) -> list[str]:
    """Ray's shared IAM objects that exist (kept on purpose: other clusters use them)."""
    kept = []
    with contextlib.suppress(botocore.exceptions.ClientError):
        iam.get_role(RoleName=SHARED_IAM)
        kept.append(f"IAM role {SHARED_IAM}")
    with contextlib.suppress(botocore.exceptions.ClientError):
        iam.get_instance_profile(InstanceProfileName=SHARED_IAM)
        kept.append(f"instance profile {SHARED_IAM}")
    return kept


def guard_setup(config: dict[str, Any]) -> dict[str, Any]:
    """Make each setup command print :data:`SETUP_MARK` with its key and index when it fails.

    Braces group without a subshell; the newline ends a trailing comment in the command.
    """
    out = copy.deepcopy(config)
    for key in SETUP_KEYS:
        commands = out.get(key)
        if commands:
            out[key] = [
                f"{{ {c}\n}} || {{ echo '{SETUP_MARK} {key}[{i}]' >&2; exit 1; }}"
                for i, c in enumerate(commands)
            ]
    return out


def failed_setup(log: str, config: dict[str, Any]) -> str | None:
    """The setup command a rehearsal log says failed, quoted from the user's config."""
    for line in reversed(log.splitlines()):
        if SETUP_MARK in line and "[" in line and "echo" not in line:
            where = line.split(SETUP_MARK, 1)[1].strip().split()[0]
            key, _, index = where.partition("[")
            with contextlib.suppress(KeyError, IndexError, ValueError, TypeError):
                return f"{where}: {config[key][int(index.rstrip(']'))]!r}"
            return where
    return None


class AwsMachines(MachineSourceBase, autoscaling.CloudAutoscaling):
    """EC2 instances Ray's aws provider launches in ``ray up`` (or moto's, rehearsed), reached
    over SSH with a key pair the run imports."""

    TEMPLATE: ClassVar[str] = "aws.yaml"
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (
        CLUSTER_YAML,
        REGION,
        REHEARSAL,
        SKIP_SETUP,
        LAUNCHER_CONFIG,
        autoscaling.AUTOSCALE_MAX,
        autoscaling.IDLE_TIMEOUT,
        nodeimage.IMAGE,
        nodeimage.IMAGE_BUILD,
        containers.DOCKER_HOST,
    )
    # SSH tunnels for all, the dashboard too: no port opened in the security group.
    DASHBOARD_BY_LAUNCHER: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.stage: Stage | None = None
        self._base: dict[str, Any] = {}  # the template or the user's YAML, as written
        self._region = DEFAULT_REGION
        self._key_name = ""
        self._cluster = ""
        self._left: list[InventoryItem] | None = None  # what EC2 held just before moto went
        self._ssh_before: set[str] = set()
        self._cleaned = False
        self._setup_checked = 0.0
        self._commands: dict[str, Any] = {}  # setup commands as the config gave them

    @property
    def rehearsal(self) -> bool:
        return self.spec.get(REHEARSAL)

    # --- SupportsAutoscaling, SupportsPendingNodes ------------------------------------------

    def cloud_instances(self, run: RayUpRun) -> list[InventoryItem]:
        return self._ec2_inventory()

    # --- MachineSource ----------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing: list[str] = []
        if not spec.get(REHEARSAL):
            if not credentials_found():
                missing.append(
                    "no AWS credentials found by boto3's chain (environment, shared "
                    "credentials/config files, SSO or process; the metadata service is not "
                    f"asked); configure them, or rehearse without an account: {REHEARSAL.flag}"
                )
            return missing
        problem = containers.engine_problem(spec.get(containers.DOCKER_HOST))
        missing += [f"aws rehearsal: {problem}"] if problem else []
        if iptables() is None or os.geteuid() != 0:
            missing.append(
                "aws rehearsal: needs root and iptables (a rule keeps instances from reaching "
                "this host)"
            )
        missing += ["aws rehearsal: `docker` CLI not on PATH"] if not shutil.which("docker") else []
        return missing

    def plan(self, run: RayUpRun) -> None:
        super().plan(run)
        spec = run.spec
        self._cluster = run_name(spec.run_id, spec.mode)
        self._key_name = run_name(spec.run_id, spec.mode, "key")
        user = spec.get(CLUSTER_YAML)
        if user is not None:
            try:
                self._base = launcher_config.load_user_overrides(user)
            except ProvisionError as exc:
                raise ProvisionError(f"--ray-cluster-yaml: {exc}") from None
        else:
            workers = spec.worker_count()
            self._base = launcher_config.load_template(
                self.TEMPLATE,
                {"cluster_name": self._cluster, "object_store_bytes": OBJECT_STORE_BYTES},
            )
            self._base["max_workers"] = workers
            worker = self._base["available_node_types"]["ray.worker.default"]
            worker["min_workers"] = worker["max_workers"] = workers
            if spec.get(REHEARSAL):
                self._base["provider"]["use_internal_ips"] = True  # the template is ours
        provider = self._base.get("provider") or {}
        if provider.get("type") != "aws":
            raise ProvisionError(
                f"the cluster YAML's provider.type is {provider.get('type')!r}, not 'aws'"
            )
        if "aws_credentials" in provider:
            # Ray copies the config to the head, and we keep a copy in the report.
            raise ProvisionError(
                "the cluster YAML carries provider.aws_credentials; remove them and let "
                "boto3 find credentials (environment, ~/.aws/credentials, a profile)"
            )
        self.add_autoscaled_type(spec, self._base)
        self._region = spec.get(REGION) or str(provider.get("region") or DEFAULT_REGION)
        if not spec.get(REHEARSAL):  # a rehearsal's cloud is a container, swept by its label
            runstate.note(
                spec.run_id,
                spec.mode,
                "aws",
                region=self._region,
                cluster=self._cluster,
                key_name=self._key_name,
            )
        ssh_dir = Path.home() / ".ssh"
        self._ssh_before = {p.name for p in ssh_dir.glob("ray-autoscaler_*")}

    def identity(self, run: RayUpRun) -> tuple[str, Path | None]:
        # Never the user's key: a fresh one, imported as the run's key pair.
        return str((self._base.get("auth") or {}).get("ssh_user") or "ubuntu"), None

    def render(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        spec = self.spec
        rendered = launcher_config.deep_merge(self._base, self.provider_section(run, machines))
        rendered = launcher_config.deep_merge(
            rendered, launcher_config.load_user_overrides(spec.get(LAUNCHER_CONFIG))
        )
        self._commands = {key: rendered.get(key) for key in SETUP_KEYS}
        if self.rehearsal:
            self._check_rehearsable(rendered)
            if spec.get(SKIP_SETUP):
                rendered.update({key: [] for key in SETUP_KEYS})
            else:
                rendered = guard_setup(rendered)
        launcher_config.validate(rendered, source="aws cluster config")
        return rendered

    def _check_rehearsable(self, config: dict[str, Any]) -> None:
        """Refuse, before anything starts, what the rehearsal could not back with its network."""
        provider = config.get("provider") or {}
        if provider.get("use_internal_ips") is not True:
            raise ProvisionError(
                "aws rehearsal: the cluster YAML needs provider.use_internal_ips: true (moto "
                "invents public IPs that are real internet addresses; the rehearsal backs only "
                "private ones, on the run's own network)"
            )
        for name, node_type in (config.get("available_node_types") or {}).items():
            node = node_type.get("node_config") or {}
            named = [
                k
                for k in ("SubnetIds", "SubnetId", "NetworkInterfaces", "LaunchTemplate")
                if k in node
            ]
            if named:
                raise ProvisionError(
                    f"aws rehearsal: node type {name} names {', '.join(named)}: those are your "
                    f"account's; the rehearsal's only VPC is moto's default (172.31.0.0/16), "
                    "which its network backs. Leave them out for the rehearsal"
                )

    def provider_section(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        run_tag = {"Key": RUN_ID_LABEL, "Value": self.spec.run_id}
        node_types: dict[str, Any] = {}
        for name, node_type in (self._base.get("available_node_types") or {}).items():
            # The user's tag specifications stay; instances and volumes gain the run's tag.
            specs = copy.deepcopy((node_type.get("node_config") or {}).get("TagSpecifications", []))
            for kind in ("instance", "volume"):
                spec = next((s for s in specs if s.get("ResourceType") == kind), None)
                if spec is None:
                    specs.append(spec := {"ResourceType": kind, "Tags": []})
                spec["Tags"] = [*spec.get("Tags", []), run_tag]
            node_types[name] = {
                "node_config": {"KeyName": self._key_name, "TagSpecifications": specs}
            }
        return {
            "cluster_name": self._cluster,
            "provider": {"region": self._region, "cache_stopped_nodes": False},
            "auth": {"ssh_user": run.ssh.user, "ssh_private_key": str(run.ssh.key)},
            "available_node_types": node_types,
        }

    def prepare_machines(self, run: RayUpRun, timeout: float) -> list[Machine]:
        spec = self.spec
        public_key = Path(f"{run.ssh.key}.pub").read_text().strip()
        if self.rehearsal:
            node = nodeimage.node_image_for(spec, timeout, need_ssh=True)
            self.stage = Stage(
                spec.run_id,
                spec.mode,
                spec.workdir,
                self._region,
                spec.get(containers.DOCKER_HOST),
                spec.progress,
            )
            self.stage.start(node, run.ssh.user, public_key, self.spec.deadline.left())
        self.ec2().import_key_pair(
            KeyName=self._key_name,
            PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[
                {"ResourceType": "key-pair", "Tags": [{"Key": RUN_ID_LABEL, "Value": spec.run_id}]}
            ],
        )
        return []  # the provider creates the instances in `ray up`

    def ec2(self) -> Any:
        return self._client("ec2")

    def _client(self, service: str) -> Any:
        if self.stage is not None:
            return self.stage.client(service)
        if self.rehearsal:
            raise ProvisionError("aws rehearsal: moto is not running")
        config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 5})
        return boto3.session.Session(region_name=self._region).client(service, config=config)

    def launcher_env(self, run: RayUpRun) -> dict[str, str]:
        # Autoscaler v1, as `vm`: v2 lists idle nodes under "Idle:" in `ray status` and logs
        # no autoscaler lines to monitor.log (both measured here); v1 launches workers alike.
        return {"RAY_UP_enable_autoscaler_v2": "0"}

    def launcher_for(self, run: RayUpRun, base: Launcher) -> Launcher:
        # The rehearsal runs `ray` in its client container, on the run's network only.
        return self.stage.launcher(base) if self.stage is not None else base

    def up(self, run: RayUpRun, timeout: float) -> None:
        try:
            super().up(run, timeout)
        except ProvisionError as exc:
            failed = self._failed_setup(run.launcher.log.read_text(errors="replace"))
            if failed:
                raise self._setup_error(failed) from None
            raise exc from None

    def _failed_setup(self, log: str) -> str | None:
        return failed_setup(log, self._commands) if self.rehearsal else None

    def _setup_error(self, failed: str) -> ProvisionError:
        return ProvisionError(
            f"aws rehearsal: setup command {failed} failed. The rehearsal's instances have no "
            "route off this machine, so a command that downloads (pip, conda, curl, apt) "
            f"cannot work here; rehearse without setup commands: {SKIP_SETUP.flag}"
        )

    def node_count(self, run: RayUpRun) -> int:
        return launcher_config.min_nodes(run.launcher.config)

    def expected_nodes(self, run: RayUpRun) -> list[Machine]:
        return []  # the provider names them; counted by node_count

    def discover_machines(self, run: RayUpRun) -> list[Machine]:
        flt = [
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [self._cluster]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
        found = [
            i
            for page in self.ec2().get_paginator("describe_instances").paginate(Filters=flt)
            for r in page["Reservations"]
            for i in r["Instances"]
        ]
        internal = bool((run.launcher.config.get("provider") or {}).get("use_internal_ips"))

        def kind(i: dict[str, Any]) -> str:
            return next((t["Value"] for t in i.get("Tags", []) if t["Key"] == NODE_KIND_TAG), "")

        found.sort(key=lambda i: (kind(i) != "head", i["InstanceId"]))
        return [
            Machine(
                i["InstanceId"], i["PrivateIpAddress"] if internal else i.get("PublicIpAddress", "")
            )
            for i in found
        ]

    def ssh_target(self, run: RayUpRun, machine: Machine, target: SshTarget) -> SshTarget:
        # Every ssh of the run (probes, tunnels, node_exec) comes through here.
        if self.stage is not None:
            self.stage.check_address(machine.ip)
        return target

    def gave_up(self, run: RayUpRun) -> str | None:
        if self.stage is None:
            return None
        reason = self.stage.gave_up()
        if reason or time.monotonic() - self._setup_checked < 10:
            return reason
        # A worker's setup command fails in the head's autoscaler, not in `ray up`.
        self._setup_checked = time.monotonic()
        with contextlib.suppress(CommandError, ProvisionError):
            out = run.ssh.head_ssh(
                f"grep -h '{SETUP_MARK}' /tmp/ray/session_latest/logs/monitor* || true", 15
            )
            failed = self._failed_setup(out)
            if failed:
                return str(self._setup_error(failed))
        return None

    def collect_diagnostics(self, run: RayUpRun, dest: Path) -> None:
        if self.stage is not None:  # the rehearsal's cloud API and client, by their logs
            self.stage.save_service_logs(dest)

    def access(self, run: RayUpRun) -> dict[str, str]:
        if self.stage is None:
            return {}
        return self.stage.access(run.launcher.config_path, run.ssh.target(run.head()))

    # --- Teardown and leaks -----------------------------------------------------------------

    def remove_machines(self, run: RayUpRun) -> None:
        if not self._cleaned and self._key_name and (self.stage is not None or not self.rehearsal):
            self._cleaned = True
            try:
                self._remove_cloud_objects()
            except (
                botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError,
                InventoryError,
                ProvisionError,
                WaitTimeout,
            ) as exc:
                self.spec.progress(f"cleanup incomplete: {exc}")
            # The snapshot is what the leak check reads (the rehearsal's API goes next): a
            # listing that failed stays in it as the failure it is.
            self._left = self._ec2_inventory()
        if self.stage is not None:
            self.stage.stop()
        for name in self._new_ssh_files():
            (Path.home() / ".ssh" / name).unlink(missing_ok=True)
            self.spec.progress(f"removed ~/.ssh/{name} (written by Ray's aws provider)")

    def _remove_cloud_objects(self) -> None:
        """After ``ray down``: terminate what is left, wait, then the group and the key."""
        ec2 = self.ec2()
        left = [
            i.name
            for i in aws_inventory(ec2, self._cluster, self.spec.run_id, self._key_name)
            if i.kind == "instance"
        ]
        if left:
            self.spec.progress(
                f"terminating {len(left)} instance(s) ray down left: {', '.join(left)}"
            )
            ec2.terminate_instances(InstanceIds=left)

        def terminated() -> bool:
            items = aws_inventory(ec2, self._cluster, self.spec.run_id, self._key_name)
            return not [i for i in items if i.kind == "instance"]

        bound = 60.0 if self.stage is not None else TERMINATE_TIMEOUT_S
        wait_for(
            terminated,
            timeout=bound,
            what=f"instances of {self._cluster} to terminate",
            interval=2.0,
        )
        group = security_group_name(self._cluster)

        def group_gone() -> bool:  # its network interfaces linger a while after termination
            found = ec2.describe_security_groups(
                Filters=[{"Name": "group-name", "Values": [group]}]
            )
            for g in found["SecurityGroups"]:
                ec2.delete_security_group(GroupId=g["GroupId"])
            return True

        wait_for(
            group_gone, timeout=bound, what=f"security group {group} to be deleted", interval=5.0
        )
        ec2.delete_key_pair(KeyName=self._key_name)
        kept = shared_iam(self._client("iam"))
        if kept:
            self.spec.progress(
                f"kept (shared by every Ray cluster of the account): {', '.join(kept)}"
            )

    def _new_ssh_files(self) -> list[str]:
        ssh_dir = Path.home() / ".ssh"
        return sorted({p.name for p in ssh_dir.glob("ray-autoscaler_*")} - self._ssh_before)

    def leak_query(self, run: RayUpRun) -> list[InventoryItem]:
        items: list[InventoryItem] = []
        if self._left is not None:
            items += self._left
        elif self._key_name and (self.stage is not None or not self.rehearsal):
            items += self._ec2_inventory()
        if self.stage is not None:
            items += self.stage.inventory()
        items += [
            InventoryItem("file", f"~/.ssh/{n}", self.spec.run_id, "Ray's aws key")
            for n in self._new_ssh_files()
        ]
        return items

    def _ec2_inventory(self) -> list[InventoryItem]:
        """The run's EC2 objects, or the item naming the listing that failed."""
        try:
            with listing("EC2 objects (no EC2 client)"):
                ec2 = self.ec2()
            return aws_inventory(ec2, self._cluster, self.spec.run_id, self._key_name)
        except InventoryError as exc:
            return [exc.item(self.spec.run_id)]

    def removal_commands(self, run: RayUpRun) -> list[str]:
        if self.stage is not None:
            return self.stage.removal_commands()
        commands = super().removal_commands(run)
        region = f"--region {self._region}"
        return [
            *commands,
            f"aws ec2 delete-security-group --group-name {security_group_name(self._cluster)} {region}",
            f"aws ec2 delete-key-pair --key-name {self._key_name} {region}",
        ]
