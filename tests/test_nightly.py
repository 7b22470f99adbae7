"""The nightly matrix is derived from the registry: every registered mode's runs
(``python -m provisioners modes --matrix``, from each mode's ``NIGHTLY``) reach a workflow job,
each through the one generic tox env."""

from __future__ import annotations

import configparser
import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from harness_fakes import make_vendor_dist, write_fakes

from provisioners.contract.base import RUNNERS, NightlyRun, nightly_runs
from reports.certify import policy, tox_suffix

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
#: The tox env every run goes through; its name is what the workflow writes.
MODE_ENV = "mode"
#: The runners whose runs share one matrix job each (a "secrets" run is a job of its own).
MATRIX_RUNNERS = [r for r in RUNNERS if r != "secrets"]


def registered_modes() -> list[str]:
    """The built-in modes: the project's own lines in the entry-point group."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["entry-points"]["ray_conformance.provisioners"])


def modes_command(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioners", "modes", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@functools.cache
def nightly_matrix() -> dict[str, list[dict[str, str]]]:
    """What the `modes` job hands the matrices, computed here the way it computes it."""
    done = modes_command("--matrix")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, "a GITHUB_OUTPUT value is one line"
    found: dict[str, list[dict[str, str]]] = json.loads(done.stdout)
    return found


def tox_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    return ini


def expand(name: str) -> list[str]:
    """A generative tox name (``mode{,-ray2.59}``) as the env names it stands for."""
    found = re.search(r"\{([^{}]*)\}", name)
    if found is None:
        return [name]
    head, tail = name[: found.start()], name[found.end() :]
    return [n for alt in found.group(1).split(",") for n in expand(head + alt + tail)]


def tox_envs() -> dict[str, str]:
    """Each tox env -> its commands."""
    ini = tox_ini()
    return {
        env: ini[section].get("commands", "").strip()
        for section in ini.sections()
        if section.startswith("testenv:")
        for env in expand(section.removeprefix("testenv:"))
    }


def ray_factors() -> dict[str, str]:
    """Each ``rayX.Y`` factor of tox.ini -> the Ray release its env installs over the lock."""
    pre = tox_ini()["testenv"]["commands_pre"]
    return dict(re.findall(r"^\s*(ray[\d.]+): pip install \"ray\[default\]==([\d.]+)\"", pre, re.M))


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def tox_runs(job: dict[str, Any]) -> list[str]:
    """The job's `run` lines that start the suites through tox."""
    return [str(s["run"]) for s in job.get("steps", []) if "tox -e" in str(s.get("run", ""))]


def runner_of(job: dict[str, Any]) -> str | None:
    """The runner whose runs a job's matrix takes (``fromJSON(needs.modes.outputs.X)``)."""
    axis = str(job.get("strategy", {}).get("matrix", {}).get("run", ""))
    found = re.fullmatch(r"\$\{\{ fromJSON\(needs\.modes\.outputs\.(\w+)\) \}\}", axis)
    return found.group(1) if found else None


def gated(job: dict[str, Any]) -> bool:
    return "needs.secrets" in str(job.get("if", ""))


# --- The derivation: NIGHTLY -> the matrix --------------------------------------------------


def test_a_mode_that_declares_nothing_runs_once_on_a_plain_runner() -> None:
    class Bare:
        pass

    assert nightly_runs(Bare) == (NightlyRun("plain", "", ()),)
    assert nightly_runs(lambda: Bare()) == (NightlyRun(),)  # a factory function, too


@pytest.mark.parametrize(
    "nightly",
    [NightlyRun(), [NightlyRun()], ("plain",), (), (NightlyRun(), "kind")],
    ids=["one run, no tuple", "a list", "a runner name", "nothing", "a run and a name"],
)
def test_a_malformed_nightly_is_a_type_error_saying_the_form(nightly: Any) -> None:
    declaring = type("Declaring", (), {"NIGHTLY": nightly})
    with pytest.raises(TypeError, match=r"^NIGHTLY must be a non-empty tuple of .*NightlyRun"):
        nightly_runs(declaring)


def test_an_unknown_runner_or_bare_string_args_are_errors_naming_the_allowed() -> None:
    with pytest.raises(ValueError, match="'gpu' is not one of plain, root, kind, secrets"):
        NightlyRun("gpu")
    with pytest.raises(TypeError, match="args must be a tuple of strings"):
        NightlyRun("plain", "x", "--ray-x")  # type: ignore[arg-type]


def test_every_registered_mode_has_a_run_in_the_matrix() -> None:
    matrix = nightly_matrix()
    assert list(matrix) == list(RUNNERS)
    covered = [run["mode"] for runs in matrix.values() for run in runs]
    missing = [m for m in registered_modes() if m not in covered]
    assert not missing, f"`modes --matrix` has no run of {missing}"
    names = [run["name"] for runs in matrix.values() for run in runs]
    assert len(names) == len(set(names)), f"run names name jobs and bundles: {names}"


def test_modes_json_names_each_modes_runs() -> None:
    done = modes_command("--json")
    assert done.returncode == 0, done.stderr
    nightly = {m["name"]: m["nightly"] for m in json.loads(done.stdout)}
    assert nightly["docker"] == ["docker"]
    assert nightly["aws"] == ["aws", "aws-rehearsal"]


VENDOR = """
from fakemod import FakeProvisioner
from provisioners.contract.base import NightlyRun


class PlainProvisioner(FakeProvisioner):
    pass


class SecretProvisioner(FakeProvisioner):
    NIGHTLY = (NightlyRun("secrets"), NightlyRun("root", "secret-rehearsal", ("--a", "--b=1")))


class MalformedProvisioner(FakeProvisioner):
    NIGHTLY = NightlyRun("kind")


class TakenProvisioner(FakeProvisioner):
    NIGHTLY = (NightlyRun("plain", "docker"),)
"""

#: A class body that raises when its module is imported: the mode cannot load.
UNKNOWN_RUNNER = """
from fakemod import FakeProvisioner
from provisioners.contract.base import NightlyRun


class GpuProvisioner(FakeProvisioner):
    NIGHTLY = (NightlyRun("gpu"),)
"""


@pytest.fixture
def vendor(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Registers the given entry points as an installed vendor package; runs ``--matrix``."""
    write_fakes(pytester)
    pytester.makepyfile(vendormod=VENDOR, gpumod=UNKNOWN_RUNNER)

    def matrix(*entry_points: str) -> subprocess.CompletedProcess[str]:
        make_vendor_dist(pytester, monkeypatch, "\n".join(entry_points))
        return modes_command("--matrix", cwd=pytester.path)

    return matrix


def test_a_vendor_mode_with_no_declaration_lands_in_the_plain_matrix(vendor: Any) -> None:
    done = vendor("acme = vendormod:PlainProvisioner", "acme-sec = vendormod:SecretProvisioner")
    assert done.returncode == 0, done.stderr
    matrix = json.loads(done.stdout)
    assert {"mode": "acme", "name": "acme", "args": ""} in matrix["plain"]
    assert {"mode": "acme-sec", "name": "acme-sec", "args": ""} in matrix["secrets"]
    assert {"mode": "acme-sec", "name": "secret-rehearsal", "args": "--a --b=1"} in matrix["root"]
    assert {"mode": "docker", "name": "docker", "args": ""} in matrix["plain"]


@pytest.mark.parametrize(
    ("entry_point", "says"),
    [
        (
            "broken = nomod:Nope",
            "mode 'broken' is left out of the nightly: cannot load nomod:Nope: "
            "ModuleNotFoundError: No module named 'nomod'",
        ),
        (
            "gpu = gpumod:GpuProvisioner",
            "mode 'gpu' is left out of the nightly: cannot load gpumod:GpuProvisioner: "
            "ValueError: NightlyRun runner 'gpu' is not one of plain, root, kind, secrets",
        ),
        (
            "malformed = vendormod:MalformedProvisioner",
            "mode 'malformed' is left out of the nightly: NIGHTLY must be a non-empty tuple of "
            "provisioners.contract.base.NightlyRun, not NightlyRun(runner='kind', name='', args=())",
        ),
        (
            "taken = vendormod:TakenProvisioner",
            "mode 'taken': its nightly run 'docker' is left out: mode 'docker' has a run of that name",
        ),
    ],
    ids=["cannot load", "unknown runner", "malformed NIGHTLY", "a run name taken"],
)
def test_a_mode_left_out_of_the_matrix_fails_the_command_naming_it(
    vendor: Any, entry_point: str, says: str
) -> None:
    """The matrix still lists every other run, and the `modes` job fails instead of a nightly
    that silently lacks a mode."""
    done = vendor(entry_point, "acme = vendormod:PlainProvisioner")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [says]
    matrix = json.loads(done.stdout)
    name = entry_point.split(" = ")[0]
    assert all(run["mode"] != name for runs in matrix.values() for run in runs), matrix
    assert {"mode": "acme", "name": "acme", "args": ""} in matrix["plain"]
    assert {"mode": "docker", "name": "docker", "args": ""} in matrix["plain"]


# --- The workflow: every run of the matrix reaches a job --------------------------------------


def test_the_modes_job_hands_each_matrix_runner_to_exactly_one_job() -> None:
    jobs = workflow()["jobs"]
    step = "\n".join(str(s.get("run", "")) for s in jobs["modes"]["steps"])
    assert "python -m provisioners modes --matrix" in step
    assert jobs["modes"]["outputs"] == {
        runner: f"${{{{ steps.modes.outputs.{runner} }}}}" for runner in MATRIX_RUNNERS
    }
    written = re.search(r"for runner in ([\w ]+); do", step)
    assert written, step
    assert written.group(1).split() == MATRIX_RUNNERS, step
    for runner in MATRIX_RUNNERS:
        takers = [name for name, job in jobs.items() if runner_of(job) == runner]
        assert len(takers) == 1, f"jobs taking the {runner!r} runs: {takers}"
    consumed = {runner_of(job) for job in jobs.values()} - {None}
    assert consumed == set(MATRIX_RUNNERS), consumed


def test_every_secrets_run_is_a_gated_job_of_its_name_running_its_mode() -> None:
    wf = workflow()
    triggers: dict[str, Any] = wf["on"] if "on" in wf else wf[True]  # type: ignore[index]  # YAML 1.1 reads a bare `on` as True
    assert triggers["schedule"][0]["cron"]
    jobs = wf["jobs"]
    secrets_runs = {run["name"]: run for run in nightly_matrix()["secrets"]}
    assert {name for name, job in jobs.items() if gated(job)} == set(secrets_runs)
    outputs = set(jobs["secrets"]["outputs"])
    for name, run in secrets_runs.items():
        job = jobs[name]
        checked = re.fullmatch(r"needs\.secrets\.outputs\.(\w+) == 'true'", job["if"])
        assert checked, f"job {name}: if {job['if']!r}"
        assert checked.group(1) in outputs, f"job {name}: if {job['if']!r}"
        runs = tox_runs(job)
        assert len(runs) == 1, f"job {name} runs {runs}"
        expected = f"tox -e {MODE_ENV} -- --ray-modes {run['mode']} {run['args']}".rstrip()
        assert runs[0].startswith(expected + " "), f"job {name} runs {runs[0]!r}"


def test_matrix_job_merges_every_bundle_and_fails_on_regressions() -> None:
    jobs = workflow()["jobs"]
    mode_jobs = {name for name, job in jobs.items() if tox_runs(job)}
    matrix = jobs["matrix"]
    assert set(matrix["needs"]) == mode_jobs | {"releases", "modes"}
    assert matrix["if"] == "always()"
    runs = "\n".join(str(step.get("run", "")) for step in matrix["steps"])
    assert "python -m reports merge" in runs
    assert "python -m reports compare previous matrix" in runs
    uploads = [s for job in jobs.values() for s in job.get("steps", []) if "upload" in str(s)]
    assert all(s["with"]["path"] for s in uploads)


def test_the_root_runs_run_as_root_and_no_other_job_does() -> None:
    """Without root both rehearsals SKIP every check, and a night of skips is not a pass."""
    assert {run["name"] for run in nightly_matrix()["root"]} >= {"aws-rehearsal", "ibm-rehearsal"}
    for name, job in workflow()["jobs"].items():
        as_root = runner_of(job) == "root"
        for command in tox_runs(job):
            assert command.startswith("sudo -E ") == as_root, f"job {name} runs {command!r}"
        # The rehearsals need no account: they run every night.
        assert not (as_root and gated(job)), f"job {name} waits for secrets"


def test_kuberay_job_has_the_operator_version_axis_and_the_upgrade() -> None:
    from provisioners.deployers.operator import KUBERAY_VERSIONS

    job = workflow()["jobs"]["kuberay"]
    matrix = job["strategy"]["matrix"]
    assert matrix["operator"] == list(KUBERAY_VERSIONS)
    upgrade = {
        "operator": KUBERAY_VERSIONS[-1],
        "upgrade": f"--ray-operator-upgrade-from={KUBERAY_VERSIONS[0]}",
    }
    assert upgrade in matrix["include"]
    runs = " ".join(tox_runs(job))
    assert (
        f"tox -e {MODE_ENV} -- --ray-modes kind-operator --ray-operator-version=${{{{ matrix.operator }}}}"
        in runs
    )
    assert "${{ matrix.upgrade }}" in runs
    uploads = [s for s in job["steps"] if "upload" in str(s)]
    assert all(not s["with"]["name"].startswith("bundle-") for s in uploads), (
        "the kuberay bundles are kind-operator's too: merged with the kind job's, one would hide the other"
    )


def test_each_supported_ray_release_but_the_locks_is_a_factor_of_the_mode_env() -> None:
    releases = policy().ray_releases
    lock = re.search(r"^ray==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
    assert lock is not None
    assert lock.group(1) == releases[0], "requirements.lock must pin the newest supported Ray"
    assert ray_factors() == {tox_suffix(v).removeprefix("-"): v for v in releases[1:]}
    envs = tox_envs()
    for release in releases:
        env = MODE_ENV + tox_suffix(release)
        # Generic: the mode comes after `--`, so a new mode needs no env.
        assert envs.get(env) == "pytest {posargs}", f"tox.ini has no [testenv:{env}]"
    assert not [e for e, commands in envs.items() if "--ray-modes" in commands], (
        "a per-mode tox env is back: the modes come from the registry"
    )


def test_every_matrix_job_runs_its_runs_on_every_supported_ray() -> None:
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
    assert sorted(matrix_jobs) == sorted(n for n, job in jobs.items() if runner_of(job))
    command = (
        f"tox -e {MODE_ENV}${{{{ matrix.ray.tox }}}} -- "
        "--ray-modes ${{ matrix.run.mode }} ${{ matrix.run.args }} "
    )
    for name in matrix_jobs:
        job = jobs[name]
        assert job["needs"] == ["releases", "modes"]
        assert job["strategy"]["matrix"]["ray"] == axis
        assert any(command in r for r in tox_runs(job)), name
        names = [s["with"]["name"] for s in job["steps"] if "upload" in str(s.get("uses"))]
        assert names == ["bundle-${{ matrix.run.name }}-ray${{ matrix.ray.ray }}"], name
