"""The commands that are not pytest runs: ``python -m provisioners`` and ``ray-conformance``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
#: The console script pip installs next to this interpreter (the project is installed editable).
SCRIPT = Path(sys.executable).parent / "ray-conformance"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)


def registered() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"]["ray_conformance.provisioners"])


def test_modes_json_lists_every_registered_mode_and_its_flags() -> None:
    proc = run(sys.executable, "-m", "provisioners", "modes", "--json")
    assert proc.returncode == 0, proc.stderr
    found = {m["name"]: m for m in json.loads(proc.stdout)}
    assert {name: m["source"] for name, m in found.items()} == registered()
    assert all(m["error"] == "" for m in found.values()), found
    assert "--ray-vm-hosts" in found["vm"]["options"]
    assert found["local"]["options"] == []


def test_options_markdown_has_a_row_per_flag_naming_its_modes() -> None:
    proc = run(sys.executable, "-m", "provisioners", "options", "--markdown")
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[:2] == ["| flag | modes | meaning |", "|---|---|---|"]
    image = next(r for r in rows if r.startswith("| `--ray-image VALUE`"))
    # Every mode that declares the shared option, as pytest --help says it.
    assert "| aws, docker, ibm, kind-operator, kube-operator, openshift, vm |" in image
    assert any(r.startswith("| `--ray-aws-rehearsal` | aws |") for r in rows)


def test_an_unknown_command_is_one_usage_line_and_an_error() -> None:
    proc = run(sys.executable, "-m", "provisioners", "frobnicate")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines()[1] == "error: unknown command 'frobnicate'"


def test_console_script_dispatches_to_the_module_commands(tmp_path: Path) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ray-conformance": "provisioners.cli:main"}
    assert SCRIPT.is_file(), f"{SCRIPT} missing: install the project (make venv)"
    assert run(str(SCRIPT), "options", "--markdown").stdout == (
        run(sys.executable, "-m", "provisioners", "options", "--markdown").stdout
    )
    missing = tmp_path / "nothing"
    via_script = run(str(SCRIPT), "reports", "show", str(missing))
    via_module = run(sys.executable, "-m", "reports", "show", str(missing))
    assert (via_script.returncode, via_script.stderr) == (via_module.returncode, via_module.stderr)
    assert via_script.stderr == f"error: {missing}: no such directory or archive\n"
    usage = run(str(SCRIPT), "--help")
    assert usage.returncode == 0
    assert usage.stdout.startswith(
        "usage: ray-conformance {reports,toolchain,prepare,sweep,options,modes"
    )
