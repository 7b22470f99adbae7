"""The teardown-leak suite (suites/test_teardown_leak.py) against clean and leaky fakes."""

from __future__ import annotations

import json
import shutil

import pytest
from harness_fakes import CHECKS, LEAK_SUITE, events, modes, run, write_fakes

from provisioners.util import runstate


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)


def test_leak_suite_fails_listing_what_teardown_left(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leak=LEAK_SUITE.read_text())
    result = run(pytester, *modes("fake=LeakyProvisioner"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_teardown_leaves_nothing_behind?fake?*",
            "E * AssertionError: fake: teardown left 1 thing(s) behind:",
            "E *   container fake-head-1 (still running)",
        ]
    )


def test_leak_suite_fails_when_the_inventory_cannot_list_after_teardown(
    pytester: pytest.Pytester,
) -> None:
    """An API error after teardown is a failure naming what could not be listed, not "clean"."""
    pytester.makepyfile(test_leak=LEAK_SUITE.read_text())
    result = run(pytester, *modes("fake=BlindProvisioner"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_teardown_leaves_nothing_behind?fake?*",
            "E * AssertionError: fake: the inventory could not list everything, so it proves nothing:",
            "E *   could not list fake instances: ServiceUnavailable: 503 from the fake API",
        ]
    )
    errors = [line for line in result.outlines if line.startswith("E ")]
    assert not [line for line in errors if "teardown left" in line], errors


def test_inventory_that_raises_fails_both_leak_checks_naming_the_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_leak=LEAK_SUITE.read_text())
    result = run(pytester, *modes("fake=ErrorAlwaysProvisioner"))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_inventory_sees_the_running_cluster?fake?*",
            "E *   could not list the mode's objects (inventory() raised): KeyError: 'Reservations'",
            "*test_teardown_leaves_nothing_behind?fake?*",
            "E *   could not list the mode's objects (inventory() raised): KeyError: 'Reservations'",
        ]
    )


def test_leak_suite_passes_for_a_clean_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leak=LEAK_SUITE.read_text())
    result = run(pytester, *modes("fake=FakeProvisioner"))
    result.assert_outcomes(passed=2)
    assert events(pytester, "teardown") == [("teardown", "fake")]  # not again at session end


def test_teardown_check_runs_last_in_its_mode_though_its_file_sorts_first(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_a_leak=LEAK_SUITE.read_text(), test_b_checks=CHECKS)
    result = run(pytester, "-v", *modes("alpha=FakeProvisioner", "beta=FakeProvisioner"))
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            f"{nodeid}?{mode}? PASSED*"
            for mode in ("alpha", "beta")
            for nodeid in (
                "test_a_leak.py::test_inventory_sees_the_running_cluster",
                "test_b_checks.py::test_one",
                "test_b_checks.py::test_two",
                "test_a_leak.py::test_teardown_leaves_nothing_behind",
            )
        ]
    )


def test_teardown_leftovers_are_printed_and_recorded_when_the_leak_check_is_deselected(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_leak=LEAK_SUITE.read_text())
    report = pytester.path / "report"
    result = run(
        pytester,
        *modes("fake=LeakyProvisioner"),
        "-k",
        "not teardown_leaves",
        f"--ray-report-dir={report}",
        "--ray-run-id=t-leftovers-said",
    )
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*fake (+*): teardown left 1 thing(s):",
            "*    container fake-head-1 (still running)",
            "*  remove them with: * -m provisioners sweep --run-id t-leftovers-said --mode fake",
        ]
    )
    record = json.loads((report / "modes" / "fake.json").read_text())
    assert [i["name"] for i in record["inventory_after"]] == ["fake-head-1"]
    # The run keeps its notes for that sweep.
    assert runstate.notes("t-leftovers-said", "leftovers")[0]["items"] == [
        "container fake-head-1 (still running)"
    ]
    shutil.rmtree(runstate.run_dir("t-leftovers-said"))
