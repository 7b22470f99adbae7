"""The offline guard every harness test runs under: pulls, logins and lookups off this machine
fail the test that made them, even when the code under test swallowed the refusal."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import docker
import pytest

from fixtures.offline import InternetRefused, is_local_name, offline

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

SWALLOWS = """
import contextlib, socket
import docker


def test_swallowed_lookup():
    with contextlib.suppress(OSError):
        socket.getaddrinfo("registry-1.docker.io", 443)


def test_swallowed_pull():
    client = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    with contextlib.suppress(Exception):
        client.pull("rayproject/ray", tag="2.60.0-py311")


def test_local_only():
    socket.getaddrinfo("localhost", 80)
    socket.getaddrinfo("127.0.0.1", 80)
    socket.getaddrinfo(socket.gethostname(), 80)


@__import__("pytest").mark.offline_pull_refused
def test_pull_refused_on_purpose():
    client = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    with contextlib.suppress(Exception):
        client.pull("ray-conformance-missing", tag="nope")
"""


def test_guard_refuses_and_records_each_attempt() -> None:
    before = socket.getaddrinfo
    with offline() as attempts:
        with pytest.raises(InternetRefused, match=re.escape("DNS lookup 'pypi.org'")):
            socket.getaddrinfo("pypi.org", 443)
        with pytest.raises(InternetRefused, match=re.escape("DNS lookup 'quay.io'")):
            socket.gethostbyname("quay.io")
        client = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
        with pytest.raises(
            InternetRefused, match=re.escape("image pull rayproject/ray:2.60.0-py311")
        ):
            client.pull("rayproject/ray", tag="2.60.0-py311")
        with pytest.raises(InternetRefused, match=re.escape("registry login as 'someone'")):
            client.login("someone", "password")
        assert socket.getaddrinfo("127.0.0.1", 80)  # literals and loopback names pass
        assert socket.getaddrinfo("localhost", 80)
    assert attempts.seen == [
        "DNS lookup 'pypi.org'",
        "DNS lookup 'quay.io'",
        "image pull rayproject/ray:2.60.0-py311",
        "registry login as 'someone'",
    ]
    assert socket.getaddrinfo is before  # restored


def test_local_names() -> None:
    assert is_local_name("::1")
    assert is_local_name("10.240.0.4")
    assert is_local_name("LOCALHOST.")
    assert is_local_name("rc.localhost")
    assert is_local_name("myhost", frozenset({"myhost"}))
    assert not is_local_name("rayproject.github.io")
    assert not is_local_name("metadata.google.internal")


def test_a_test_that_reaches_out_fails_even_when_it_swallowed_the_refusal(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_reach=SWALLOWS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:fixtures.plugin")
    result.assert_outcomes(passed=4, errors=2)
    out = result.stdout.str()
    assert (
        "the test tried to reach the internet (refused): DNS lookup 'registry-1.docker.io'" in out
    )
    assert (
        "the test tried to reach the internet (refused): image pull rayproject/ray:2.60.0-py311"
        in out
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_swallowed_lookup*",
            "*ERROR at teardown of test_swallowed_pull*",
        ]
    )
