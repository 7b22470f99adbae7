"""``manifest.json``: size and sha256 of every file in a report dir, and checking them again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from reports.model import RESULTS_FILE, BundleError, is_safe_relpath, read_json, write_json
from reports.secrets import refuse_secrets

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = "ray-conformance/manifest/v1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_files(report_dir: Path) -> list[str]:
    """Every regular file under ``report_dir`` except the manifest, as sorted POSIX paths."""
    out = []
    for path in report_dir.rglob("*"):
        rel = path.relative_to(report_dir).as_posix()
        # Skip our own in-flight temp files (see write_text_atomic) and the manifest itself.
        if rel == MANIFEST_FILE or (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        if path.is_file():
            out.append(rel)
    return sorted(out)


def write_manifest(report_dir: Path, run_id: str) -> Path:
    """Seal ``report_dir``; :class:`~reports.secrets.SecretInReport` if a file holds a key."""
    refuse_secrets(report_dir, bundle_files(report_dir), MANIFEST_FILE)
    files = [
        {
            "path": rel,
            "size": (report_dir / rel).stat().st_size,
            "sha256": sha256_file(report_dir / rel),
        }
        for rel in bundle_files(report_dir)
    ]
    path = report_dir / MANIFEST_FILE
    write_json(path, {"schema": MANIFEST_SCHEMA, "run_id": run_id, "files": files})
    return path


def verify_manifest(report_dir: Path) -> list[str]:
    """Every problem with the bundle, one line each; empty when it verifies.

    Raises `BundleError` when there is no readable manifest to check against.
    """
    if not report_dir.is_dir():
        raise BundleError(f"{report_dir}: no such directory")
    source = report_dir / MANIFEST_FILE
    data = read_json(source)
    entries = _entries(data, source)
    problems: list[str] = []
    listed: set[str] = set()
    for rel, size, digest in entries:
        # A vendor hands the bundle in: never let a listed path reach outside it.
        if not is_safe_relpath(rel):
            problems.append(f"invalid path: {rel!r}")
            continue
        listed.add(rel)
        path = report_dir / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif path.stat().st_size != size or sha256_file(path) != digest:
            problems.append(f"modified: {rel}")
    problems += [f"extra: {rel}" for rel in bundle_files(report_dir) if rel not in listed]
    if RESULTS_FILE not in listed:
        problems.append(f"not listed: {RESULTS_FILE} (a bundle must carry its results)")
    return problems


def _entries(data: Any, source: Path) -> list[tuple[str, int, str]]:
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise BundleError(f"{source}: unsupported schema {got!r} (expected {MANIFEST_SCHEMA!r})")
    try:
        return [(str(e["path"]), int(e["size"]), str(e["sha256"])) for e in data["files"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{source}: malformed manifest ({type(exc).__name__}: {exc})") from exc
