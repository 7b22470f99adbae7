"""Every documented way to start the suites, run as written, with its paths outside the checkout.

The commands come from the README's shell blocks and the nightly workflow's runs of tox.ini's
generic env (``tox -e mode -- ARGS``), each matrix job once per run of the registry's matrix
(``python -m provisioners modes --matrix``, as the workflow's `modes` job computes it). Each path a ``--ray-*`` flag takes is
replaced by one outside the checkout, in the form the document writes it (``--flag value`` or
``--flag=value``): pytest used to take such a value for a test path, move its rootdir there and
then reject every ``--ray-*`` flag as unrecognized (pytest-dev/pytest#8846).
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness_fakes import REPO

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
#: The generic tox env the workflow runs every mode through.
MODE_ENV = "mode"
#: Flags whose value is a path (``Option.path`` / ``Option.file``), as the documents use them.
PATH_FLAGS = (
    "--ray-kubeconfig",
    "--ray-cluster-yaml",
    "--ray-launcher-config",
    "--ray-report-dir",
    "--ray-certify",
    "--ray-ssh-key",
    "--ray-kubectl",
)
#: What the workflow's expressions and variables stand for in a run here.
GITHUB = {
    "${{ env.RUN_ID }}": "n12345678901",  # n and an 11-digit github.run_id
    '"$RUNNER_TEMP/ibm.yaml"': "$RUNNER_TEMP/ibm.yaml",
    '"$RAY_CONFORMANCE_ADDRESS"': "ray://127.0.0.1:9",
    # The `releases` job's axis, on the lock's Ray (its env has no -rayX.Y suffix).
    "${{ matrix.ray.tox }}": "",
    "${{ matrix.ray.ray }}": "2.60.0",
}


@dataclass(frozen=True)
class Command:
    where: str  # "README.md:146", "tox.ini [testenv:aws]", ...
    args: list[str]  # after `pytest`


def readme_commands() -> list[Command]:
    out = []
    in_shell = False
    for number, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        if line.startswith("```"):
            in_shell = line.strip() == "```sh"
            continue
        if not in_shell or "pytest" not in line or "--ray-" not in line:
            continue
        words = shlex.split(line.replace("[", "").replace("]", ""), comments=True)
        start = words.index("pytest") + 1
        out.append(Command(f"README.md:{number}", words[start:]))
    return out


@functools.cache
def nightly_matrix() -> dict[str, list[dict[str, str]]]:
    """The registry's runs by runner, as the workflow's `modes` job computes them."""
    done = subprocess.run(
        [sys.executable, "-m", "provisioners", "modes", "--matrix"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, list[dict[str, str]]] = json.loads(done.stdout)
    return found


def _axis(values: Any) -> list[Any] | None:
    """A matrix axis's values: a list, or the registry's runs it reads
    (``fromJSON(needs.modes.outputs.RUNNER)``); None for another job's output (``ray``: the
    lock's only, in GITHUB)."""
    if isinstance(values, list):
        return values
    found = re.fullmatch(r"\$\{\{ fromJSON\(needs\.modes\.outputs\.(\w+)\) \}\}", str(values))
    return nightly_matrix()[found.group(1)] if found else None


def _combinations(job: dict[str, Any]) -> list[dict[str, str]]:
    """Matrix entries covering every value of every axis (the others at their first), then
    each ``include``; an object value (a run) as ``run.mode``, ``run.args``, ..."""
    matrix = dict(job.get("strategy", {}).get("matrix", {}))
    include = matrix.pop("include", [])
    axes = {k: v for k, v in ((k, _axis(v)) for k, v in matrix.items()) if v is not None}
    first = {k: v[0] for k, v in axes.items()}
    out = [first]
    for key, values in axes.items():
        out += [{**first, key: value} for value in values[1:]]
    out += [{**first, **extra} for extra in include]
    return [
        {
            f"{key}.{sub}" if isinstance(value, dict) else key: str(v)
            for key, value in entry.items()
            for sub, v in (value.items() if isinstance(value, dict) else [("", value)])
        }
        for entry in out
    ]


def nightly_commands(kubeconfig: Path) -> list[Command]:
    """Each of the workflow's runs of the generic tox env, expressions expanded, as the pytest
    command it makes (tox.ini's ``commands`` with the run's arguments as ``{posargs}``)."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    sections = [s for s in ini.sections() if re.sub(r"\{[^}]*\}", "", s) == f"testenv:{MODE_ENV}"]
    assert len(sections) == 1, ini.sections()
    command = ini[sections[0]]["commands"].strip()
    github = {**GITHUB, '"$KUBECONFIG"': str(kubeconfig)}
    out = []
    for name, job in yaml.safe_load(WORKFLOW.read_text())["jobs"].items():
        for step in job.get("steps", []):
            for index, combination in enumerate(_combinations(job)):
                line = str(step.get("run", "")).replace("${{ strategy.job-index }}", str(index))
                for key, value in [*github.items(), *combination.items()]:
                    line = line.replace(
                        key if key.startswith(("$", '"')) else f"${{{{ matrix.{key} }}}}", value
                    )
                found = re.search(r"tox -e (\S+) -- (.*)", line)
                if found is None:
                    continue
                env, rest = found.groups()
                assert env == MODE_ENV, f"nightly.yml job {name} runs tox env {env}"
                # A matrix run by its name (kuberay's by its axes), a job of its own by the job's.
                run = combination.get("run.name") or " ".join(v for v in combination.values() if v)
                where = f"nightly.yml {name} [{run or name}] + tox.ini [{sections[0]}]"
                out.append(Command(where, shlex.split(command.replace("{posargs}", rest))[1:]))
    return out


def outside(args: list[str], paths: dict[str, Path]) -> list[str]:
    """``args`` with each path flag's value replaced by ``paths[flag]``, in the same form."""
    out = list(args)
    for i, arg in enumerate(out):
        flag, eq, _ = arg.partition("=")
        if flag in PATH_FLAGS and eq:
            out[i] = f"{flag}={paths[flag]}"
        elif arg in PATH_FLAGS and i + 1 < len(out):
            out[i + 1] = str(paths[arg])
    return out


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    """A path outside the checkout for each path flag: files that exist, a report dir that not."""
    assert not tmp_path.is_relative_to(REPO)
    files = {
        "--ray-kubeconfig": ("kube/config", ""),
        "--ray-cluster-yaml": ("yamls/cluster.yaml", "cluster_name: mine\n"),
        "--ray-launcher-config": ("yamls/overrides.yaml", "max_workers: 2\n"),
        "--ray-ssh-key": ("ssh/id_ed25519", ""),
        "--ray-kubectl": ("bin/kubectl", ""),
        "--ray-certify": ("target/target.yaml", ""),
    }
    out = {"--ray-report-dir": tmp_path / "report"}
    for flag, (name, text) in files.items():
        out[flag] = tmp_path / name
        out[flag].parent.mkdir(parents=True, exist_ok=True)
        out[flag].write_text(text)
    return out


def pytest_in_checkout(args: list[str], env: dict[str, str] | None = None) -> Any:
    """``python -m pytest ARGS`` from the checkout, as the documents run it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def test_documents_name_path_flags_in_both_forms() -> None:
    """The commands below cover what they claim: the space form and the = form both occur."""
    docs = readme_commands() + nightly_commands(Path("/tmp/kubeconfig"))
    words = [w for c in docs for w in c.args]
    assert any(w in PATH_FLAGS for w in words), "no `--flag value` path in the documents"
    assert any(w.partition("=")[0] in PATH_FLAGS and "=" in w for w in words)
    assert len({c.where for c in docs}) >= 15, [c.where for c in docs]


def test_every_documented_command_parses_with_paths_outside_the_checkout(
    paths: dict[str, Path],
) -> None:
    """Each command starts the run with the checkout as rootdir and its flags as flags.

    ``-k`` deselects every check (no cluster is made): what is tested is the command line.
    """

    def problem(command: Command) -> str | None:
        args = outside(command.args, paths)
        if not any(a.partition("=")[0] == "--ray-report-dir" for a in args):
            args += ["--ray-report-dir", str(paths["--ray-report-dir"])]
        done = pytest_in_checkout([*args, "-k", "no_check_has_this_name"])
        seen = done.stdout + done.stderr
        ran = f"{command.where}: pytest {shlex.join(args)} exited {done.returncode}"
        if done.returncode != pytest.ExitCode.NO_TESTS_COLLECTED:
            return f"{ran}:\n{seen[-1500:]}"
        if f"rootdir: {REPO}\n" not in seen or "configfile: pyproject.toml" not in seen:
            return f"{ran}, the checkout's pyproject.toml unread:\n{seen[-800:]}"
        return None

    commands = readme_commands() + nightly_commands(paths["--ray-kubeconfig"])
    with ThreadPoolExecutor(2) as pool:  # each start imports every mode: seconds apiece
        problems = [p for p in pool.map(problem, commands) if p]
    assert not problems, "\n\n".join(problems)


def test_kubeconfig_outside_the_checkout_reaches_the_mode(paths: dict[str, Path]) -> None:
    """The issue's own command, space form: kube-operator reads that kubeconfig and says so."""
    kubeconfig = paths["--ray-kubeconfig"]  # exists, and is empty: not a kubeconfig
    report = paths["--ray-report-dir"]
    done = pytest_in_checkout(
        [
            "--ray-modes",
            "kube-operator",
            "--ray-kubeconfig",
            str(kubeconfig),
            "--ray-report-dir",
            str(report),
            "-k",
            "test_inventory_sees_the_running_cluster",
        ]
    )
    seen = done.stdout + done.stderr
    assert "unrecognized arguments" not in seen, seen[-2000:]
    assert f"rootdir: {REPO}\n" in seen, seen[:1000]
    assert (
        f"kube-operator: provisioning failed: kubeconfig {kubeconfig}: Invalid kube-config" in seen
    ), seen[-2000:]
    assert (report / "results.json").is_file()


def test_certify_target_outside_the_checkout_reaches_the_harness(paths: dict[str, Path]) -> None:
    """``--ray-certify PATH`` (space form) is read from that path, not collected as a test."""
    target = paths["--ray-certify"]
    target.write_text("vendor: Example\n")
    done = pytest_in_checkout(["--ray-certify", str(target)])
    seen = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, seen[-2000:]
    assert f"--ray-certify {target}: " in seen, seen[-2000:]
    assert "unrecognized arguments" not in seen


def test_naming_the_plugin_too_loads_it_once(pytester: pytest.Pytester) -> None:
    """``-p fixtures.plugin`` (how it was loaded before the entry point) still works."""
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "fixtures.plugin", "--ray-modes", "local", "--collect-only", "-q", timeout=120
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()[-2000:]
    assert "already registered" not in result.stderr.str()
    result.stdout.fnmatch_lines(["test_x.py::test_x"])
