"""Mode ``aws``: refusals before anything starts, the inventory, the rehearsal's safety nets,
and (with Docker and root) a whole rehearsal that leaks a security group on purpose."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from provisioners.contract.base import RUN_ID_LABEL, ClusterSpec, ProvisionError, Timeouts
from provisioners.deployers.launcher import CLUSTER_YAML, Machine, autoscaling
from provisioners.modes.aws import AwsProvisioner
from provisioners.rehearsals.aws import Stage, ec2_listing
from provisioners.rehearsals.stage import DropRule, InstanceLoop
from provisioners.sources import aws
from provisioners.sources.aws import (
    REHEARSAL,
    SKIP_SETUP,
    aws_inventory,
    credentials_found,
    failed_setup,
    guard_setup,
    security_group_name,
    shared_iam,
)
from provisioners.util import containers, nodeimage, runstate
from provisioners.util.containers import engine_problem
from provisioners.util.naming import run_name
from provisioners.util.runner import run

REPO = Path(__file__).resolve().parent.parent
#: The image cache as this user has it: pytester moves HOME, which would mean a rebuild.
CACHE_HOME = nodeimage.cache_dir().parent
AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def _spec(tmp_path: Path, **options: object) -> ClusterSpec:
    return ClusterSpec(
        mode="aws",
        run_id=f"t{int(time.time() * 1000) % 10**8}",
        workdir=tmp_path / "work",
        timeouts=Timeouts(provision=120, node_join=60, preflight=3, job=60),
        options={REHEARSAL.key: True, **options},
    )


def _book_yaml(tmp_path: Path, **provider: object) -> Path:
    """A user's cluster YAML shaped like the book's, with provider keys laid over."""
    config = yaml.safe_load((REPO / "provisioners" / "templates" / "aws.yaml").read_text())
    config["cluster_name"] = "book"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        config[key] = ["ray stop"]
    config["provider"].update(provider)
    path = tmp_path / "my-aws.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def metadata_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything asks the instance metadata service (169.254.169.254)."""
    import botocore.utils

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the instance metadata service was asked")

    monkeypatch.setattr(botocore.utils.IMDSFetcher, "_fetch_metadata_token", forbidden)
    monkeypatch.setattr(botocore.utils.IMDSFetcher, "_get_request", forbidden)


# --- Skips and refusals, before anything starts -------------------------------------------------


@pytest.mark.usefixtures("no_aws_env", "metadata_forbidden")
def test_no_credentials_skips_saying_so_without_asking_the_metadata_service(
    tmp_path: Path,
) -> None:
    assert not credentials_found()
    missing = AwsProvisioner().missing_prerequisites(_spec(tmp_path, **{REHEARSAL.key: False}))
    assert any("no AWS credentials found by boto3's chain" in m for m in missing), missing
    assert any("--ray-aws-rehearsal" in m for m in missing), missing


@pytest.mark.usefixtures("no_aws_env", "metadata_forbidden")
def test_credentials_in_the_environment_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANTEDFAKE00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-fake-secret")
    assert credentials_found()


def _refused(tmp_path: Path, spec: ClusterSpec, match: str) -> None:
    p = AwsProvisioner()
    with pytest.raises(ProvisionError, match=match) as info:
        p.provision(spec)
    assert p.source.stage is None  # refused before moto, a network or a container existed
    p.teardown()
    assert p.inventory() == []
    assert not (spec.workdir / "cluster.yaml").exists()
    assert "\n" not in str(info.value)


def test_rehearsal_refuses_a_config_without_internal_ips(tmp_path: Path) -> None:
    path = _book_yaml(tmp_path)
    _refused(tmp_path, _spec(tmp_path, **{CLUSTER_YAML.key: path}), r"use_internal_ips: true")


def test_rehearsal_refuses_subnets_it_cannot_back(tmp_path: Path) -> None:
    path = _book_yaml(tmp_path, use_internal_ips=True)
    config = yaml.safe_load(path.read_text())
    config["available_node_types"]["ray.head.default"]["node_config"]["SubnetIds"] = ["subnet-1"]
    path.write_text(yaml.safe_dump(config))
    _refused(tmp_path, _spec(tmp_path, **{CLUSTER_YAML.key: path}), r"names SubnetIds")


def test_credentials_in_the_yaml_are_refused_and_never_echoed(tmp_path: Path) -> None:
    secret = "planted-yaml-secret-0123456789"
    path = _book_yaml(
        tmp_path,
        use_internal_ips=True,
        aws_credentials={"aws_access_key_id": "AKIAPLANTED", "aws_secret_access_key": secret},
    )
    spec = _spec(tmp_path, **{CLUSTER_YAML.key: path})
    p = AwsProvisioner()
    with pytest.raises(ProvisionError, match=r"provider\.aws_credentials") as info:
        p.provision(spec)
    assert secret not in str(info.value)
    p.teardown()
    assert not any(secret in f.read_text(errors="replace") for f in _files(spec.workdir))


def _files(root: Path) -> list[Path]:
    return [f for f in root.rglob("*") if f.is_file()] if root.exists() else []


def test_render_sets_run_name_key_tags_and_no_network_setup(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    p = AwsProvisioner()
    p._spec = spec
    p.source.plan(p.run)
    p.prepare_access()
    try:
        config = p.render([])
    finally:
        p.teardown()  # the generated key
    name = run_name(spec.run_id, "aws")
    assert config["cluster_name"] == name
    assert config["provider"]["use_internal_ips"] is True
    assert config["provider"]["cache_stopped_nodes"] is False
    assert config["auth"]["ssh_private_key"] == str(p.ssh_key)
    # The run's private dir: never ~/.ssh, never the report (the workdir).
    assert str(p.ssh_key).startswith(str(runstate.private_path(spec.run_id, "aws")))
    assert p.ssh_key is not None
    assert not p.ssh_key.exists()  # removed at teardown
    for node_type in config["available_node_types"].values():
        node = node_type["node_config"]
        assert node["KeyName"] == run_name(spec.run_id, "aws", "key")
        tagged = {
            s["ResourceType"]
            for s in node["TagSpecifications"]
            if {"Key": RUN_ID_LABEL, "Value": spec.run_id} in s["Tags"]
        }
        assert tagged == {"instance", "volume"}
    assert all(config[key] == [] for key in aws.SETUP_KEYS)
    assert config["available_node_types"]["ray.worker.default"]["min_workers"] == 2
    # The head's autoscaler has a type of its own to add, from none, for work only it can hold.
    scaled = config["available_node_types"][autoscaling.NODE_TYPE]
    assert (scaled["min_workers"], scaled["max_workers"]) == (0, 1)
    assert scaled["resources"] == {"CPU": 0, autoscaling.RESOURCE: 1}
    assert scaled["node_config"]["InstanceType"] == "m5.large"  # the workers' machine
    assert config["max_workers"] == 3
    assert config["idle_timeout_minutes"] == pytest.approx(12.0 / 60)
    limits = p.autoscaling_limits()
    assert limits is not None
    assert limits.resource == autoscaling.RESOURCE
    assert limits.max_workers == 1


def test_no_autoscaled_type_when_asked_for_none(tmp_path: Path) -> None:
    spec = _spec(tmp_path, **{autoscaling.AUTOSCALE_MAX.key: 0})
    p = AwsProvisioner()
    p._spec = spec
    p.source.plan(p.run)
    assert autoscaling.NODE_TYPE not in p.source._base["available_node_types"]
    assert p.autoscaling_limits() is None


def test_a_yaml_that_already_has_the_autoscaled_type_is_refused(tmp_path: Path) -> None:
    path = _book_yaml(tmp_path, use_internal_ips=True)
    config = yaml.safe_load(path.read_text())
    types = config["available_node_types"]
    types[autoscaling.NODE_TYPE] = copy.deepcopy(types["ray.worker.default"])
    path.write_text(yaml.safe_dump(config))
    _refused(tmp_path, _spec(tmp_path, **{CLUSTER_YAML.key: path}), "already has a node type")


# --- Setup commands that need the network ---------------------------------------------------


def test_a_failing_setup_command_is_named() -> None:
    config = {"setup_commands": ["true", "false  # pip install from PyPI"]}
    guarded = guard_setup(config)
    outputs = []
    for command in guarded["setup_commands"]:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
        outputs.append((done.returncode, done.stderr))
    assert outputs[0] == (0, "")
    assert outputs[1][0] == 1
    assert failed_setup(outputs[1][1], config) == (
        "setup_commands[1]: 'false  # pip install from PyPI'"
    )


def test_skip_setup_empties_every_setup_command(tmp_path: Path) -> None:
    path = _book_yaml(tmp_path, use_internal_ips=True)
    config = yaml.safe_load(path.read_text())
    config["setup_commands"] = ["pip install pandas"]
    path.write_text(yaml.safe_dump(config))
    spec = _spec(tmp_path, **{CLUSTER_YAML.key: path, SKIP_SETUP.key: True})
    p = AwsProvisioner()
    p._spec = spec
    p.source.plan(p.run)
    p.prepare_access()
    try:
        assert p.render([])["setup_commands"] == []
    finally:
        p.teardown()


# --- Inventory (moto in this process: no server, no network) --------------------------------


@pytest.fixture
def ec2() -> Iterator[Any]:
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("ec2", region_name="us-west-2")


def _launch(ec2: Any, cluster: str, run_id: str) -> str:
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.create_security_group(GroupName=security_group_name(cluster), Description="ray")
    tags = [{"Key": "ray-cluster-name", "Value": cluster}, {"Key": RUN_ID_LABEL, "Value": run_id}]
    r = ec2.run_instances(
        ImageId="ami-785db401",
        MinCount=1,
        MaxCount=1,
        InstanceType="m5.large",
        SubnetId=subnet,
        SecurityGroupIds=[group["GroupId"]],
        KeyName="k",
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags[1:]},
        ],
    )
    return str(r["Instances"][0]["InstanceId"])


def test_inventory_lists_what_the_run_left_and_nothing_of_others(ec2: Any, tmp_path: Path) -> None:
    key = tmp_path / "k.pub"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    ec2.import_key_pair(KeyName="k", PublicKeyMaterial=key.read_bytes())
    ec2.create_security_group(GroupName="someone-elses", Description="not ours")
    iid = _launch(ec2, "rc-r1-aws", "r1")
    kinds = {i.kind for i in aws_inventory(ec2, "rc-r1-aws", "r1", "k")}
    assert kinds == {"instance", "security-group", "key-pair", "network-interface", "volume"}
    names = " ".join(f"{i.name} {i.detail}" for i in aws_inventory(ec2, "rc-r1-aws", "r1", "k"))
    assert iid in names
    assert "someone-elses" not in names
    assert aws_inventory(ec2, "rc-other-aws", "other", "other-key") == []


def test_teardown_removes_rays_leftovers_and_reports_a_planted_group(
    ec2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, **{REHEARSAL.key: False})
    p = AwsProvisioner()
    p._spec = spec
    machines = p.source
    machines.plan(p.run)
    ec2.import_key_pair(KeyName=machines._key_name, PublicKeyMaterial=_public_key(tmp_path))
    _launch(ec2, machines._cluster, spec.run_id)  # an instance `ray down` missed, and Ray's group
    planted = ec2.create_security_group(
        GroupName="planted",
        Description="left on purpose",
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [{"Key": RUN_ID_LABEL, "Value": spec.run_id}],
            }
        ],
    )
    monkeypatch.setattr(machines, "ec2", lambda: ec2)
    monkeypatch.setattr(
        machines, "_client", lambda service: boto3.client(service, region_name="us-west-2")
    )
    machines._cleaned = False
    machines.remove_machines(p.run)
    left = machines.leak_query(p.run)
    assert [(i.kind, i.name, i.detail) for i in left] == [
        ("security-group", planted["GroupId"], "planted")
    ]
    p.teardown()  # the run's notes (where a sweep would look in EC2) go with it
    assert not runstate.run_dir(spec.run_id).exists()


def _public_key(tmp_path: Path) -> bytes:
    key = tmp_path / "pk"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return Path(f"{key}.pub").read_bytes()


def test_shared_iam_is_reported_as_kept() -> None:
    from moto import mock_aws

    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        assert shared_iam(iam) == []
        iam.create_role(RoleName=aws.SHARED_IAM, AssumeRolePolicyDocument="{}")
        iam.create_instance_profile(InstanceProfileName=aws.SHARED_IAM)
        assert shared_iam(iam) == [
            f"IAM role {aws.SHARED_IAM}",
            f"instance profile {aws.SHARED_IAM}",
        ]


# --- Safety: what this host may dial, the instance loop ---------------------------------------


@pytest.mark.parametrize("ip", ["54.214.124.217", "169.254.169.254", "10.1.2.3", "8.8.8.8", ""])
def test_only_addresses_on_the_run_network_are_dialed(tmp_path: Path, ip: str) -> None:
    stage = Stage("r1", "aws", tmp_path, "us-west-2", None, lambda _m: None)
    with pytest.raises(ProvisionError, match="refusing to dial"):
        stage.check_address(ip)
    p = AwsProvisioner()
    p._spec = _spec(tmp_path)
    p.source.stage = stage
    p.ssh_key = tmp_path / "key"
    with pytest.raises(ProvisionError, match="refusing to dial"):
        p.target(Machine("i-1", ip))
    assert stage.check_address("172.31.0.4") == "172.31.0.4"


class _Ec2:
    """DescribeInstances pages as moto would give them; ``fail`` makes every call raise."""

    def __init__(self, instances: list[dict[str, Any]], fail: bool = False) -> None:
        self.instances, self.fail, self.calls = instances, fail, 0

    def get_paginator(self, _name: str) -> Any:
        outer = self

        class Pages:
            def paginate(self) -> list[dict[str, Any]]:
                outer.calls += 1
                if outer.fail:
                    raise ConnectionError("moto went away")
                return [{"Reservations": [{"Instances": copy.deepcopy(outer.instances)}]}]

        return Pages()


def _stage(seen: list[str]) -> Stage:
    return Stage("r1", "aws", Path("/nonexistent"), "us-west-2", None, seen.append)


class _NoDocker:
    """A Docker client that must never be asked to start anything."""

    class containers:  # the SDK's attribute name
        @staticmethod
        def list(**_kwargs: object) -> list[Any]:
            return []

        @staticmethod
        def run(*_args: object, **_kwargs: object) -> Any:
            raise AssertionError("a container was started for a refused instance")


@pytest.mark.parametrize("ip", ["10.0.3.7", "54.214.1.2", "172.31.250.9", ""])
def test_the_loop_refuses_instances_off_the_run_network(ip: str) -> None:
    seen: list[str] = []
    inst = {"InstanceId": "i-1", "State": {"Name": "running"}, "PrivateIpAddress": ip}
    loop = InstanceLoop(_stage(seen), "img", {}, ec2_listing(_Ec2([inst])))
    loop._docker = _NoDocker()
    loop.sync()
    loop.sync()
    assert list(loop.state.refused) == ["i-1"]
    assert len([m for m in seen if "refusing i-1" in m]) == 1


def test_the_loop_survives_errors_and_is_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "docker_client", lambda _h: _NoDocker())
    ec2 = _Ec2([], fail=True)
    seen: list[str] = []
    loop = InstanceLoop(_stage(seen), "img", {}, ec2_listing(ec2))
    loop.start()
    from provisioners.util.waits import wait_for

    wait_for(lambda: ec2.calls >= 2, timeout=10, what="two ticks")
    assert loop.alive()
    assert loop.state.errors == ["ConnectionError: moto went away"]
    assert seen == ["instance loop: ConnectionError: moto went away"]  # said once
    loop.stop(timeout=5)
    assert not loop.alive()
    assert loop.state.crashed is None
    assert not [t for t in threading.enumerate() if t.name.startswith("rehearsal-instances-")]


def test_the_loop_records_a_crash_instead_of_dying(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_engine(_host: object) -> Any:
        raise RuntimeError("no engine")

    monkeypatch.setattr(containers, "docker_client", no_engine)
    loop = InstanceLoop(_stage([]), "img", {}, ec2_listing(_Ec2([])))
    loop.start()
    loop.stop(timeout=5)
    assert loop.state.crashed == "RuntimeError: no engine"


def _iptables_problem() -> str | None:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        return "needs root and iptables"
    return None


@pytest.mark.skipif(_iptables_problem() is not None, reason="needs root and iptables")
def test_drop_rule_is_added_counted_and_removed_by_its_spec() -> None:
    rule = DropRule("rc-h5-none0", f"rc-test-{os.getpid()}")  # an interface that does not exist
    rule.add()
    try:
        assert rule.present()
        assert rule.hits() == 0
    finally:
        rule.remove()
    assert not rule.present()


# --- A whole rehearsal (Docker, root): leak reported, secrets absent -----------------------------

PLANT = """
from provisioners.contract.base import RUN_ID_LABEL
from provisioners.util.naming import run_name


def test_plant_a_security_group(ray_cluster, ray_provisioner, ray_spec):
    ec2 = ray_provisioner.source.ec2()
    ec2.create_security_group(
        GroupName=run_name(ray_spec.run_id, "planted"), Description="left on purpose",
        TagSpecifications=[{"ResourceType": "security-group",
                            "Tags": [{"Key": RUN_ID_LABEL, "Value": ray_spec.run_id}]}],
    )
"""


def _rehearsal_problem() -> str | None:
    return engine_problem(None) or _iptables_problem()


@pytest.mark.skipif(_rehearsal_problem() is not None, reason="needs a Docker engine and root")
@pytest.mark.timeout(900)
def test_rehearsal_reports_a_planted_group_and_never_writes_secrets(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAPLANTEDENV000042",
        "AWS_SECRET_ACCESS_KEY": "planted-env-secret-ZmFrZQ",
        "AWS_SESSION_TOKEN": "planted-env-token-ZmFrZVRva2Vu",
    }
    shared = tmp_path / "credentials"
    shared.write_text(
        "[default]\naws_access_key_id = AKIAPLANTEDFILE00042\n"
        "aws_secret_access_key = planted-file-secret-c2VjcmV0\n"
    )
    env = {**secrets, "AWS_SHARED_CREDENTIALS_FILE": str(shared), "XDG_CACHE_HOME": str(CACHE_HOME)}
    for name, value in env.items():
        pytester._monkeypatch.setenv(name, value)
    pytester.makepyfile(
        test_a_plant=PLANT, test_z_leak=(REPO / "suites" / "test_teardown_leak.py").read_text()
    )
    report = tmp_path / "report"
    result = pytester.runpytest_subprocess(
        "--ray-modes",
        "aws",
        "--ray-aws-rehearsal",
        "--ray-workers",
        "0",
        "--ray-report-dir",
        str(report),
        "-p",
        "no:cacheprovider",
        timeout=840,
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*teardown left 1 thing(s) behind:*", "*security-group sg-* (rc-*-planted)*"]
    )
    # The run keeps its notes for the sweep the harness prints; the printed command runs as is.
    [remove] = [
        line.split("remove them with: ", 1)[1]
        for line in result.outlines
        if "remove them with: " in line
    ]
    run(["bash", "-c", remove], 300, what="the printed sweep")
    run_id = remove.split("--run-id ", 1)[1].split()[0]
    assert not runstate.run_dir(run_id).exists()  # nothing of the run is left, its notes neither
    planted = [*secrets.values(), "AKIAPLANTEDFILE00042", "planted-file-secret-c2VjcmV0"]
    files = _files(report)
    assert any(f.name == "cluster.yaml" for f in files)  # the rendered copy was searched too
    hits = [(str(f), s) for f in files for s in planted if s in f.read_text(errors="replace")]
    assert hits == []
    assert "blocked-connection" not in result.stdout.str()
