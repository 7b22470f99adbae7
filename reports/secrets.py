"""Key material a report must never carry, found by content and named by file.

A report dir is handed in, uploaded by CI with ``if: always()`` and kept for years: the bundle
and manifest writers refuse one in which a file holds a private key, a kubeconfig's
credentials, an AWS secret key or an IBM Cloud API key (by their shapes), or the value of a
credential variable of this process's environment (by value, whatever its shape).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from reports.model import BundleError


class SecretInReport(BundleError):
    """A file of a report holds key material; the message names each file and what it holds."""


#: What each kind of key material looks like in a file.
PATTERNS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("a PEM private key", re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    (
        "kubeconfig credentials",
        re.compile(rb"(?m)^\s*-?\s*(?:client-key-data|token|password)\s*:\s*[\"']?[^\s\"'{}]{16,}"),
    ),
    (
        "a bearer token (JWT)",
        re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    ),
    (
        "an AWS secret access key",
        re.compile(
            rb"(?i)(?:aws_secret_access_key|secretaccesskey)[\"'\s]*[:=][\"'\s]*[A-Za-z0-9/+=]{40}"
        ),
    ),
    ("an AWS access key id", re.compile(rb"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    (
        "an IBM Cloud API key",
        re.compile(
            rb"(?i)(?:iam_api_key|ibmcloud_api_key|ic_api_key|apikey)[\"'\s]*[:=][\"'\s]*[A-Za-z0-9_-]{40,}"
        ),
    ),
)
#: Credentials read from the environment by the modes (and their clouds' SDKs).
SECRET_ENVS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "IBMCLOUD_API_KEY",
    "IC_API_KEY",
)
#: Shorter values are not matched by value: too likely to occur by chance.
MIN_VALUE_LENGTH = 12


def _env_values() -> list[tuple[str, bytes]]:
    return [
        (f"the value of ${name}", value.encode())
        for name in SECRET_ENVS
        if len(value := os.environ.get(name, "")) >= MIN_VALUE_LENGTH
    ]


def key_material(data: bytes) -> list[str]:
    """What kinds of key material ``data`` holds (empty when none)."""
    found = [what for what, pattern in PATTERNS if pattern.search(data)]
    found += [what for what, value in _env_values() if value in data]
    return found


def refuse_secrets(root: Path, files: Iterable[str], what: str) -> None:
    """Raise :class:`SecretInReport` naming each file of ``files`` that holds key material."""
    found = scan(root, files)
    if found:
        raise SecretInReport(
            f"{root}: refusing to write {what}: "
            + "; ".join(found)
            + " (a report is shared: remove the file, or the secret from it)"
        )


def scan(root: Path, files: Iterable[str]) -> list[str]:
    """One line per file of ``files`` (relative to ``root``) that holds key material."""
    out = []
    for rel in files:
        try:
            data = (root / rel).read_bytes()
        except OSError:
            continue
        found = key_material(data)
        if found:
            out.append(f"{rel}: holds {', '.join(found)}")
    return out
