"""Kept clusters are removed as printed, and no report, log or kept file holds a secret.

One real run keeps a cluster of each of local, docker, vm and kind-operator
(``--ray-keep-cluster``) with fake credentials planted in its environment and files; then each
mode's printed removal command (``access["remove"]``) runs exactly as printed in a clean shell
(no virtualenv, ``PATH=/usr/bin:/bin``) and must leave nothing of that mode. A second run fails
(a setup command of ``vm`` exits 1) with the same planted credentials. Neither run's report
dir, nor anything it printed, holds a planted secret or a private key; the kept keys and
kubeconfig lived outside the report dir.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from leftovers import REPO, clean_shell, labeled, plant, processes, rules, secrets_found, sweep

from provisioners.deployers.launcher.cli import config_caches
from provisioners.util import runstate
from provisioners.util.containers import engine_problem
from provisioners.util.iptables import iptables
from provisioners.util.runner import run_full

MODES = ("local", "docker", "vm", "kind-operator")


def _cannot_run() -> str | None:
    if problem := engine_problem(None):
        return problem
    if os.geteuid() != 0:
        return "needs root (--ray-no-egress)"
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        return "`go` is not on PATH: the kind toolchain cannot be built"
    return None


def _pytest(
    tmp_path: Path, run_id: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    report = tmp_path / f"report-{run_id}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--ray-run-id={run_id}",
            f"--ray-report-dir={report}",
            "--ray-image-build",
            *args,
        ],
        cwd=REPO,
        env={**os.environ, **plant(tmp_path)},
        capture_output=True,
        text=True,
        timeout=3000,
        check=False,
    )
    return done, report


@pytest.mark.timeout(3600)
def test_kept_clusters_are_removed_as_printed_and_nothing_leaks_a_secret(tmp_path: Path) -> None:
    if reason := _cannot_run():
        pytest.skip(reason)
    run_id = f"t-keep-{secrets.token_hex(3)}"
    done, report = _pytest(
        tmp_path,
        run_id,
        f"--ray-modes={','.join(MODES)}",
        "--ray-keep-cluster",
        "--ray-no-egress",
        "suites/test_teardown_leak.py",
        "suites/test_exposure.py",
        # The dashboard forward: vm's goes through `ray dashboard`, which caches the config.
        "suites/test_port_forward.py",
        "-k",
        "inventory_sees or exposure or reachable_on_loopback",
    )
    try:
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
        records = {m: json.loads((report / "modes" / f"{m}.json").read_text()) for m in MODES}
        assert {m: r["status"] for m, r in records.items()} == dict.fromkeys(MODES, "kept")
        # The kept credentials (vm's key, the kind cluster's kubeconfig) are outside the report.
        for mode in ("vm", "kind-operator"):
            private = runstate.private_path(run_id, mode)
            kept = [p for p in private.rglob("*") if p.is_file()]
            assert kept, f"{mode}: no kept credential in {private}"
            assert not private.is_relative_to(report)
        assert records["kind-operator"]["handle"]["access"]["kubeconfig"].startswith(
            str(runstate.private_path(run_id, "kind-operator"))
        )
        assert secrets_found([report], [done.stdout, done.stderr]) == []
        # Every `ray` command of vm cached the whole config: in the run's private dir, never /tmp.
        cluster, private_tmp = f"rc-{run_id}-vm", runstate.private_path(run_id, "vm") / "tmp"
        assert config_caches(Path(tempfile.gettempdir()), cluster) == []
        assert config_caches(private_tmp, cluster), f"no ray-config cache in {private_tmp}"
        assert private_tmp.stat().st_mode & 0o077 == 0

        # docker's and vm's egress and metadata rules, read from the run's notes while they exist.
        noted = rules(run_id)
        assert len(noted) == 4, noted
        for mode in MODES:
            remove = records[mode]["handle"]["access"]["remove"]
            assert remove in done.stdout, f"{mode}: the removal command was not printed as recorded"
            removed = clean_shell(remove)
            assert removed.returncode == 0, (
                f"{mode}: `{remove}` failed:\n{removed.stdout}{removed.stderr}"
            )
            assert labeled(run_id, mode) == set(), f"{mode}: `{remove}` left Docker objects"
            assert processes(run_id, mode) == set(), f"{mode}: `{remove}` left processes"
            assert not runstate.private_path(run_id, mode).exists()
        assert not Path(f"/tmp/rc-{run_id}").exists()  # local's temp dir
        binary = iptables()
        assert binary is not None
        still = [
            r
            for r in noted
            if run_full([binary, "-w", "5", "-C", *r], 30, check=False).returncode == 0
        ]
        assert still == [], f"the removal commands as printed left firewall rules: {still}"
        left = sweep("--dry-run", "--run-id", run_id)
        assert left.stdout.strip() == f"nothing left of {run_id}", left.stdout
    finally:
        sweep("--run-id", run_id)  # whatever a failure above left

    # A failing mode, with the same planted credentials: its diagnostics hold no secret either.
    failing = f"t-fail-{secrets.token_hex(3)}"
    overrides = tmp_path / "fail.yaml"
    overrides.write_text(yaml.safe_dump({"setup_commands": ["echo rc-failing-setup; false"]}))
    try:
        done, report = _pytest(
            tmp_path,
            failing,
            "--ray-modes=vm",
            "--ray-workers=0",
            f"--ray-launcher-config={overrides}",
            "suites/test_teardown_leak.py",
        )
        assert done.returncode == 1, done.stdout[-3000:]
        assert "rc-failing-setup" in (report / "diagnostics" / "vm" / "launcher.log").read_text()
        assert (report / "manifest.json").exists()  # sealed: nothing to refuse
        assert secrets_found([report], [done.stdout, done.stderr]) == []
        assert (
            sweep("--dry-run", "--run-id", failing).stdout.strip() == f"nothing left of {failing}"
        )
    finally:
        sweep("--run-id", failing)
