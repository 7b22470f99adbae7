"""The import layers in pyproject.toml hold, and each contract fails when its rule is broken."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from provisioners.util.runner import run_full

REPO = Path(__file__).parents[1]
LINT = Path(sys.executable).parent / "lint-imports"
ENTRY_POINTS = "ray_conformance.provisioners"


def lint(root: Path) -> tuple[int, str]:
    done = run_full(
        [str(LINT), "--no-cache"],
        300,
        what="lint-imports",
        cwd=root,
        env={"PYTHONPATH": str(root)},
        check=False,
    )
    return done.returncode, done.stdout


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The packages and the contracts, in a directory that shadows the checkout's."""
    for name in ("provisioners", "fixtures", "suites", "reports"):
        shutil.copytree(
            REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "out")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_checkout_keeps_every_contract(copy: Path) -> None:
    code, out = lint(copy)
    assert code == 0, out
    assert "0 broken" in out, out


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("suites/test_spread.py", "import provisioners.modes.docker", "never name a mode"),
        (
            "provisioners/contract/base.py",
            "import provisioners.util.waits",
            "imports no mode or utility",
        ),
        ("provisioners/util/waits.py", "import provisioners.util.runner", "No import cycle"),
        (
            "provisioners/deployers/raystart.py",
            "import provisioners.sources.local",
            "Modes compose",
        ),
        ("provisioners/util/naming.py", "import provisioners.kube.api", "Modes compose"),
    ],
)
def test_each_contract_fails_when_its_rule_is_broken(
    copy: Path, module: str, line: str, broken: str
) -> None:
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    code, out = lint(copy)
    assert code != 0, out
    assert any(broken in row and "BROKEN" in row for row in out.splitlines()), out


def test_every_module_sits_in_a_layer_and_every_mode_in_modes() -> None:
    """The layout is the architecture: each built-in mode's module is in provisioners/modes (the
    registry, not memory, says which modules are modes), every package of provisioners/ is a
    layer of the layers contract, and the harness may import none of the parts."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    modes = {v.split(":")[0] for v in project["project"]["entry-points"][ENTRY_POINTS].values()}
    assert {m.rpartition(".")[0] for m in modes} == {"provisioners.modes"}, modes
    contracts = project["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    layered = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    root = REPO / "provisioners"
    found = {p.stem for p in root.glob("*.py")} | {
        p.parent.name for p in root.glob("*/__init__.py")
    }
    assert found - {"__init__", "__main__"} == layered
    harness = contracts[0]["forbidden_modules"]
    parts = ["modes", "sources", "deployers", "rules", "rehearsals", "kube"]
    assert harness == [f"provisioners.{p}" for p in parts]
