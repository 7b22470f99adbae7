"""Versions read from the nodes: the interpreter a node runs, and the per-node probe's answer."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator

import pytest

from fixtures.nodes import NodeVersions, differing, parse_versions
from provisioners.contract.base import ProvisionError
from provisioners.util.processes import interpreter_versions, node_interpreter
from provisioners.util.runner import CommandError


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A Python process standing for a node's `ray start`."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_node_interpreter_is_the_path_the_node_was_started_with(
    sleeper: subprocess.Popen[bytes],
) -> None:
    # As invoked (a venv's bin/python), not the binary it resolves to (no venv packages there).
    assert node_interpreter(sleeper.pid) == sys.executable


def test_node_interpreter_of_a_non_python_process_is_an_error() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(ProvisionError, match=r"runs \['sleep'\], not a Python interpreter"):
            node_interpreter(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_interpreter_versions_are_asked_of_the_interpreter() -> None:
    assert interpreter_versions(sys.executable, 60) == (
        importlib.metadata.version("ray"),
        f"{sys.version_info[0]}.{sys.version_info[1]}",
    )


def test_interpreter_without_ray_is_an_error_naming_it() -> None:
    python = "/usr/bin/python3"  # Debian's, without Ray
    if subprocess.run([python, "-c", "import ray"], capture_output=True).returncode == 0:
        pytest.skip(f"{python} has Ray")
    with pytest.raises(CommandError, match=r"/usr/bin/python3: Ray and Python versions"):
        interpreter_versions(python, 60)


PROBE_OUTPUT = (
    "noise\n"
    'RESULT {"bbbb": {"ray": "2.9.3", "python": "3.10", "hostname": "w1", "ip": "10.0.0.2"},'
    ' "aaaa": {"ray": "2.60.0", "python": "3.11", "hostname": "head", "ip": "10.0.0.1"},'
    ' "cccc": {"error": "GetTimeoutError: timed out", "ip": "10.0.0.3"}}\n'
)


def test_probe_output_names_each_node_that_differs_or_did_not_answer() -> None:
    nodes = parse_versions(PROBE_OUTPUT)
    assert [n.node_id for n in nodes] == ["aaaa", "bbbb", "cccc"]
    assert differing(nodes, "2.60.0", "ray") == [
        "node bbbb at 10.0.0.2 (w1) runs Ray 2.9.3, Python 3.10",
        "node cccc at 10.0.0.3: its task failed: GetTimeoutError: timed out",
    ]
    assert differing(nodes[:1], "3.11", "python") == []
    assert NodeVersions("dddd", "10.0.0.4", error="x").describe() == (
        "node dddd at 10.0.0.4: its task failed: x"
    )


def test_probe_without_a_result_line_quotes_its_output() -> None:
    with pytest.raises(AssertionError, match=r"printed no RESULT line(.|\n)*Traceback"):
        parse_versions("Traceback (most recent call last):\n  ...\n")
