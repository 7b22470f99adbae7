"""Run-scoped names that every platform accepts.

One rule for containers, networks, kind clusters, namespaces, Services and cloud tags alike:
Kubernetes' DNS-1123 label (lowercase letters, digits and dashes, starting and ending with a
letter or digit, at most 63 characters). Docker and the clouds accept these names too.
"""

from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63
_INVALID = re.compile(r"[^a-z0-9-]+")


def run_name(run_id: str, *parts: str, limit: int = MAX_LABEL) -> str:
    """``rc-<run id>-<parts...>`` as a DNS-1123 label of at most ``limit`` characters.

    Too long a name keeps its start and gets a short hash of the whole in place of the cut, so
    two names that differ only in their tails stay different.
    """
    raw = "-".join(["rc", run_id, *parts]).lower()
    name = _INVALID.sub("-", raw)
    name = re.sub(r"-{2,}", "-", name).strip("-")
    if len(name) > limit:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name[: limit - len(digest) - 1].rstrip("-") + "-" + digest
    return name


def is_dns_label(name: str) -> bool:
    """True when ``name`` is a valid DNS-1123 label."""
    return bool(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name))
