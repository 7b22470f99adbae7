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
        ("suites/test_spread.py", "import provisioners.docker", "never name a mode"),
        (
            "provisioners/contract/base.py",
            "import provisioners.util.waits",
            "imports no mode or utility",
        ),
        ("provisioners/util/waits.py", "import provisioners.util.runner", "No import cycle"),
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


def test_every_registered_mode_and_deployer_is_behind_both_contracts() -> None:
    """The contracts name modules, so a new built-in mode must join their lists: this fails
    until it does (the registry, not memory, says which modules are modes)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    modules = {v.split(":")[0] for v in project["project"]["entry-points"][ENTRY_POINTS].values()}
    modules |= {"provisioners.raystart", "provisioners.launcher", "provisioners.deployers"}
    for contract in project["tool"]["importlinter"]["contracts"][:2]:
        forbidden = contract["forbidden_modules"]

        def covered(module: str, forbidden: list[str] = forbidden) -> bool:
            return any(module == f or module.startswith(f + ".") for f in forbidden)

        missing = sorted(m for m in modules if not covered(m))
        assert not missing, f"{contract['name']!r} does not forbid {missing}"
