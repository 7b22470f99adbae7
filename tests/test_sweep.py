"""``python -m provisioners sweep`` and the run lock it respects, on real processes and files.

Runs made here are dead or alive for real: a child process holds a run's lock (alive) or held it
and was killed with SIGKILL (dead); the run's "leftovers" are real processes carrying its
RC_RUN_ID, a noted temp dir, and its own run dir. Everything runs under ``--run-id`` of the
test's own runs: a sweep here never touches anything else on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from provisioners.commands import sweep
from provisioners.util import runstate
from provisioners.util.waits import wait_for

HOLD = """
import sys, time
from provisioners.util import runstate
runstate.hold(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def _sweep(*args: str) -> subprocess.CompletedProcess[str]:
    """The sweep as a person runs it: a fresh interpreter, the CLI."""
    return subprocess.run(
        [sys.executable, "-m", "provisioners", "sweep", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _holder(run_id: str) -> subprocess.Popen[str]:
    """A process that holds ``run_id`` (as a pytest run of it does) until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, run_id], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _marked_sleeper(run_id: str) -> subprocess.Popen[bytes]:
    """A process of the run (RC_RUN_ID in its environment), like a Ray node or an ssh child."""
    env = {**os.environ, **runstate.run_env(run_id, "local")}
    return subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)


@pytest.fixture
def run_ids() -> Iterator[list[str]]:
    """Fresh run ids for the test; whatever it left of them is removed afterwards."""
    ids = [f"t-sweep-{secrets.token_hex(3)}" for _ in range(2)]
    yield ids
    _sweep(*[a for r in ids for a in ("--run-id", r)])


def _dead_run(run_id: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A run whose holder was SIGKILLed, leaving a marked process and a noted temp dir."""
    holder = _holder(run_id)
    temp = tmp_path / f"rc-{run_id}"
    runstate.note(run_id, "local", "path", path=str(temp), what="Ray's temp dir")
    temp.mkdir()
    (temp / "session_latest").write_text("x")
    sleeper = _marked_sleeper(run_id)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    return sleeper, temp


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_lock_is_held_while_the_holder_lives_and_dropped_by_sigkill(run_ids: list[str]) -> None:
    run_id = run_ids[0]
    assert not runstate.is_live(run_id)
    holder = _holder(run_id)
    try:
        assert runstate.is_live(run_id)
        record = runstate.record(run_id)
        assert record["pid"] == holder.pid
        assert time.time() - record["started"] < 60
        assert oct(runstate.run_dir(run_id).stat().st_mode & 0o777) == oct(0o700)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert not runstate.is_live(run_id)  # the kernel dropped the lock with the process


def test_dry_run_lists_exactly_the_leftovers_and_sweep_removes_them(
    run_ids: list[str], tmp_path: Path
) -> None:
    run_id = run_ids[0]
    sleeper, temp = _dead_run(run_id, tmp_path)
    try:
        dry = _sweep("--dry-run", "--run-id", run_id)
        assert dry.returncode == 0, dry.stderr
        listed = sorted(line.strip() for line in dry.stdout.splitlines() if line.startswith("  "))
        # The run's own dir (its lock and notes, no secret) goes with it, unlisted.
        assert listed == sorted(
            [
                f"process {sleeper.pid} (sleep 600) [local]",
                f"directory {temp} (Ray's temp dir) [local]",
            ]
        ), dry.stdout
        assert _alive(sleeper)
        assert temp.exists()  # a dry run removes nothing

        done = _sweep("--run-id", run_id)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "removed 2 thing(s)" in done.stdout
        wait_for(lambda: not _alive(sleeper), timeout=10, what="the run's process to be gone")
        assert not temp.exists()
        assert not runstate.run_dir(run_id).exists()
        again = _sweep("--dry-run", "--run-id", run_id)
        assert again.stdout.splitlines()[-1] == f"nothing left of {run_id}"
    finally:
        sleeper.kill()
        sleeper.wait(10)


def test_a_run_in_progress_is_never_swept(run_ids: list[str], tmp_path: Path) -> None:
    live, dead = run_ids
    holder = _holder(live)
    live_sleeper = _marked_sleeper(live)
    dead_sleeper, _temp = _dead_run(dead, tmp_path)
    try:
        done = _sweep("--run-id", live, "--run-id", dead)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (
            f"run {live}: in progress (its lock is held; pid {holder.pid}): not swept"
            in done.stdout
        )
        assert _alive(live_sleeper), "the live run's process was killed"
        assert runstate.run_dir(live).exists()
        wait_for(
            lambda: not _alive(dead_sleeper), timeout=10, what="the dead run's process to be gone"
        )
    finally:
        for proc in (live_sleeper, dead_sleeper):
            proc.kill()
            proc.wait(10)
        holder.kill()
        holder.wait(10)


def test_older_than_keeps_younger_runs(run_ids: list[str], tmp_path: Path) -> None:
    run_id = run_ids[0]
    sleeper, temp = _dead_run(run_id, tmp_path)
    try:
        kept = _sweep("--run-id", run_id, "--older-than", "1h")
        assert kept.returncode == 0
        assert f"run {run_id}: started " in kept.stdout
        assert "not older than 1.0h: kept" in kept.stdout
        assert _alive(sleeper)
        assert temp.exists()
        gone = _sweep("--run-id", run_id, "--older-than", "0s")
        assert gone.returncode == 0, gone.stdout
        assert not temp.exists()
    finally:
        sleeper.kill()
        sleeper.wait(10)


def test_bad_input_is_one_line_and_touches_nothing() -> None:
    done = _sweep("--run-id", "../etc")
    assert done.returncode == 2
    assert done.stderr.strip() == "sweep: --run-id: not a run id: '../etc'"
    done = _sweep("--older-than", "soon")
    assert done.returncode == 2
    assert "expected a duration such as 90s, 30m, 2h, 1d" in done.stderr
    assert sweep.parse_age("90") == 90
    assert sweep.parse_age("2h") == 7200
    bad = subprocess.run(
        [sys.executable, "-m", "provisioners", "nope"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert "unknown command 'nope'" in bad.stderr
    assert "sweep" in bad.stderr


def test_a_second_run_with_a_live_id_is_refused(
    run_ids: list[str], pytester: pytest.Pytester
) -> None:
    holder = _holder(run_ids[0])
    try:
        result = pytester.runpytest_subprocess(
            "-p", "fixtures.plugin", "--ray-modes", "local", f"--ray-run-id={run_ids[0]}"
        )
    finally:
        holder.kill()
        holder.wait(10)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*--ray-run-id {run_ids[0]}: a run with this id is in progress (pid {holder.pid}); pick another*"
        ]
    )


def test_a_dead_aws_runs_ec2_objects_are_found_by_its_notes_and_removed(
    run_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run's cloud side, against moto's server on loopback (AWS_ENDPOINT_URL): the
    instance, security group and key pair aws's teardown would remove, found by the notes the
    mode wrote before `ray up` and removed by the sweep."""
    import boto3
    from moto.server import ThreadedMotoServer

    from provisioners.contract.base import RUN_ID_LABEL
    from provisioners.sources.aws import CLUSTER_TAG, security_group_name
    from provisioners.util.relay import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        run_id, region = run_ids[0], "us-west-2"
        cluster, key_name = f"rc-{run_id}-aws", f"rc-{run_id}-aws-key"
        runstate.note(run_id, "aws", "aws", region=region, cluster=cluster, key_name=key_name)
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=env["AWS_ENDPOINT_URL"])
        ec2.create_key_pair(KeyName=key_name)
        group = ec2.create_security_group(GroupName=security_group_name(cluster), Description="ray")
        [instance] = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": RUN_ID_LABEL, "Value": run_id},
                        {"Key": CLUSTER_TAG, "Value": cluster},
                    ],
                }
            ],
        )["Instances"]
        ec2.create_key_pair(KeyName="someone-elses")  # not the run's: never touched

        dry = _sweep("--dry-run", "--run-id", run_id)
        assert dry.returncode == 0, dry.stderr
        assert (
            f"  aws objects instance {instance['InstanceId']}, security-group {group['GroupId']}, "
            f"key-pair {key_name} ({region}) [aws]"
        ) in dry.stdout.splitlines(), dry.stdout

        done = _sweep("--run-id", run_id)
        assert done.returncode == 0, done.stdout + done.stderr
        state = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])
        assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
        names = [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]]
        assert security_group_name(cluster) not in names
        assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["someone-elses"]
        assert not runstate.run_dir(run_id).exists()
    finally:
        server.stop()


def test_a_dead_aws_run_without_credentials_is_reported_not_guessed(
    run_ids: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    run_id = run_ids[0]
    runstate.note(run_id, "aws", "aws", region="us-west-2", cluster="c", key_name="k")
    dry = _sweep("--dry-run", "--run-id", run_id)
    assert (
        "  aws ? (cannot tell: no AWS credentials to list EC2 with (the metadata service is never asked)) [aws]"
        in dry.stdout.splitlines()
    ), dry.stdout
    done = _sweep("--run-id", run_id)
    assert done.returncode == 1  # named, kept, never silently dropped
    assert "could not remove aws ?" in done.stdout
    assert runstate.run_dir(run_id).exists()  # its notes stay for a sweep with credentials
    shutil.rmtree(runstate.run_dir(run_id))


def test_a_dead_ibm_runs_vpc_objects_are_found_by_its_notes_and_removed(
    run_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ibm run's cloud side, against the VPC stand-in on loopback: the instances named for
    its cluster, the floating IP bound to them, their boot volume and the imported key."""
    from provisioners.rehearsals.ibm_standin import serve

    api_key = "standin-key-for-the-sweep"
    monkeypatch.setenv("IBMCLOUD_API_KEY", api_key)
    with serve(api_key) as standin:
        cloud, base = standin.cloud, standin.base
        run_id = run_ids[0]
        cluster, key_name = f"rc-{run_id}-ibm", f"rc-{run_id}-ibm-key"
        runstate.note(
            run_id,
            "ibm",
            "ibm",
            endpoint=base,
            iam_endpoint=base,
            cluster=cluster,
            key_name=key_name,
        )
        head = cloud.create_instance({"name": f"ray-{cluster}-head-1a2b3c4d"}, base)
        fip = cloud.create_floating_ip({"name": "ray-recyclable-head"}, base)
        fip["target"] = {"id": head["primary_network_interface"]["id"]}
        key = cloud.create_key({"name": key_name}, base)
        other = cloud.create_instance({"name": "someone-elses-node"}, base)

        dry = _sweep("--dry-run", "--run-id", run_id)
        assert dry.returncode == 0, dry.stderr
        [line] = [ln for ln in dry.stdout.splitlines() if ln.startswith("  ibm objects ")]
        for thing in (
            f"instance {head['id']}",
            f"floating-ip {fip['id']}",
            f"key {key['id']}",
            "volume ",
        ):
            assert thing in line, dry.stdout

        done = _sweep("--run-id", run_id)
        assert done.returncode == 0, done.stdout + done.stderr
        assert list(cloud.instances) == [other["id"]]
        assert (cloud.floating_ips, cloud.keys) == ({}, {})
        assert [v["name"] for v in cloud.volumes.values()] == ["someone-elses-node-boot"]
    assert not runstate.run_dir(run_id).exists()
