"""The version preflight against a real cluster one patch release apart, and what Ray does.

A local cluster runs Ray 2.58.0 (the local mode's provisioner, run by a venv with that Ray);
the harness, in a venv with Ray 2.58.1, runs the preflight against it in the external mode.
Both venvs lay this project's locked env under them (``venv_over_project``) and add only Ray.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_fakes import REPO, uv, venv_over_project

from provisioners.util.waits import wait_for

CLUSTER_RAY = "2.58.0"
CLIENT_RAY = "2.58.1"

#: Run by the cluster's venv: a local cluster until stdin closes, then its teardown.
CLUSTER = """
import json, sys
from pathlib import Path
from provisioners.contract.base import ClusterSpec
from provisioners.modes.local import LocalProvisioner

provisioner = LocalProvisioner()
spec = ClusterSpec(mode="local", run_id=sys.argv[1], workdir=Path(sys.argv[2]), workers=0)
try:
    handle = provisioner.provision(spec)
    Path(sys.argv[3]).write_text(json.dumps({"ray": handle.ray_version, **handle.access}))
    sys.stdin.read()
finally:
    provisioner.teardown()
    left = [f"{i.kind} {i.name}" for i in provisioner.inventory()]
    print("LEFT " + json.dumps(left), flush=True)
"""


def ray_venv(path: Path, version: str) -> Path:
    python = venv_over_project(path)
    uv("pip", "install", "--no-deps", "--python", python, f"ray=={version}")
    return python


@pytest.fixture(scope="module")
def old_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("skew")
    python = ray_venv(root / "cluster-venv", CLUSTER_RAY)
    access = root / "access.json"
    run_id = f"skew{int(time.time()) % 100000}"
    proc = subprocess.Popen(
        [python, "-c", CLUSTER, run_id, str(root), str(access)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            access.exists,
            timeout=180,
            what=f"a local cluster on Ray {CLUSTER_RAY}",
            give_up=lambda: None if proc.poll() is None else f"it exited {proc.returncode}",
        )
        yield json.loads(access.read_text())
    finally:
        out, _ = proc.communicate(timeout=120)  # closes stdin: the cluster's teardown
        left = [line for line in out.splitlines() if line.startswith("LEFT ")]
        assert left == ["LEFT []"], out[-3000:]


def test_preflight_names_a_patch_release_apart_and_what_ray_client_does(
    old_cluster: dict[str, str], tmp_path: Path
) -> None:
    assert old_cluster["ray"] == CLUSTER_RAY
    python = ray_venv(tmp_path / "client-venv", CLIENT_RAY)
    run = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "suites/test_preflight.py",
            "-k",
            "ray_version",
            "--ray-modes=external",
            f"--ray-address={old_cluster['ray client']}",
            f"--ray-dashboard-url={old_cluster['dashboard']}",
            "--ray-expect-nodes=1",
            f"--ray-report-dir={tmp_path / 'report'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stdout[-4000:]
    failure = next((line for line in run.stdout.splitlines() if "AssertionError: Ray " in line), "")
    assert f"Ray {CLIENT_RAY} here; node " in failure, run.stdout[-4000:]
    assert (
        f"runs Ray {CLUSTER_RAY}, Python 3.11 (Ray {CLUSTER_RAY}: the same minor release, "
        "another patch level). What Ray Client does with it, tried: a session is refused "
        "(RuntimeError: Version mismatch:" in failure
    ), failure
    assert "with RAY_IGNORE_VERSION_MISMATCH=1 connects and runs a task" in failure, failure
