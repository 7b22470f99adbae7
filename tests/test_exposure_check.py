"""The exposure check, for real: ``vm`` on a user's host (a container of the node image with sshd,
started here, as a VM would be) passes with the template's dashboard on the head's loopback, and
fails naming the port and address when the head's dashboard is bound to 0.0.0.0 instead.

The same runs show what ``ray up`` copies to a user's head (its config and the run's private
key) inventoried while the cluster runs and removed by teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from leftovers import REPO, labeled, sweep

from provisioners.contract.base import RUN_ID_LABEL
from provisioners.deployers.launcher import generate_key
from provisioners.deployers.launcher.ssh import SshTarget, wait_for_ssh
from provisioners.sources.vm import BOOTSTRAP_FILES, SSHD_COMMAND
from provisioners.util import nodeimage, services
from provisioners.util.containers import docker_client, engine_problem
from provisioners.util.services import Service


@pytest.fixture
def user_host(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A host the run does not own: (its address, an SSH key for root, its container id)."""
    if problem := engine_problem(None):
        pytest.skip(problem)
    image = nodeimage.ensure_node_image(print, 1800, force_build=True)
    key = generate_key(tmp_path / "user-key")
    owner = f"t-host-{secrets.token_hex(3)}"  # not a run's: the vm runs must leave it alone
    with services.network({RUN_ID_LABEL: owner}) as net:
        host = Service(
            image,
            ["bash", "-c", SSHD_COMMAND],
            name=f"rc-{owner}",
            labels={RUN_ID_LABEL: owner},
            network=net.name,
            shm_size="400m",
            env={"RC_AUTHORIZED_KEY": Path(f"{key}.pub").read_text().strip()},
        )
        try:
            host.start_within(60)
            ip = host.address(net.name)
            wait_for_ssh([SshTarget(ip, "root", key)], 60)
            yield ip, key, host.get_container_id()
        finally:
            host.stop()


def _vm_run(
    tmp_path: Path, host: str, key: Path, run_id: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    report = tmp_path / f"report-{run_id}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "--ray-modes=vm",
            f"--ray-vm-hosts={host}",
            "--ray-ssh-user=root",
            f"--ray-ssh-key={key}",
            f"--ray-run-id={run_id}",
            f"--ray-report-dir={report}",
            *extra,
            "suites/test_exposure.py",
            "suites/test_teardown_leak.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    return done, report


def _bootstrap_left(box: str) -> str:
    client = docker_client(timeout=60)
    try:
        files = " ".join(f"/root/{f}" for f in BOOTSTRAP_FILES)
        out = client.containers.get(box).exec_run(["sh", "-c", f"ls {files} 2>/dev/null; true"])
        return str(out.output.decode()).strip()
    finally:
        client.close()


@pytest.mark.timeout(3000)
def test_exposure_passes_on_loopback_and_names_a_dashboard_bound_to_every_interface(
    tmp_path: Path, user_host: tuple[str, Path, str]
) -> None:
    host, key, box = user_host
    run_id = f"t-expo-{secrets.token_hex(3)}"
    try:
        done, report = _vm_run(tmp_path, host, key, run_id)
        assert done.returncode == 0, done.stdout[-5000:]
        assert "test_exposure_nodes_answer_only_inside_their_network[vm] PASSED" in done.stdout
        record = json.loads((report / "modes" / "vm.json").read_text())
        before = " ".join(str(i.get("name")) for i in record["inventory_before"])
        for name in BOOTSTRAP_FILES:  # ray up's copies on the user's head, seen and then removed
            assert name in before, record["inventory_before"]
        assert _bootstrap_left(box) == ""
        assert record["inventory_after"] == []
    finally:
        sweep("--run-id", run_id)

    # The head's dashboard on every interface, as the book's YAML (and ours before) had it.
    exposed = f"t-expo-{secrets.token_hex(3)}"
    over = tmp_path / "exposed.yaml"
    over.write_text(
        yaml.safe_dump(
            {
                "head_start_ray_commands": [
                    f"RC_RUN_ID={exposed} ray start --head --port=6379 --dashboard-host=0.0.0.0 "
                    "--autoscaling-config=~/ray_bootstrap_config.yaml "
                    "--object-store-memory=150000000 --disable-usage-stats"
                ]
            }
        )
    )
    try:
        done, _report = _vm_run(tmp_path, host, key, exposed, f"--ray-launcher-config={over}")
        assert done.returncode == 1, done.stdout[-5000:]
        assert (
            f"vm: cluster ports answer from outside the nodes' network: dashboard port 8265 on "
            f"{host} ({host}'s private address)"
        ) in done.stdout, done.stdout[-5000:]
        assert "test_exposure_nodes_answer_only_inside_their_network[vm] FAILED" in done.stdout
        # The check of this machine's own addresses still passes: only the node is exposed.
        assert (
            "test_exposure_nothing_of_the_cluster_answers_on_this_machines_addresses[vm] PASSED"
            in done.stdout
        ), done.stdout[-3000:]
    finally:
        sweep("--run-id", exposed)
    assert labeled(exposed) == set()
    assert os.path.exists(key)  # the user's key is the user's: never removed
