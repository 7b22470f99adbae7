"""The ``ibm`` mode without an account: the connector probe (which keeps the mode's SKIP reason
true), its fix, and the mode's key import, inventory, cleanup and secrets against the loopback
stand-in of IBM's IAM and VPC API, with instances made by the real connector."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioners.contract.base import ClusterSpec, Timeouts
from provisioners.deployers.launcher import CLUSTER_YAML
from provisioners.deployers.launcher import config as launcher_config
from provisioners.modes.ibm import IbmProvisioner
from provisioners.rehearsals.ibm_probe import (
    COMPAT_DIR,
    CONNECTOR_CLASS,
    OLD_CONNECTOR_CLASS,
    probe,
)
from provisioners.rehearsals.ibm_standin import ZONE, StandIn, serve
from provisioners.sources.ibm import API_KEY_ENVS, COMPAT, COMPAT_CLASS, REDACTED, TAGS_FILE

PLANTED_KEY = "planted-ibm-api-key-7f3a9c"
REPO = Path(__file__).resolve().parent.parent


def test_probe_names_what_the_published_connector_gets_wrong() -> None:
    found = probe(CONNECTOR_CLASS, cached=False)
    assert found.versions["gen2-connector"] == "1.0.0b67"
    steps = {s["step"]: s["ok"] for s in found.steps}
    # It loads, creates the head with a floating IP and lists it: only the address is wrong.
    assert steps["create the head"]
    assert steps["external_ip(head)"]
    assert found.failure is not None
    assert found.failure.startswith("internal_ip(head): returned {'address': '10.240.0.4'")
    assert "not an IP address" in found.failure
    assert steps["terminate_nodes"], found.steps


def test_probe_passes_the_fix_and_every_step_runs() -> None:
    found = probe(COMPAT_CLASS, cached=False)
    assert found.ok, found.steps
    assert [s["step"] for s in found.steps] == [
        "load the provider as Ray does",
        "create the head",
        "non_terminated_nodes lists the head",
        "external_ip(head)",
        "internal_ip(head)",
        "create a worker",
        "internal_ip(worker)",
        "terminate_nodes",
    ]


def test_probe_names_the_books_class_renamed_in_b64() -> None:
    found = probe(OLD_CONNECTOR_CLASS, cached=False)
    assert found.failure is not None
    assert "has no attribute 'Gen2NodeProvider'" in found.failure


def _spec(tmp_path: Path, **options: object) -> ClusterSpec:
    return ClusterSpec(
        mode="ibm",
        run_id=f"t{int(time.time() * 1000) % 10**8}",
        workdir=tmp_path / "report" / "work" / "ibm",
        timeouts=Timeouts(provision=120, node_join=60, preflight=3, job=60),
        options=options,
    )


def _user_yaml(tmp_path: Path, server: StandIn | None = None, **provider: object) -> Path:
    """A lithopscloud-style YAML: the template with the stand-in account's ids."""
    cloud = server.cloud if server else None
    base = server.base if server else "https://us-south.iaas.cloud.ibm.com"
    values = {
        "cluster_name": "book",
        "endpoint": base,
        "iam_endpoint": base if server else "https://iam.cloud.ibm.com",
        "zone_name": ZONE,
        "vpc_id": cloud.vpc_id if cloud else "r006-vpc",
        "subnet_id": cloud.subnet_id if cloud else "0717-subnet",
        "security_group_id": cloud.security_group_id if cloud else "r006-sg",
        "resource_group_id": cloud.resource_group_id if cloud else "rg",
        "image_id": "r006-image",
        "object_store_bytes": 150_000_000,
    }
    config = launcher_config.load_template("ibm.yaml", values)
    config["provider"].update(provider)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in API_KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # the connector's ~/.ray-gen2-tags lands here


def test_the_template_passes_rays_schema(tmp_path: Path) -> None:
    config = yaml.safe_load(_user_yaml(tmp_path).read_text())
    launcher_config.validate(config, source="ibm template")
    head, worker = (
        config["available_node_types"][n]["node_config"]["instance_profile_name"]
        for n in ("ray_head_default", "ray_worker_default")
    )
    assert (head, worker) == ("bx2-4x16", "bx2-8x32")  # the book's profiles


@pytest.mark.usefixtures("no_key")
def test_skips_name_the_probe_the_yaml_and_the_key(tmp_path: Path) -> None:
    missing = IbmProvisioner().missing_prerequisites(_spec(tmp_path))
    text = "\n".join(missing)
    assert "cannot run a cluster" in text
    assert "internal_ip(head)" in text
    assert COMPAT.flag in text
    assert CLUSTER_YAML.flag in text
    assert API_KEY_ENVS[0] in text


@pytest.mark.usefixtures("no_key")
def test_nothing_missing_with_the_fix_a_yaml_and_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENVS[0], PLANTED_KEY)
    spec = _spec(tmp_path, **{COMPAT.key: True, CLUSTER_YAML.key: str(_user_yaml(tmp_path))})
    assert IbmProvisioner().missing_prerequisites(spec) == []


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with serve(PLANTED_KEY) as server:
        yield server


def _launch(rendered: dict[str, Any], kind: str) -> None:
    """Create a node the way ``ray up`` (head) and the head's autoscaler (workers) do."""
    from ray.autoscaler._private.providers import _get_node_provider

    provider = _get_node_provider(rendered["provider"], rendered["cluster_name"], use_cache=False)
    node_type = rendered["head_node_type"] if kind == "head" else "ray_worker_default"
    tags = {
        "ray-node-kind": kind,
        "ray-node-name": f"ray-{rendered['cluster_name']}-{kind}",
        "ray-user-node-type": node_type,
    }
    provider.create_node(rendered["available_node_types"][node_type]["node_config"], tags, 1)


@pytest.mark.usefixtures("no_key")
def test_key_inventory_cleanup_and_secrets_against_the_standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin: StandIn
) -> None:
    monkeypatch.setenv(API_KEY_ENVS[0], PLANTED_KEY)
    monkeypatch.syspath_prepend(str(COMPAT_DIR))  # as the launcher's PYTHONPATH does
    spec = _spec(
        tmp_path, **{COMPAT.key: True, CLUSTER_YAML.key: str(_user_yaml(tmp_path, standin))}
    )
    mode = IbmProvisioner()
    mode._spec = spec
    machines, run = mode.source, mode.run
    machines.plan(run)
    mode.prepare_access()
    machines.prepare_machines(run, 60)
    cloud = standin.cloud
    [key] = cloud.keys.values()
    assert key["public_key"] == Path(f"{mode.ssh_key}.pub").read_text().strip()
    rendered = mode.render([])
    path = machines.write_config(run, rendered)
    # The config `ray up` reads holds the key, for this user only, outside the report.
    assert PLANTED_KEY in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert spec.workdir not in path.parents
    report_copy = yaml.safe_load((spec.workdir / "cluster.yaml").read_text())
    assert report_copy["provider"]["iam_api_key"] == REDACTED
    assert {n["node_config"]["key_id"] for n in rendered["available_node_types"].values()} == {
        key["id"]
    }
    # The head's mounts and start commands carry the fix to its autoscaler.
    assert "~/rc-ibm-compat" in rendered["file_mounts"]
    assert all(
        c.startswith("export PYTHONPATH=$HOME/rc-ibm-compat")
        for c in rendered["head_start_ray_commands"]
    )

    _launch(rendered, "head")
    _launch(rendered, "worker")
    cloud.rules["r006-rule-planted"] = {"id": "r006-rule-planted", "direction": "inbound"}
    kinds = sorted(i.kind for i in machines.leak_query(run))
    assert kinds == sorted(
        [
            "instance",
            "instance",
            "floating-ip",
            "volume",
            "volume",
            "key",
            "security-group-rule",
            "file-entry",
            "directory",
        ]
    )
    # Another cluster's head address, made as the connector names them, unbound for a moment.
    other = cloud.create_floating_ip({"name": "ray-recyclable-othr"}, standin.base)["id"]

    machines.remove_machines(run)
    machines.remove_files(run)
    left = sorted((i.kind, i.name) for i in machines.leak_query(run))
    # What the run made is gone; what it cannot tell from another's is reported, not deleted.
    assert left == [("floating-ip", other), ("security-group-rule", "r006-rule-planted")]
    assert list(cloud.floating_ips) == [other]
    assert (cloud.instances, cloud.keys, cloud.volumes) == ({}, {}, {})
    assert not (Path.home() / TAGS_FILE).exists()  # the connector wrote it for this run only
    # The planted key is nowhere in what the report keeps.
    for file in (tmp_path / "report").rglob("*"):
        if file.is_file():
            assert PLANTED_KEY not in file.read_text(errors="replace"), file


# --- A whole rehearsal (Docker, root): the book's YAML, a leak reported, secrets absent ----------

PLANT = """
def test_plant_a_rule(ray_cluster, ray_provisioner, ray_spec):
    # Workers have private addresses only: this ssh goes through the head (ProxyCommand).
    workers = ray_provisioner.node_names()[1:]
    assert workers
    for name in workers:
        assert ray_provisioner.node_exec(name, ["hostname"], 60).strip() == name
    vpc = ray_provisioner.source.vpc()
    sg = ray_provisioner.source.stage.account["security_group_id"]
    vpc.create_security_group_rule(sg, {"direction": "inbound", "protocol": "tcp",
                                        "port_min": 8265, "port_max": 8265})
"""


def _rehearsal_problem() -> str | None:
    from provisioners.util.containers import engine_problem

    if os.geteuid() != 0 or shutil.which("iptables") is None:
        return "needs root and iptables"
    return engine_problem(None)


@pytest.mark.skipif(_rehearsal_problem() is not None, reason="needs a Docker engine and root")
@pytest.mark.timeout(900)
def test_rehearsal_of_the_books_yaml_reports_a_planted_rule_and_never_writes_secrets(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    from provisioners.util.nodeimage import cache_dir

    book = _user_yaml(
        tmp_path, iam_api_key="planted-yaml-key-4d2e", module="gen2.node_provider.Gen2NodeProvider"
    )
    for name, value in {
        API_KEY_ENVS[0]: PLANTED_KEY,
        "XDG_CACHE_HOME": str(cache_dir().parent),
    }.items():
        pytester._monkeypatch.setenv(name, value)
    pytester.makepyfile(
        test_a_plant=PLANT, test_z_leak=(REPO / "suites" / "test_teardown_leak.py").read_text()
    )
    report = tmp_path / "report"
    result = pytester.runpytest_subprocess(
        "--ray-modes",
        "ibm",
        "--ray-ibm-rehearsal",
        "--ray-ibm-compat",
        f"--ray-cluster-yaml={book}",
        "--ray-workers",
        "1",
        f"--ray-report-dir={report}",
        "-p",
        "no:cacheprovider",
        timeout=840,
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*teardown left 1 thing(s) behind:*",
            "*security-group-rule r006-rule-*added to r006-sg-standin*",
        ]
    )
    files = [f for f in report.rglob("*") if f.is_file()]
    assert any(f.name == "cluster.yaml" for f in files)  # the rendered copy was searched too
    hits = [
        (str(f), s)
        for f in files
        for s in (PLANTED_KEY, "planted-yaml-key-4d2e")
        if s in f.read_text(errors="replace")
    ]
    assert hits == []
    assert "blocked-connection" not in result.stdout.str()


@pytest.mark.parametrize("ip", ["192.0.2.1", "169.254.169.254", "8.8.8.8", "10.242.0.1", ""])
def test_the_rehearsal_dials_only_its_networks(tmp_path: Path, ip: str) -> None:
    from provisioners.contract.base import ProvisionError
    from provisioners.rehearsals.ibm import Stage

    stage = Stage("r1", "ibm", tmp_path, None, lambda _m: None)
    with pytest.raises(ProvisionError, match="refusing to dial"):
        stage.check_address(ip)
    assert stage.check_address("10.240.0.4") == "10.240.0.4"  # an instance
    assert stage.check_address("10.241.0.1") == "10.241.0.1"  # a floating IP, backed there
