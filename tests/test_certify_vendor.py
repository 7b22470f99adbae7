"""The vendor path end to end: a package of their own, installed with uv, certified by entry point.

``tests/vendor_example/`` is a vendor's package: one new node source (``ExampleHosts``), the
mode it makes with the project's ``ray start`` deployer, and one entry point line. It is built
and installed into a fresh virtual environment; from that environment's interpreter alone the
mode shows in the modes list, in ``pytest --help`` (its option), in the nightly matrix the
workflow derives, and passes the shared suites in a certification run started with nothing but
``--ray-modes example --ray-certify target.yaml``: no ``--ray-provisioner``, no file of this
project edited. It provisions real Ray nodes on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness_fakes import uv, venv_over_project

from reports.certify import PROFILE

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = Path(__file__).with_name("vendor_example")
TARGET = """\
vendor: Example Corp
name: Example Ray Service
version: "0.1.0"
website_url: https://example.invalid/ray
documentation_url: https://example.invalid/ray/docs
type: distribution
description: Ray on this machine, started by the example vendor's own mode.
contact_email_address: ray-team@example.invalid
mode: example
ray_version: "{ray}"
kuberay_version: none
platform_version: "this machine"
"""


def vendor_env(tmp_path: Path) -> Path:
    """A new venv holding the example package; this project's locked env underneath it.

    The point is the vendor's package and entry point, installed into the new environment for
    real (a wheel built by uv, not an editable path). ``--offline``: the build backend
    (setuptools) comes from uv's cache, filled when this project was installed the same way.
    """
    python = venv_over_project(tmp_path / "venv")
    source = shutil.copytree(EXAMPLE, tmp_path / "vendor_example")  # the build writes beside it
    uv(
        "pip",
        "install",
        "--offline",
        "--no-deps",
        "--python",
        python,
        source,
    )
    return python


@pytest.mark.timeout(900)
def test_example_vendor_certifies_through_its_entry_point(tmp_path: Path) -> None:
    from importlib import metadata

    python = vendor_env(tmp_path)
    target = tmp_path / "target.yaml"
    target.write_text(TARGET.format(ray=metadata.version("ray")))
    report_dir = tmp_path / "out" / "run"
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(python.parent.parent),
        # The vendor's interpreter first; the `ray` CLI comes with the environment underneath.
        "PATH": os.pathsep.join(
            [str(python.parent), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        ),
    }
    argv = [
        str(python),
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--ray-modes=example",
        # NAME=VALUE: pytest takes bare path arguments into its rootdir guess.
        f"--ray-certify={target}",
        "--ray-run-id=vendor1",
        f"--ray-report-dir={report_dir}",
    ]
    # Found through the entry point alone: in the modes list and, with its option, in --help.
    listed = out_of(python, env, "-m", "provisioners", "modes", "--json")
    modes = {m["name"]: m for m in json.loads(listed)}
    assert modes["example"]["source"] == "rc_example:ExampleProvisioner", listed
    assert modes["example"]["options"] == ["--ray-example-zone"]
    assert modes["example"]["error"] == ""
    assert "--ray-example-zone" in out_of(python, env, "-m", "pytest", "--help")
    # In the nightly matrix the workflow derives from the registry: a mode that declares no
    # NIGHTLY runs on a plain runner, by its entry point alone.
    derived = out_of(python, env, "-m", "provisioners", "modes", "--matrix")
    assert {"mode": "example", "name": "example", "args": ""} in json.loads(derived)["plain"]

    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "the run certifies" in done.stdout

    archive = report_dir.parent / "ray-conformance-example-vendor1.tar.gz"
    verify = subprocess.run(
        [python, "-m", "reports", "verify", archive, "--certify"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.splitlines()[-1].startswith(f"{archive}: OK (certified: ")

    cases = len(PROFILE) + 1  # the port-forward check runs once per port
    assert f"mode example: torn-down; {cases} total, {cases} passed, 0 failed, 0 skipped" in (
        done.stdout + main_summary(python, archive, env)
    )
    record = json.loads((report_dir / "modes" / "example.json").read_text())
    access = record["handle"]["access"]
    assert access["zone"] == "zone-a"  # the option the vendor's node source declares
    assert access["directory"] == "/tmp/rcx-vendor1"  # the source's own, through the deployer
    assert {i["kind"] for i in record["inventory_before"]} >= {"process", "directory"}
    assert record["inventory_before"]
    assert record["inventory_after"] == []
    tools = json.loads((report_dir / "certification" / "tools.json").read_text())
    assert tools["ray"].startswith("ray, version")  # the mode ran `ray start`


def main_summary(python: Path, archive: Path, env: dict[str, str]) -> str:
    return out_of(python, env, "-m", "reports", "summary", str(archive))


def out_of(python: Path, env: dict[str, str], *args: str) -> str:
    """The output of the vendor's interpreter run with ``args`` from the checkout (must exit 0)."""
    return subprocess.run(
        [python, *args], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout
