"""The node source of mode ``ibm``: ``ray up`` on IBM Cloud VPC through the Gen2 connector, as the book does.

The cluster YAML is the user's (``--ray-cluster-yaml``: lithopscloud's output, or a copy of
``templates/ibm.yaml`` with the account's VPC, subnet, security group, image and resource
group). The run lays over it its own cluster name, an SSH key it generates and imports into
the VPC, ``cache_stopped_nodes: false`` and the API key (``IBMCLOUD_API_KEY``, else the
YAML's). The config holding the key is written outside the report, readable by the user only;
the report keeps a copy with the key redacted. Dashboard and client go through SSH tunnels to
the head. Teardown is ``ray down``, then what the run created that is left: instances named
for its cluster, the floating IPs they held, boot volumes, the key, Ray's config cache and
the connector's tag file entry (``~/.ray-gen2-tags``).

Before any of it the connector is probed (:mod:`provisioners.rehearsals.ibm_probe`): gen2-connector's last
release (1.0.0b67, 2022) answers ``internal_ip`` with the VPC API's reserved-IP object instead
of an address, so with it the mode is SKIPPED naming that. ``--ray-ibm-compat`` loads it
through a 3-line fix (``ibm_compat/rc_gen2_compat.py``, copied to the head too);
``--ray-ibm-provider`` names another provider class (a fixed fork); each is probed the same way.

``--ray-ibm-rehearsal`` runs the same sequence against a stand-in of IAM and the VPC API on this
machine, each instance a container (:mod:`provisioners.rehearsals.ibm`): no account, no cost.

The mode is the SSH ``ray up`` deployer given a machine source, ``SshRayUpMode(IbmMachines())``
(:mod:`provisioners.deployers.launcher.driver`). :class:`IbmMachines` owns the config and its secret, the
key, the stage, the cleanup after ``ray down`` and the VPC inventory. It also declares how the
head is reached: workers through it as a jump host, and Ray at its private address. The mode
adds only one-line delegations for its autoscaling abilities.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from provisioners.contract.base import (
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
from provisioners.rehearsals.ibm import Stage
from provisioners.rehearsals.ibm_probe import COMPAT_DIR, CONNECTOR_CLASS, probe
from provisioners.rehearsals.ibm_standin import ZONE
from provisioners.util import containers, nodeimage, runstate
from provisioners.util.ibm_vpc import collect, primary_address, vpc_client
from provisioners.util.iptables import iptables
from provisioners.util.naming import run_name
from provisioners.util.waits import WaitTimeout, wait_for

PROVIDER = Option.string(
    "ibm-provider",
    f"ibm: the node provider class (default: the Gen2 connector's, {CONNECTOR_CLASS})",
)
COMPAT = Option.switch(
    "ibm-compat",
    "ibm: load the connector through ray-conformance's fix of its internal_ip "
    "(provisioners/sources/ibm_compat/rc_gen2_compat.py, copied to the head)",
)
#: The fix's directory: on PYTHONPATH for the probe and the `ray` CLI here, and on the head.
COMPAT_CLASS = "rc_gen2_compat.IBMGen2NodeProvider"
COMPAT_REMOTE = "~/rc-ibm-compat"
REHEARSAL = Option.switch(
    "ibm-rehearsal",
    "ibm: rehearse on a stand-in of IBM's VPC API with containers as instances (no account, no cost)",
)
#: Where the API key is looked for first (the ibmcloud CLI's and Terraform's variables).
API_KEY_ENVS = ("IBMCLOUD_API_KEY", "IC_API_KEY")
REDACTED = "<redacted: from the environment or your cluster YAML>"
#: The connector names instances ``ray-<cluster>-<kind>-<8 hex>`` within 64 characters.
MAX_CLUSTER_NAME = 44
#: The connector's name prefix for floating IPs it creates (and deletes with their node).
RECYCLABLE = "ray-recyclable"
TAGS_FILE = ".ray-gen2-tags"
DELETE_TIMEOUT_S = 600.0
OBJECT_STORE_BYTES = 150_000_000  # fits a rehearsal container's /dev/shm
NODE_CONFIG_KEYS = ("vpc_id", "subnet_id", "security_group_id", "image_id", "resource_group_id")


def api_key_from_env() -> str | None:
    return next((os.environ[k] for k in API_KEY_ENVS if os.environ.get(k)), None)


class Snapshot:
    """What the account held before the run: floating IPs and security-group rules by id.

    IBM VPC objects the connector makes carry no tags: a floating IP seen on the run's instances
    is the run's; one named ``ray-recyclable-*`` that appeared during the run is reported, but
    never deleted (another cluster's look the same).
    """

    def __init__(self, floating_ips: set[str], rules: dict[str, set[str]]) -> None:
        self.floating_ips = floating_ips
        self.rules = rules
        self.seen_fips: set[str] = set()


def ibm_inventory(
    vpc: Any, cluster: str, run_id: str, key_name: str, before: Snapshot
) -> list[InventoryItem]:
    """What of the run the VPC still holds: instances, floating IPs, volumes, the key, rules.

    A listing the VPC API refuses raises :class:`InventoryError` naming the kind, never "nothing".
    """
    prefix = f"ray-{cluster}-"
    with listing("VPC instances"):
        instances = [
            i for i in collect(vpc.list_instances, "instances") if i["name"].startswith(prefix)
        ]
    items = [
        InventoryItem(
            "instance", i["id"], run_id, f"{i['name']} {i['status']} {primary_address(i)}"
        )
        for i in instances
    ]
    nics = {n["id"] for i in instances for n in i.get("network_interfaces", [])}
    with listing("VPC floating IPs"):
        fips = collect(vpc.list_floating_ips, "floating_ips")
    for fip in fips:
        target = (fip.get("target") or {}).get("id")
        if target in nics:
            before.seen_fips.add(fip["id"])
        if fip["id"] in before.seen_fips:
            items.append(
                InventoryItem("floating-ip", fip["id"], run_id, f"{fip['name']} {fip['address']}")
            )
        elif fip["name"].startswith(RECYCLABLE) and fip["id"] not in before.floating_ips:
            # Likely the connector's for this run, but another cluster's look the same: reported
            # (a clean run has none), never deleted.
            items.append(
                InventoryItem(
                    "floating-ip",
                    fip["id"],
                    run_id,
                    f"{fip['name']} {fip['address']}: new since the run started, never bound to its instances",
                )
            )
    with listing("VPC volumes"):
        volumes = collect(vpc.list_volumes, "volumes")
    items += [
        InventoryItem("volume", v["id"], run_id, f"{v['name']} {v.get('status', '')}")
        for v in volumes
        if v["name"].startswith(prefix)
    ]
    with listing("VPC keys"):
        keys = collect(vpc.list_keys, "keys")
    items += [
        InventoryItem("key", k["id"], run_id, k["name"]) for k in keys if k["name"] == key_name
    ]
    for sg, known in sorted(before.rules.items()):
        with listing(f"rules of security group {sg}"):
            rules = vpc.list_security_group_rules(sg).get_result()["rules"]
        items += [
            InventoryItem("security-group-rule", r["id"], run_id, f"added to {sg} during the run")
            for r in rules
            if r["id"] not in known
        ]
    return items


class IbmMachines(MachineSourceBase, autoscaling.CloudAutoscaling):
    """VPC instances the Gen2 connector (an external node provider) creates in ``ray up``, or
    the stand-in's, reached over SSH with a key the run imports."""

    TEMPLATE: ClassVar[str] = "ibm.yaml"
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (
        CLUSTER_YAML,
        PROVIDER,
        COMPAT,
        REHEARSAL,
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
        self._base: dict[str, Any] = {}
        self._api_key = ""
        self._cluster = ""
        self._key_name = ""
        self._key_id = ""
        self._before: Snapshot | None = None
        self._left: list[InventoryItem] | None = None
        self._private: Path | None = None  # holds the config with the API key
        self._tags_existed = True
        self._cleaned = False
        self._head_private = ""
        self.stage: Stage | None = None

    # --- Preflight ----------------------------------------------------------------------------

    def provider_class(self, spec: ClusterSpec) -> str:
        """The class the run will load: the option, else the user's YAML's, else the connector's."""
        chosen = spec.get(PROVIDER)
        if chosen:
            return chosen
        if spec.get(COMPAT):
            return COMPAT_CLASS
        with contextlib.suppress(ProvisionError, AttributeError):
            module = (
                launcher_config.load_user_overrides(spec.get(CLUSTER_YAML)).get("provider") or {}
            ).get("module")
            if isinstance(module, str) and module:
                return module
        return CONNECTOR_CLASS

    # --- SupportsAutoscaling, SupportsPendingNodes ------------------------------------------

    def cloud_instances(self, run: RayUpRun) -> list[InventoryItem]:
        return self._vpc_inventory()

    # --- MachineSource ----------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing: list[str] = []
        module = self.provider_class(spec)
        found = probe(module)
        if not found.ok:
            versions = ", ".join(f"{k} {v}" for k, v in found.versions.items())
            missing.append(
                f"the node provider {module} cannot run a cluster ({versions}): "
                f"{found.failure} [probed against a loopback stand-in of IBM's IAM and VPC "
                f"API; every step: python -m provisioners.rehearsals.ibm_probe {module}]"
                + (
                    f"; {COMPAT.flag} runs it with a fix of internal_ip"
                    if module == CONNECTOR_CLASS
                    else ""
                )
            )
        user = spec.get(CLUSTER_YAML)
        if spec.get(REHEARSAL):
            problem = containers.engine_problem(spec.get(containers.DOCKER_HOST))
            missing += [f"ibm rehearsal: {problem}"] if problem else []
            if iptables() is None or os.geteuid() != 0:
                missing.append(
                    "ibm rehearsal: needs root and iptables (a rule keeps instances from reaching this host)"
                )
            missing += (
                ["ibm rehearsal: `docker` CLI not on PATH"] if not shutil.which("docker") else []
            )
            return missing
        if user is None:
            missing.append(
                f"needs your cluster YAML ({CLUSTER_YAML.flag}): the VPC, subnet, security "
                "group, image and resource group are your account's (lithopscloud writes it; "
                "or copy provisioners/templates/ibm.yaml)"
            )
        yaml_key = None
        with contextlib.suppress(ProvisionError, AttributeError):
            yaml_key = (launcher_config.load_user_overrides(user).get("provider") or {}).get(
                "iam_api_key"
            )
        if not api_key_from_env() and not yaml_key:
            missing.append(
                f"no API key: set {API_KEY_ENVS[0]} (or provider.iam_api_key in your "
                "cluster YAML); create one at https://cloud.ibm.com/iam/apikeys"
            )
        return missing

    def plan(self, run: RayUpRun) -> None:
        super().plan(run)
        spec = run.spec
        self._cluster = run_name(spec.run_id, spec.mode, limit=MAX_CLUSTER_NAME)
        self._key_name = run_name(spec.run_id, spec.mode, "key")
        user = spec.get(CLUSTER_YAML)
        if spec.get(REHEARSAL):
            self.stage = Stage(
                spec.run_id,
                spec.mode,
                spec.workdir,
                spec.get(containers.DOCKER_HOST),
                spec.progress,
            )
        if user is None and self.stage is None:
            raise ProvisionError(f"needs your cluster YAML ({CLUSTER_YAML.flag})")
        if user is None:
            assert self.stage is not None
            self._base = launcher_config.load_template(
                self.TEMPLATE,
                {
                    "cluster_name": self._cluster,
                    "endpoint": self.stage.endpoint,
                    "iam_endpoint": self.stage.endpoint,
                    "zone_name": ZONE,
                    "object_store_bytes": OBJECT_STORE_BYTES,
                    **self.stage.account,
                },
            )
        else:
            try:
                self._base = launcher_config.load_user_overrides(user)
            except ProvisionError as exc:
                raise ProvisionError(f"{CLUSTER_YAML.flag}: {exc}") from None
        if self.stage is not None:  # the stand-in answers for IAM and the VPC, with its own key
            provider = self._base.setdefault("provider", {})
            provider.update(
                endpoint=self.stage.endpoint,
                iam_endpoint=self.stage.endpoint,
                iam_api_key=self.stage.api_key,
            )
            if user is not None:  # your account's objects do not exist in the stand-in's
                for node_type in (self._base.get("available_node_types") or {}).values():
                    node_type.setdefault("node_config", {}).update(self.stage.account)
                spec.progress(
                    "rehearsal: the stand-in's VPC, subnet, security group, image and resource group stand in for yours"
                )
        provider = self._base.get("provider") or {}
        if provider.get("type") != "external":
            raise ProvisionError(
                f"the cluster YAML's provider.type is {provider.get('type')!r}; the Gen2 "
                "connector is an external provider: type: external, module: " + CONNECTOR_CLASS
            )
        missing = [k for k in ("endpoint", "zone_name") if not provider.get(k)]
        missing += [
            f"available_node_types.{name}.node_config.{k}"
            for name, t in (self._base.get("available_node_types") or {}).items()
            for k in NODE_CONFIG_KEYS
            if not (t.get("node_config") or {}).get(k)
        ]
        if missing:
            raise ProvisionError(f"the cluster YAML lacks {', '.join(missing)}")
        self._api_key = (
            (self.stage.api_key if self.stage else None)
            or api_key_from_env()
            or str(provider.get("iam_api_key") or "")
        )
        if not self._api_key:
            raise ProvisionError(f"no API key: set {API_KEY_ENVS[0]}")
        if spec.workers is not None:
            head = self._base.get("head_node_type")
            for name, node_type in (self._base.get("available_node_types") or {}).items():
                if name != head:
                    node_type["min_workers"] = node_type["max_workers"] = spec.workers
                    break
        self.add_autoscaled_type(spec, self._base)
        self._tags_existed = (Path.home() / TAGS_FILE).exists()
        # Only this user can read it (the run's private dir, outside the report); the
        # rehearsal's client container mounts it.
        self._private = run.private_dir()
        if self.stage is None:  # a rehearsal's cloud is a container, swept by its label
            provider = self._base.get("provider") or {}
            runstate.note(
                spec.run_id,
                spec.mode,
                "ibm",
                endpoint=provider.get("endpoint"),
                iam_endpoint=provider.get("iam_endpoint"),
                cluster=self._cluster,
                key_name=self._key_name,
            )

    def identity(self, run: RayUpRun) -> tuple[str, Path | None]:
        # Never the user's key: a fresh one, imported into the VPC for this run.
        return str((self._base.get("auth") or {}).get("ssh_user") or "root"), None

    def provider_section(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        node_types = {
            name: {"node_config": {"key_id": self._key_id or "imported-at-launch"}}
            for name in self._base.get("available_node_types") or {}
        }
        return {
            "cluster_name": self._cluster,
            "provider": {
                "module": self.provider_class(self.spec),
                "iam_api_key": self._api_key,
                "cache_stopped_nodes": False,
            },
            "auth": {"ssh_user": run.ssh.user, "ssh_private_key": str(run.ssh.key)},
            "available_node_types": node_types,
        }

    def render(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        rendered = launcher_config.deep_merge(self._base, self.provider_section(run, machines))
        if self.spec.get(COMPAT) and not self.spec.get(PROVIDER):
            # The head's autoscaler imports the fix too: the file goes there, on its path.
            rendered["file_mounts"] = {
                **(rendered.get("file_mounts") or {}),
                COMPAT_REMOTE: str(COMPAT_DIR),
            }
            path = f"export PYTHONPATH={COMPAT_REMOTE.replace('~', '$HOME')}${{PYTHONPATH:+:$PYTHONPATH}}; "
            rendered["head_start_ray_commands"] = [
                path + c for c in rendered.get("head_start_ray_commands") or []
            ]
        rendered = launcher_config.deep_merge(
            rendered, launcher_config.load_user_overrides(self.spec.get(LAUNCHER_CONFIG))
        )
        launcher_config.validate(rendered, source="ibm cluster config")
        return rendered

    def write_config(self, run: RayUpRun, rendered: Mapping[str, Any]) -> Path:
        # The report keeps the config with the key redacted; `ray up` reads the real one from
        # a directory only this user can read, removed at teardown.
        redacted = json.loads(json.dumps(rendered))
        redacted["provider"]["iam_api_key"] = REDACTED
        launcher_config.write(redacted, self.spec.workdir)
        assert self._private is not None
        return launcher_config.write(rendered, self._private, mode=0o600)

    def vpc(self) -> Any:
        if self.stage is not None:
            return self.stage.vpc()
        provider = self._base.get("provider") or {}
        return vpc_client(str(provider["endpoint"]), self._api_key, provider.get("iam_endpoint"))

    def prepare_machines(self, run: RayUpRun, timeout: float) -> list[Machine]:
        spec = self.spec
        if self.stage is not None:
            node = nodeimage.node_image_for(spec, timeout, need_ssh=True)
            assert self._private is not None
            self.stage.start(node, [self._private, COMPAT_DIR], self.spec.deadline.left())
        try:
            self._snapshot_and_import_key(self.vpc(), run.ssh.key)
        except ProvisionError:
            raise
        except Exception as exc:  # the SDK's ApiException: what the VPC said, in one line
            raise ProvisionError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        return []  # the connector creates the instances in `ray up`

    def _snapshot_and_import_key(self, vpc: Any, ssh_key: Path) -> None:
        groups = {
            str((t.get("node_config") or {}).get("security_group_id"))
            for t in (self._base.get("available_node_types") or {}).values()
        }
        self._before = Snapshot(
            {f["id"] for f in collect(vpc.list_floating_ips, "floating_ips")},
            {
                sg: {r["id"] for r in vpc.list_security_group_rules(sg).get_result()["rules"]}
                for sg in sorted(groups)
            },
        )
        head = (self._base.get("available_node_types") or {})[self._base["head_node_type"]]
        key = vpc.create_key(
            public_key=Path(f"{ssh_key}.pub").read_text().strip(),
            name=self._key_name,
            type="ed25519",
            resource_group={"id": head["node_config"]["resource_group_id"]},
        ).get_result()
        self._key_id = key["id"]
        self.spec.progress(f"imported the run's SSH key as {self._key_name} ({self._key_id})")

    def launcher_env(self, run: RayUpRun) -> dict[str, str]:
        # Autoscaler v1, as the other launcher modes (see provisioners/sources/aws.py).
        env = {"RAY_UP_enable_autoscaler_v2": "0"}
        if self.spec.get(COMPAT):
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(COMPAT_DIR), os.environ.get("PYTHONPATH")) if p
            )
        return env

    def launcher_for(self, run: RayUpRun, base: Launcher) -> Launcher:
        # The rehearsal runs `ray` in its client container, on the run's network only.
        return self.stage.launcher(base) if self.stage is not None else base

    def gave_up(self, run: RayUpRun) -> str | None:
        return self.stage.gave_up() if self.stage is not None else None

    def node_count(self, run: RayUpRun) -> int:
        return launcher_config.min_nodes(run.launcher.config)

    def expected_nodes(self, run: RayUpRun) -> list[Machine]:
        return []  # the connector names them; counted by node_count

    def discover_machines(self, run: RayUpRun) -> list[Machine]:
        vpc = self.vpc()
        prefix = f"ray-{self._cluster}-"
        found = [
            i
            for i in collect(vpc.list_instances, "instances")
            if i["name"].startswith(prefix) and i["status"] == "running"
        ]
        found.sort(key=lambda i: (not i["name"].startswith(f"{prefix}head"), i["name"]))
        provider = run.launcher.config.get("provider") or {}
        machines = []
        for inst in found:
            ip = primary_address(inst)
            if inst["name"].startswith(f"{prefix}head"):
                self._head_private = ip
            if inst["name"].startswith(f"{prefix}head") and not provider.get("use_internal_ips"):
                nic = inst["primary_network_interface"]["id"]
                fips = vpc.list_instance_network_interface_floating_ips(
                    inst["id"], nic
                ).get_result()["floating_ips"]
                if self._before is not None:
                    self._before.seen_fips.update(f["id"] for f in fips)
                ip = fips[0]["address"] if fips else ip
            machines.append(Machine(inst["name"], ip))
        return machines

    def ssh_target(self, run: RayUpRun, machine: Machine, target: SshTarget) -> SshTarget:
        # Workers have private addresses only (use_hybrid_ips): reached through the head.
        if self.stage is not None:  # every ssh of the run (probes, tunnels, node_exec)
            self.stage.check_address(machine.ip)
        provider = run.launcher.config.get("provider") or {}
        machines = run.machines
        if machines and machine != machines[0] and not provider.get("use_internal_ips"):
            head = SshTarget(machines[0].ip, target.user, target.key)
            return SshTarget(target.host, target.user, target.key, jump=head)
        return target

    def ray_host(self, run: RayUpRun) -> str:
        # Ray listens on the head's own (private) address; a floating IP is NAT in front of it.
        return self._head_private or run.head().ip

    def collect_diagnostics(self, run: RayUpRun, dest: Path) -> None:
        if self.stage is not None:  # the rehearsal's cloud API and client, by their logs
            self.stage.save_service_logs(dest)

    def access(self, run: RayUpRun) -> dict[str, str]:
        if self.stage is None:
            return {}
        return self.stage.access(run.launcher.config_path, run.ssh.target(run.head()))

    # --- Teardown and leaks -------------------------------------------------------------------

    def remove_machines(self, run: RayUpRun) -> None:
        self._remove_cloud_leftovers()
        if self.stage is not None:
            self.stage.stop()

    def _remove_cloud_leftovers(self) -> None:
        if self._cleaned or self._before is None:
            return
        self._cleaned = True
        try:
            self._remove_cloud_objects()
        except (ProvisionError, WaitTimeout, OSError, KeyError) as exc:
            self.spec.progress(f"cleanup incomplete: {exc}")
        except Exception as exc:  # the SDK's ApiException and requests' errors
            self.spec.progress(f"cleanup incomplete: {type(exc).__name__}: {exc}")
        # The snapshot is what the leak check reads (the rehearsal's API goes next): a listing
        # that failed stays in it as the failure it is.
        self._left = self._vpc_inventory()

    def _remove_cloud_objects(self) -> None:
        """After ``ray down``: delete instances left, wait, then floating IPs, volumes, the key."""
        assert self._before is not None
        vpc = self.vpc()

        def items(kind: str) -> list[InventoryItem]:
            assert self._before is not None
            found = ibm_inventory(
                vpc, self._cluster, self.spec.run_id, self._key_name, self._before
            )
            return [i for i in found if i.kind == kind]

        left = items("instance")
        if left:
            self.spec.progress(
                f"deleting {len(left)} instance(s) ray down left: {', '.join(i.name for i in left)}"
            )
            for inst in left:
                vpc.delete_instance(inst.name)
        wait_for(
            lambda: not items("instance"),
            timeout=DELETE_TIMEOUT_S,
            what=f"instances of {self._cluster} to be deleted",
            interval=2.0,
        )
        deleters = {
            "floating-ip": vpc.delete_floating_ip,
            "volume": vpc.delete_volume,
            "key": vpc.delete_key,
        }
        for kind, delete in deleters.items():
            for item in items(kind):
                if kind == "floating-ip" and item.name not in self._before.seen_fips:
                    continue  # not known to be the run's: reported by the leak check instead
                try:
                    delete(item.name)
                except Exception as exc:  # gone meanwhile (a boot volume the VPC deletes itself)
                    if getattr(exc, "code", None) != 404:
                        raise

    def remove_files(self, run: RayUpRun) -> None:
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
        self._forget_tags()

    def _forget_tags(self) -> None:
        """Drop the run's cluster from the connector's ``~/.ray-gen2-tags`` (its file if ours)."""
        path = Path.home() / TAGS_FILE
        with contextlib.suppress(OSError, ValueError):
            tags = json.loads(path.read_text())
            if isinstance(tags, dict) and self._cluster in tags:
                del tags[self._cluster]
                if tags or self._tags_existed:
                    path.write_text(json.dumps(tags))
                else:
                    path.unlink()

    def leak_query(self, run: RayUpRun) -> list[InventoryItem]:
        items: list[InventoryItem] = []
        if self._left is not None:
            items += self._left
        elif self._before is not None:
            items += self._vpc_inventory()
        path = Path.home() / TAGS_FILE
        if self._cluster and path.exists():
            try:
                with listing(f"entries of ~/{TAGS_FILE}"):
                    tags = json.loads(path.read_text())
                    if not isinstance(tags, dict):
                        raise ValueError(f"a JSON {type(tags).__name__}, not an object")
            except InventoryError as exc:
                items.append(exc.item(self.spec.run_id))
            else:
                if self._cluster in tags:
                    items.append(
                        InventoryItem(
                            "file-entry",
                            f"~/{TAGS_FILE}[{self._cluster}]",
                            self.spec.run_id,
                            "the connector's node tags",
                        )
                    )
        if self.stage is not None:
            items += self.stage.inventory()
        if self._private is not None and self._private.exists():
            items.append(
                InventoryItem(
                    "directory", str(self._private), self.spec.run_id, "config with the API key"
                )
            )
        return items

    def _vpc_inventory(self) -> list[InventoryItem]:
        """The run's VPC objects, or the item naming the listing that failed."""
        assert self._before is not None
        try:
            with listing("VPC objects (no VPC client)"):
                vpc = self.vpc()
            return ibm_inventory(vpc, self._cluster, self.spec.run_id, self._key_name, self._before)
        except InventoryError as exc:
            return [exc.item(self.spec.run_id)]

    def removal_commands(self, run: RayUpRun) -> list[str]:
        if self.stage is not None:
            return self.stage.removal_commands()
        commands = super().removal_commands(run)
        private = [f"rm -rf {self._private}"] if self._private else []
        name = f"ray-{self._cluster}-"
        return [
            *commands,
            f"ibmcloud is instances --output json | jq -r '.[] | select(.name | startswith(\"{name}\")) | .id' | xargs -r -n1 ibmcloud is instance-delete -f",
            f"ibmcloud is key-delete {self._key_name} -f",
            *private,
        ]
