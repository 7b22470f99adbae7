"""Bad input, all of it: each row of the README's "Bad input" table, given to a real start-up.

Every one stops the run with a usage error of one line naming the flag, the file and what is
wrong, before anything is provisioned and before a report directory exists; no traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from harness_fakes import events, literal, modes, run, write_fakes
from test_certify import TARGET

from reports.certify import TARGET_FIELDS

#: Every field well-formed (URLs, the type, an e-mail address, versions), as tests/test_certify.py's.
COMPLETE_TARGET = "".join(f"{k}: {json.dumps(v)}\n" for k, v in TARGET.items())


@dataclass(frozen=True)
class Bad:
    """One bad input: the flag, the file it names (None: no such file), the message expected."""

    flag: str
    content: bytes | None
    message: str  # after "ERROR: <flag> ", PATH standing for the file's path


ROWS = {
    # Files that are not there: checked when the run starts, not when a mode reads them.
    "launcher-config-missing": Bad("--ray-launcher-config", None, "'PATH': no such file"),
    "cluster-yaml-missing": Bad("--ray-cluster-yaml", None, "'PATH': no such file"),
    "kubeconfig-missing": Bad("--ray-kubeconfig", None, "'PATH': no such file"),
    "kubectl-missing": Bad("--ray-kubectl", None, "'PATH': no such file"),
    "ssh-key-missing": Bad("--ray-ssh-key", None, "'PATH': no such file"),
    "certify-missing": Bad("--ray-certify", None, "'PATH': no such file"),
    # YAML that is not UTF-8, not YAML, or not a mapping, wherever one is read.
    "launcher-config-not-utf8": Bad(
        "--ray-launcher-config",
        b"max_workers: 2\n# caf\xe9\n",
        "'PATH': not UTF-8 text (byte 0xe9 at offset 20)",
    ),
    "launcher-config-not-yaml": Bad(
        "--ray-launcher-config",
        b"max_workers: [2\n",
        "'PATH': not valid YAML at line 2, column 1: *",
    ),
    "launcher-config-a-list": Bad(
        "--ray-launcher-config",
        b"- max_workers: 2\n",
        "'PATH': not a YAML mapping of keys (it holds a list)",
    ),
    "cluster-yaml-not-utf8": Bad(
        "--ray-cluster-yaml",
        b"\xff\xfeprovider: {}\n",
        "'PATH': not UTF-8 text (byte 0xff at offset 0)",
    ),
    "cluster-yaml-empty": Bad(
        "--ray-cluster-yaml", b"", "'PATH': not a YAML mapping of keys (it holds nothing)"
    ),
    "certify-not-utf8": Bad(
        "--ray-certify", b"vendor: Soci\xe9t\xe9\n", "PATH: not UTF-8 text (byte 0xe9 at offset 12)"
    ),
    "certify-not-yaml": Bad("--ray-certify", b"vendor: [\n", "PATH: not valid YAML (*)"),
    "certify-a-list": Bad(
        "--ray-certify", b"- vendor\n", f"PATH: expected a mapping of {', '.join(TARGET_FIELDS)}"
    ),
    # A provider or node type that is not a mapping.
    "provider-not-a-mapping": Bad(
        "--ray-cluster-yaml", b"provider: aws\n", "'PATH': 'provider' is a string, not a mapping"
    ),
    "launcher-provider-not-a-mapping": Bad(
        "--ray-launcher-config",
        b"provider: [aws]\n",
        "'PATH': 'provider' is a list, not a mapping",
    ),
    "node-type-not-a-mapping": Bad(
        "--ray-cluster-yaml",
        b"available_node_types:\n  ray.head.default: 4\n",
        "'PATH': node type 'available_node_types.ray.head.default' is a number, not a mapping",
    ),
    "node-config-not-a-mapping": Bad(
        "--ray-launcher-config",
        b"available_node_types:\n  worker:\n    node_config: m5.large\n",
        "'PATH': available_node_types.worker.node_config is a string, not a mapping",
    ),
    # target.yaml: every missing field at once.
    "certify-fields-missing": Bad(
        "--ray-certify",
        b"vendor: Example\nmode: fake\n",
        "PATH: fields "
        + ", ".join(repr(f) for f in TARGET_FIELDS if f not in ("vendor", "mode"))
        + " are missing or empty",
    ),
}


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(test_checks="def test_one(ray_cluster):\n    pass\n")


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_bad_input_is_one_line_and_leaves_nothing(pytester: pytest.Pytester, row: Bad) -> None:
    path = pytester.path / "inputs" / "given.yaml"
    if row.content is not None:
        path.parent.mkdir()
        path.write_bytes(row.content)
    report = pytester.path / "report"
    result = run(
        pytester,
        *modes("fake=FakeProvisioner"),
        "--ray-report-dir",
        str(report),
        row.flag,
        str(path),
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.outlines[-20:]
    message = row.message.replace("PATH", literal(str(path)))
    result.stderr.fnmatch_lines([f"ERROR: {row.flag} {message}"])
    assert [line for line in result.errlines if line.strip()] == [result.errlines[0]], (
        result.errlines
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert not report.exists(), "a report directory was made before the options were valid"
    assert events(pytester) == []


def test_unknown_opt_key_leaves_no_report_directory(pytester: pytest.Pytester) -> None:
    """--ray-opt is checked after the modes load: still before the report directory is made."""
    report = pytester.path / "report"
    result = run(
        pytester,
        *modes("fake=FakeProvisioner"),
        "--ray-report-dir",
        str(report),
        "--ray-opt",
        "nope=1",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --ray-opt nope: no selected mode declares it; *"])
    assert not report.exists()


def test_a_complete_target_passes_the_same_checks(pytester: pytest.Pytester) -> None:
    """The control: the checks above do not refuse a good file."""
    target = pytester.path / "target.yaml"
    target.write_text(COMPLETE_TARGET)
    result = run(
        pytester,
        *modes("fake=FakeProvisioner"),
        "--ray-report-dir",
        str(pytester.path / "r"),
        "--ray-certify",
        str(target),
        "-k",
        "no_such_check",
    )
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, result.errlines
