"""Certification: the product file (``target.yaml``), the profile a target must pass, the archive.

A vendor runs ``pytest --ray-certify target.yaml`` and submits one archive; a reviewer (or a bot)
runs ``python -m reports verify <archive> --certify``. Both sides read the rules from here, so
the bot does not trust the bundle's own idea of what had to pass.
"""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from reports import schema
from reports.model import BundleError, Results, first_line, load_results
from reports.secrets import refuse_secrets

TARGET_FILE = "target.yaml"
#: The product file's fields, every one required and a non-empty string (the conformance
#: program's ``PRODUCT.yaml``, plus what a Ray reviewer needs: mode, Ray and platform versions).
TARGET_FIELDS = (
    "vendor",
    "product",
    "product_version",
    "website",
    "contact",
    "mode",
    "ray_version",
    "platform_version",
)
#: Where a certification run puts what only it records: tool versions, the commands run.
CERTIFY_DIR = "certification"
TOOLS_FILE = f"{CERTIFY_DIR}/tools.json"
COMMANDS_FILE = f"{CERTIFY_DIR}/commands.log"

#: The marker on every check of the profile (``suites/``); a test keeps it equal to PROFILE.
PROFILE_MARKER = "ray_certification"
#: The checks every mode must pass to be certified (function names; parametrized ones count
#: once per case). Shared, mode-agnostic and needing no optional ability.
PROFILE = (
    "test_spread_from_outside_every_node_runs_work",
    "test_spread_from_inside_every_node_runs_work",
    "test_port_forward_reachable_on_loopback_then_freed",
    "test_port_forward_client_session_opens",
    "test_dashboard_version_matches_cluster",
    "test_dashboard_nodes_match_expected",
    "test_dashboard_job_succeeds_with_logs",
    "test_preflight_ray_version_matches_client",
    "test_preflight_python_minor_matches_client",
    "test_inventory_sees_the_running_cluster",
    "test_teardown_leaves_nothing_behind",
)
#: Known-flake retries (``known_flake_retries``) a profile check may need and still certify:
#: one retry is Ray's bug showing; more is a platform on which Ray Client is not dependable.
MAX_FLAKE_RETRIES = 1


class TargetError(ValueError):
    """A ``target.yaml`` that is missing, malformed or incomplete; the message names the field."""


def load_target(path: Path) -> dict[str, str]:
    """The product file's fields, or `TargetError` naming every field that is wrong, at once.

    The rules are the published schema's (``reports/schemas/target.schema.json``).
    """
    try:
        data: Any = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise TargetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise TargetError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    except yaml.YAMLError as exc:
        raise TargetError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected a mapping of {', '.join(TARGET_FIELDS)}")
    problems = target_problems(data)
    if problems:
        raise TargetError(f"{path}: " + "; ".join(problems))
    return {name: str(data[name]).strip() for name in TARGET_FIELDS}


def target_problems(data: dict[str, Any]) -> list[str]:
    """What is wrong with a product file's fields, one phrase each, in field order."""
    missing, wrong, unknown = [], [], []
    for error in schema.errors(schema.TARGET, data):
        field = str(error.path[0]) if error.path else ""
        if error.validator == "required":
            missing += [name for name in TARGET_FIELDS if name not in data]
        elif error.validator == "additionalProperties":
            unknown += sorted(set(data) - set(TARGET_FIELDS))
        elif data.get(field) is None or str(data.get(field)).strip() == "":
            missing.append(field)
        else:
            wrong.append(f"field {field!r} must be a string, not {type(data[field]).__name__}")
    absent = [name for name in TARGET_FIELDS if name in missing]  # field order, each once
    out = (
        [f"field {absent[0]!r} is missing or empty"]
        if len(absent) == 1
        else [f"fields {', '.join(map(repr, absent))} are missing or empty"]
        if absent
        else []
    )
    out += wrong
    out += [
        f"unknown field {name!r} (known: {', '.join(TARGET_FIELDS)})"
        for name in dict.fromkeys(unknown)
    ]
    return out


def archive_path(report_dir: Path, mode: str, run_id: str) -> Path:
    """``ray-conformance-<mode>-<run-id>.tar.gz``, beside the report dir."""
    return report_dir.parent / f"ray-conformance-{mode}-{run_id}.tar.gz"


def write_archive(report_dir: Path, dest: Path) -> Path:
    """Pack ``report_dir`` (manifest written) into ``dest`` under one top-level directory.

    Refuses (:class:`~reports.secrets.SecretInReport`, naming the file) a dir holding a key.
    """
    refuse_secrets(report_dir, (p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*") if p.is_file()), dest.name)  # fmt: skip
    top = dest.name.removesuffix(".tar.gz")
    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(report_dir, arcname=top)
    tmp.replace(dest)  # never half an archive under the name a vendor submits
    return dest


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Path]:
    """The bundle at ``path`` as a directory: itself, or an archive unpacked to a temporary one."""
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise BundleError(f"{path}: no such directory or archive")
    with tempfile.TemporaryDirectory(prefix="ray-conformance-") as tmp:
        try:
            with tarfile.open(path, "r:*") as tar:
                # The "data" filter refuses absolute paths, links out and devices: the archive
                # comes from outside.
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{path}: not a readable archive ({exc})") from None
        tops = list(Path(tmp).iterdir())
        if len(tops) != 1 or not tops[0].is_dir():
            raise BundleError(f"{path}: expected one top-level directory in the archive")
        yield tops[0]


def certify_problems(bundle: Path) -> list[str]:
    """What keeps the bundle from certifying its target, one line each; empty when it does."""
    try:
        target = load_target(bundle / TARGET_FILE)
    except TargetError as exc:
        return [str(exc).replace(str(bundle / TARGET_FILE), TARGET_FILE)]
    results = load_results(bundle)
    return _version_problems(results, target) + profile_problems(results, target["mode"])


def _version_problems(results: Results, target: dict[str, str]) -> list[str]:
    # The product file states the Ray the platform runs; the cluster the run met must agree.
    record = next((m for m in results.modes if m.get("mode") == target["mode"]), {})
    seen = (record.get("handle") or {}).get("ray_version")
    if seen and str(seen) != target["ray_version"]:
        return [
            f"{TARGET_FILE}: ray_version {target['ray_version']!r}, but the cluster ran Ray {seen}"
        ]
    return []


def profile_problems(results: Results, mode: str) -> list[str]:
    """Every profile check must have run on ``mode``, passed, within the flake allowance."""
    problems: list[str] = []
    for check in PROFILE:
        cases = [r for r in results.results if r.check == check and r.mode == mode]
        if not cases:
            problems.append(f"{check} [{mode}]: did not run")
        for r in cases:
            retries = r.properties.get("known_flake_retries") or []
            if r.outcome != "passed":
                first = first_line(r.message)
                problems.append(f"{r.nodeid}: {r.outcome} {first}".rstrip())
            elif len(retries) > MAX_FLAKE_RETRIES:
                problems.append(
                    f"{r.nodeid}: {len(retries)} known-flake retries ({', '.join(map(str, retries))}),"
                    f" more than the {MAX_FLAKE_RETRIES} a certified check may need"
                )
    return problems
