"""external mode, for real: the suites against a running cluster this test starts itself."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioners.contract.base import ClusterHandle, ClusterSpec, ProvisionError, Timeouts
from provisioners.contract.options import OptionError
from provisioners.modes.external import ADDRESS, DASHBOARD_URL, EXPECT_NODES, parse_address
from provisioners.modes.local import LocalProvisioner
from provisioners.util.waits import wait_for

SUITES = Path(__file__).resolve().parents[1] / "suites"


@pytest.fixture(scope="module")
def someone_elses_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    provisioner = LocalProvisioner()
    spec = ClusterSpec(
        mode="local",
        run_id=f"ext{int(time.time()) % 100000}",
        workdir=tmp_path_factory.mktemp("ext"),
        workers=0,
    )
    try:
        yield provisioner.provision(spec)
    finally:
        provisioner.teardown()
    assert not provisioner.inventory()


def test_external_suites_pass_and_leave_cluster_running(
    pytester: pytest.Pytester, someone_elses_cluster: ClusterHandle
) -> None:
    for name in ("test_spread.py", "test_dashboard.py", "test_teardown_leak.py"):
        pytester.makepyfile(**{name[:-3]: (SUITES / name).read_text()})
    (pytester.path / "scripts").mkdir()
    (pytester.path / "scripts" / "spread.py").write_text(
        (SUITES / "scripts" / "spread.py").read_text()
    )
    access = someone_elses_cluster.access
    result = pytester.runpytest_subprocess(
        "-rs",
        "--ray-modes=external",
        f"--ray-address={access['ray client']}",
        f"--ray-dashboard-url={access['dashboard']}",
        # Two sessions at once: this test is about the mode (the load's own: tests/test_load.py).
        "--ray-expect-nodes=1",
        "--ray-spread-iterations=1",
        "--ray-client-sessions=2",
    )
    result.assert_outcomes(passed=6, skipped=2)
    result.stdout.fnmatch_lines(["*external: this run did not create the cluster*"])
    # The harness deleted nothing: the cluster still answers.
    host, port = access["dashboard"].removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5):
        pass


def test_external_unanswering_address_fails_within_preflight_naming_it(tmp_path: Path) -> None:
    from provisioners.modes.external import ExternalProvisioner
    from provisioners.util.relay import free_port

    port = free_port()  # nothing listens there
    spec = ClusterSpec(
        mode="external",
        run_id="x",
        workdir=tmp_path,
        timeouts=Timeouts(preflight=1.5),
        options={ADDRESS.key: f"ray://127.0.0.1:{port}"},
    )
    t0 = time.monotonic()
    with pytest.raises(
        ProvisionError, match=rf"127\.0\.0\.1:{port}.*--ray-address ray://127\.0\.0\.1:{port}"
    ):
        ExternalProvisioner().provision(spec)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ray://h:10001", ("h", 10001, None)),
        ("h:6379", ("h", 10001, 6379)),
        ("ray://10.0.0.1:2", ("10.0.0.1", 2, None)),
    ],
)
def test_external_address_forms_parse(address: str, expected: tuple[str, int, int | None]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["ray://h", "h", "ray://:1", "h:port"])
def test_external_malformed_address_is_rejected(address: str) -> None:
    with pytest.raises(ProvisionError, match="--ray-address"):
        parse_address(address)


def test_external_without_address_is_skipped_with_reason(tmp_path: Path) -> None:
    from provisioners.modes.external import ExternalProvisioner

    missing = ExternalProvisioner().missing_prerequisites(
        ClusterSpec(mode="external", run_id="x", workdir=tmp_path)
    )
    assert missing == [
        "no cluster given (--ray-address ray://HOST:10001 or HOST:6379, "
        "with --ray-dashboard-url and --ray-expect-nodes as needed)"
    ]


def test_external_job_past_its_timeout_is_stopped(
    tmp_path: Path, someone_elses_cluster: ClusterHandle
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    from provisioners.modes.external import ExternalProvisioner

    access = someone_elses_cluster.access
    spec = ClusterSpec(
        mode="external",
        run_id="x",
        workdir=tmp_path,
        options={ADDRESS.key: access["ray client"], DASHBOARD_URL.key: access["dashboard"]},
    )
    external = ExternalProvisioner()
    external.provision(spec)
    with pytest.raises(TimeoutError, match=r"timed out after 3 s waiting for job (\S+) at"):
        external.run_in_cluster("import time; time.sleep(600)", timeout=3)
    client = JobSubmissionClient(access["dashboard"])
    job = max(client.list_jobs(), key=lambda j: j.start_time or 0)
    stopped = wait_for(
        lambda: client.get_job_status(job.submission_id or "") == JobStatus.STOPPED,
        timeout=30,
        what="the timed-out job to be stopped",
    )
    assert stopped


def test_external_expect_nodes_must_be_positive() -> None:
    assert EXPECT_NODES.value("3") == 3
    with pytest.raises(OptionError, match="--ray-expect-nodes '0': must be at least 1"):
        EXPECT_NODES.value("0")
