"""Ray Client scripts: a known upstream flake is retried and recorded; anything else is not."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from harness_fakes import modes, run, write_fakes

from fixtures.clients import CLIENT_RETRY_PAUSE

# A "client script" that fails the first N runs (counted in a file) the way Ray 2.60's client
# proxier does when its session server dies at birth (ray-project/ray#63202), then succeeds.
CHECK = """
import sys
from pathlib import Path

FLAKY = '''
import sys, time
from pathlib import Path
runs = Path(sys.argv[1])
n = len(runs.read_text().split()) if runs.exists() else 0
with runs.open("a") as out:
    print(time.monotonic(), file=out)
if n < int(sys.argv[2]):
    sys.exit(sys.argv[3])
print("ok")
'''

def test_client(ray_run_script, tmp_path, request):
    fails, message = request.config.getoption("--fails"), request.config.getoption("--message")
    result = ray_run_script(FLAKY, str(tmp_path / "count"), fails, message)
    assert result.returncode == 0, result.stderr
    Path("runs.txt").write_text((tmp_path / "count").read_text())
"""

CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--fails")
    parser.addoption("--message")
"""

FLAKE = "RuntimeError: Starting Ray client server failed. See ray_client_server_23002.err"


def results(pytester: pytest.Pytester) -> dict[str, object]:
    doc = json.loads((pytester.path / "report" / "results.json").read_text())
    return dict(doc["results"][0])


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    write_fakes(pytester)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_client=CHECK)
    return pytester


def run_client(pytester: pytest.Pytester, fails: int, message: str) -> pytest.RunResult:
    return run(
        pytester,
        "--ray-report-dir",
        str(pytester.path / "report"),
        f"--fails={fails}",
        f"--message={message}",
        *modes("alpha=FakeProvisioner"),
    )


def test_known_flake_is_retried_and_recorded(inner: pytest.Pytester) -> None:
    run_client(inner, 2, FLAKE).assert_outcomes(passed=1)
    starts = [float(t) for t in Path(inner.path / "runs.txt").read_text().split()]
    assert len(starts) == 3
    # Each retry waits longer than the one before it, away from the failed session's teardown.
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert CLIENT_RETRY_PAUSE > 0
    assert gaps[0] >= CLIENT_RETRY_PAUSE, gaps
    assert gaps[1] >= 2 * CLIENT_RETRY_PAUSE, gaps
    assert results(inner)["properties"] == {
        "known_flake_retries": ["ray-project/ray#63202", "ray-project/ray#63202"]
    }


def test_known_flake_three_times_in_a_row_fails(inner: pytest.Pytester) -> None:
    run_client(inner, 3, FLAKE).assert_outcomes(failed=1)


def test_other_failures_are_not_retried(inner: pytest.Pytester) -> None:
    run_client(inner, 1, "ConnectionError: ray client version mismatch").assert_outcomes(failed=1)
    assert results(inner)["properties"] == {}


# What Ray 2.58's client raised in a CI run: the proxier's traceback, with the flake's signature
# (psutil's ZombieProcess inside start_specific_server) hundreds of characters into the message.
FAKE_RAY = """
def init(**_):
    raise ConnectionAbortedError(
        "Initialization failure from server:\\nTraceback (most recent call last):\\n"
        + '  File "proxier.py", line 765, in Datapath\\n' * 8
        + "psutil.ZombieProcess: PID still exists but it's a zombie (pid=4242)"
    )
"""


def test_client_across_shows_a_flake_deep_in_the_servers_traceback(tmp_path: Path) -> None:
    """The version preflight's session script cuts its RESULT error to one line, but the whole
    error reaches stderr, so the harness still knows the flake and retries it."""
    import sys

    from fixtures.clients import CLIENT_ATTEMPTS, run_retrying_flakes

    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text(FAKE_RAY)
    script = Path(__file__).parents[1] / "suites" / "scripts" / "client_across.py"
    argv = [sys.executable, str(script), "ray://127.0.0.1:1"]
    result, retried = run_retrying_flakes(argv, 60, env={"PYTHONPATH": str(tmp_path)})
    found = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert not found["connected"]
    assert found["error"].startswith("ConnectionAbortedError")
    assert "ZombieProcess" not in found["error"]  # cut short: the reason stderr must carry it
    assert retried == ["ray-project/ray#63202"] * (CLIENT_ATTEMPTS - 1), result.stderr
