"""The version preflight's message: both sides' versions, and what Ray Client needs."""

from __future__ import annotations

from fixtures.clients import version_mismatch


def test_preflight_same_versions_pass() -> None:
    assert version_mismatch("2.60.0", "2.60.0", "3.11", "3.11") is None


def test_preflight_ray_mismatch_names_both_versions() -> None:
    message = version_mismatch("2.60.0", "2.59.1", "3.11", "3.11")
    assert message is not None
    assert "Ray 2.60.0 here vs 2.59.1 in the cluster" in message
    assert "same Ray version and Python minor" in message


def test_preflight_python_mismatch_names_both_versions() -> None:
    message = version_mismatch("2.60.0", "2.60.0", "3.11", "3.10")
    assert message is not None
    assert "Python 3.11 here vs 3.10 in the cluster" in message
    assert "Ray 2.60.0" not in message


def test_preflight_both_mismatches_are_reported_together() -> None:
    message = version_mismatch("2.60.0", "2.9.3", "3.11", "3.9")
    assert message is not None
    assert "Ray 2.60.0 here vs 2.9.3" in message
    assert "Python 3.11 here vs 3.9" in message
