"""The nightly matrix covers every registered mode: a tox env each, and a workflow job running it."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomllib
import yaml

from reports.certify import policy, tox_suffix

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
#: Jobs for real platforms, which run only when their secrets exist.
SECRET_JOBS = {"aws", "ibm", "kube-operator", "openshift", "external"}


def registered_modes() -> list[str]:
    """The built-in modes: the project's own lines in the entry-point group."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["entry-points"]["ray_conformance.provisioners"])


def tox_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    return ini


def expand(name: str) -> list[str]:
    """A generative tox name (``docker{,-ray2.59}``) as the env names it stands for."""
    found = re.search(r"\{([^{}]*)\}", name)
    if found is None:
        return [name]
    head, tail = name[: found.start()], name[found.end() :]
    return [n for alt in found.group(1).split(",") for n in expand(head + alt + tail)]


def tox_envs() -> dict[str, list[str]]:
    """Each tox env -> the modes its pytest command selects (``--ray-modes a,b``)."""
    ini = tox_ini()
    out = {}
    for section in ini.sections():
        if section.startswith("testenv:"):
            found = re.search(r"--ray-modes[ =](\S+)", ini[section].get("commands", ""))
            for env in expand(section.removeprefix("testenv:")):
                out[env] = found.group(1).split(",") if found else []
    return out


def ray_factors() -> dict[str, str]:
    """Each ``rayX.Y`` factor of tox.ini -> the Ray release its env installs over the lock."""
    pre = tox_ini()["testenv"]["commands_pre"]
    return dict(re.findall(r"^\s*(ray[\d.]+): pip install \"ray\[default\]==([\d.]+)\"", pre, re.M))


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def envs_run_by(job: dict[str, Any]) -> list[str]:
    """The tox envs a job runs: literal ``tox -e X``, or each entry of its mode matrix."""
    envs = []
    for step in job.get("steps", []):
        for env in re.findall(r"tox -e (\S+)", str(step.get("run", ""))):
            if env == "${{":  # tox -e ${{ matrix.mode }}
                envs += job["strategy"]["matrix"]["mode"]
            else:
                envs.append(env)
    return envs


def test_every_registered_mode_has_a_tox_env_of_its_name() -> None:
    envs = tox_envs()
    for mode in registered_modes():
        assert mode in envs, f"tox.ini has no [testenv:{mode}]"
        assert envs[mode] == [mode], f"[testenv:{mode}] selects {envs[mode]}, not {mode}"


def test_every_registered_mode_has_a_nightly_job() -> None:
    envs = tox_envs()
    jobs = workflow()["jobs"]
    covered = {m for job in jobs.values() for env in envs_run_by(job) for m in envs[env]}
    missing = [m for m in registered_modes() if m not in covered]
    assert not missing, f"no nightly job runs {missing}"


def test_nightly_runs_on_a_schedule_and_gates_only_real_platforms_on_secrets() -> None:
    wf = workflow()
    triggers: dict[str, Any] = wf["on"] if "on" in wf else wf[True]  # type: ignore[index]  # YAML 1.1 reads a bare `on` as True
    assert triggers["schedule"][0]["cron"]
    jobs = wf["jobs"]
    gated = {name for name, job in jobs.items() if "needs.secrets" in str(job.get("if", ""))}
    assert gated == SECRET_JOBS
    # The AWS rehearsal needs no account: it runs every night.
    rehearsal = [n for n, job in jobs.items() if "aws-rehearsal" in envs_run_by(job)]
    assert rehearsal
    assert all("if" not in jobs[n] for n in rehearsal)


def test_matrix_job_merges_every_bundle_and_fails_on_regressions() -> None:
    jobs = workflow()["jobs"]
    mode_jobs = {name for name, job in jobs.items() if envs_run_by(job)}
    matrix = jobs["matrix"]
    assert set(matrix["needs"]) == mode_jobs | {"releases"}
    assert matrix["if"] == "always()"
    runs = "\n".join(str(step.get("run", "")) for step in matrix["steps"])
    assert "python -m reports merge" in runs
    assert "python -m reports compare previous matrix" in runs
    uploads = [s for job in jobs.values() for s in job.get("steps", []) if "upload" in str(s)]
    assert all(s["with"]["path"] for s in uploads)


#: Modes that SKIP without root (an iptables rule on the run's bridge): their jobs use sudo.
ROOT_ENVS = {"aws-rehearsal", "ibm-rehearsal"}


def test_rehearsal_jobs_run_their_tox_env_as_root() -> None:
    """Without root both rehearsals SKIP every check, and a night of skips is not a pass."""
    for name, job in workflow()["jobs"].items():
        for step in job.get("steps", []):
            command = str(step.get("run", ""))
            envs = set(envs_run_by({**job, "steps": [step]}))
            if envs & ROOT_ENVS:
                assert envs <= ROOT_ENVS, f"job {name} mixes root and non-root envs: {envs}"
                assert command.startswith("sudo -E "), f"job {name} runs {envs} without root"


def test_kuberay_job_has_the_operator_version_axis_and_the_upgrade() -> None:
    from provisioners.kube.mode import KUBERAY_VERSIONS

    job = workflow()["jobs"]["kuberay"]
    matrix = job["strategy"]["matrix"]
    assert matrix["operator"] == list(KUBERAY_VERSIONS)
    upgrade = {
        "operator": KUBERAY_VERSIONS[-1],
        "upgrade": f"--ray-operator-upgrade-from={KUBERAY_VERSIONS[0]}",
    }
    assert upgrade in matrix["include"]
    runs = " ".join(str(step.get("run", "")) for step in job["steps"])
    assert "tox -e kind-operator -- --ray-operator-version=${{ matrix.operator }}" in runs
    assert "${{ matrix.upgrade }}" in runs
    uploads = [s for s in job["steps"] if "upload" in str(s)]
    assert all(not s["with"]["name"].startswith("bundle-") for s in uploads), (
        "the kuberay bundles are kind-operator's too: merged with the kind job's, one would hide the other"
    )


def test_each_supported_ray_release_but_the_locks_is_a_tox_factor_of_every_mode_env() -> None:
    releases = policy().ray_releases
    lock = re.search(r"^ray==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
    assert lock is not None
    assert lock.group(1) == releases[0], "requirements.lock must pin the newest supported Ray"
    assert ray_factors() == {tox_suffix(v).removeprefix("-"): v for v in releases[1:]}
    envs = tox_envs()
    for mode in registered_modes():
        for release in releases:
            env = mode + tox_suffix(release)
            assert envs.get(env) == [mode], f"tox.ini has no [testenv:{env}] running {mode}"


def test_every_mode_job_on_a_hosted_runner_runs_on_every_supported_ray() -> None:
    jobs = workflow()["jobs"]
    done = subprocess.run(
        [sys.executable, "-m", "reports", "releases", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    # What the `releases` job hands the matrices, computed here the way it computes it.
    assert json.loads(done.stdout) == [
        {"ray": v, "tox": tox_suffix(v)} for v in policy().ray_releases
    ]
    releases_job = "\n".join(str(step.get("run", "")) for step in jobs["releases"]["steps"])
    assert "python -m reports releases --json" in releases_job
    axis = "${{ fromJSON(needs.releases.outputs.ray) }}"
    # kuberay's axis is the operator's, on the lock's Ray; the clouds run on the platform's Ray.
    matrix_jobs = [
        n for n, job in jobs.items() if "ray" in job.get("strategy", {}).get("matrix", {})
    ]
    assert sorted(matrix_jobs) == ["kind", "plain", "rehearsal"]
    for name in matrix_jobs:
        job = jobs[name]
        assert job["needs"] == "releases"
        assert job["strategy"]["matrix"]["ray"] == axis
        runs = [str(step.get("run", "")) for step in job["steps"]]
        assert any("tox -e ${{ matrix.mode }}${{ matrix.ray.tox }}" in r for r in runs), name
        names = [s["with"]["name"] for s in job["steps"] if "upload" in str(s.get("uses"))]
        assert names == ["bundle-${{ matrix.mode }}-ray${{ matrix.ray.ray }}"], name
