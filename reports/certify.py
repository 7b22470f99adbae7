"""Certification: the product file (``target.yaml``), the profile a target must pass, the archive.

A vendor runs ``pytest --ray-certify target.yaml`` and submits one archive; a reviewer (or a bot)
runs ``python -m reports verify <archive> --certify``, which checks the written rules
(``rules.yaml``, their code in ``reports/rules.py``). Both sides read the profile, the supported
Ray releases and the flake allowance from here, so the bot never trusts the bundle's own idea of
what had to pass.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reports import schema
from reports.model import BundleError, Results, first_line
from reports.secrets import refuse_secrets

TARGET_FILE = "target.yaml"
#: The product file's fields, every one required: CNCF's ``PRODUCT.yaml`` (the Kubernetes
#: conformance program's), then what a Ray reviewer needs: the mode, Ray, KubeRay and platform.
#: Each field's form is the published schema's (``reports/schemas/target.schema.json``).
TARGET_FIELDS = (
    "vendor",
    "name",
    "version",
    "website_url",
    "documentation_url",
    "type",
    "description",
    "contact_email_address",
    "mode",
    "ray_version",
    "kuberay_version",
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

#: A Ray release as PyPI names it: X.Y.Z.
RELEASE = re.compile(r"\d+\.\d+\.\d+")
#: The written rules (``reports/rules.yaml``): the supported Ray releases, the flake allowance
#: and each rule's id and sentence. ``reports/rules.py`` holds the code of each rule.
RULES_FILE = Path(__file__).with_name("rules.yaml")


@dataclass(frozen=True)
class Rule:
    """One certification rule: its id and the sentence a reviewer reads."""

    id: str
    text: str


@dataclass(frozen=True)
class Policy:
    """What ``rules.yaml`` says: the supported releases (newest first), the allowance, the rules."""

    ray_releases: tuple[str, ...]
    max_flake_retries: int
    rules: tuple[Rule, ...]


@functools.cache
def policy(path: Path = RULES_FILE) -> Policy:
    """``rules.yaml``, checked for its shape (a broken file is this project's bug: it raises)."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    releases = tuple(str(v) for v in data["ray_releases"])
    allowance = int(data["max_flake_retries"])
    if not releases or not all(RELEASE.fullmatch(v) for v in releases):
        raise ValueError(f"{path}: ray_releases must be X.Y.Z versions, got {releases}")
    values = {"ray_releases": ", ".join(releases), "max_flake_retries": allowance}
    rules = tuple(
        Rule(str(r["id"]), " ".join(str(r["rule"]).split()).format(**values)) for r in data["rules"]
    )
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: rule ids must be unique, got {ids}")
    return Policy(releases, allowance, rules)


#: Known-flake retries (``known_flake_retries``) a profile check may need and still certify.
MAX_FLAKE_RETRIES = policy().max_flake_retries


def tox_suffix(release: str) -> str:
    """What the mode tox env's name gets to run on ``release``: "" for the lock's (the newest
    supported), else its ``-rayX.Y`` factor (``tox -e mode-ray2.59 -- --ray-modes docker``)."""
    if release == policy().ray_releases[0]:
        return ""
    return "-ray" + ".".join(release.split(".")[:2])


class TargetError(ValueError):
    """A ``target.yaml`` that is missing, malformed or incomplete; the message names the field."""


def read_target(path: Path) -> dict[str, Any]:
    """The product file as a mapping, fields unchecked; `TargetError` when it is no mapping."""
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
    return data


def load_target(path: Path) -> dict[str, str]:
    """The product file's fields, or `TargetError` naming every field that is wrong, at once.

    The rules are the published schema's (``reports/schemas/target.schema.json``).
    """
    data = read_target(path)
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
        elif error.validator in ("pattern", "enum"):
            wrong.append(f"field {field!r} must be {_expected(field)}, not {data[field]!r}")
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
    out += list(dict.fromkeys(wrong))
    out += [
        f"unknown field {name!r} (known: {', '.join(TARGET_FIELDS)})"
        for name in dict.fromkeys(unknown)
    ]
    return out


def _expected(field: str) -> str:
    """What a field must be, in words: its schema definition's description."""
    published = schema.document(schema.TARGET)
    prop = published["properties"][field]
    ref = str(prop.get("$ref", ""))
    found = published["$defs"][ref.rsplit("/", 1)[-1]] if ref else prop
    return str(found["description"])


def archive_path(report_dir: Path, mode: str, run_id: str) -> Path:
    """``ray-conformance-<mode>-<run-id>.tar.gz``, beside the report dir."""
    return report_dir.parent / f"ray-conformance-{mode}-{run_id}.tar.gz"


def write_archive(report_dir: Path, dest: Path) -> Path:
    """Pack ``report_dir`` (manifest written) into ``dest`` under one top-level directory.

    Refuses (:class:`~reports.secrets.SecretInReport`, naming the file) a dir holding a key.
    """
    refuse_secrets(
        report_dir,
        (p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*") if p.is_file()),
        dest.name,
    )
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


def used_programs(commands_log: Path) -> set[str]:
    """The programs the run's logged command lines started (``run`` and ``Background``)."""
    used: set[str] = set()
    try:
        lines = commands_log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return used
    for line in lines:
        _, sep, command = line.partition(": ")
        try:
            argv = shlex.split(command) if sep else []
        except ValueError:
            continue
        if argv:
            used.add(Path(argv[0]).name)
    return used


def profile_missing(results: Results, mode: str) -> list[str]:
    """A line for each profile check that did not run on ``mode``."""
    ran = {r.check for r in results.results if r.mode == mode}
    return [f"{check} [{mode}]: did not run" for check in PROFILE if check not in ran]


def profile_failures(results: Results, mode: str) -> list[str]:
    """A line for each profile case on ``mode`` that did not pass within the flake allowance."""
    problems: list[str] = []
    for r in results.results:
        if r.mode != mode or r.check not in PROFILE:
            continue
        retries = r.properties.get("known_flake_retries") or []
        if r.outcome != "passed":
            why = first_line(r.message)
            problems.append(f"{r.nodeid}: {r.outcome}" + (f" ({why})" if why else ""))
        elif len(retries) > MAX_FLAKE_RETRIES:
            problems.append(
                f"{r.nodeid}: {len(retries)} known-flake retries ({', '.join(map(str, retries))}),"
                f" more than the {MAX_FLAKE_RETRIES} a certified check may need"
            )
    return problems


def profile_problems(results: Results, mode: str) -> list[str]:
    """Every profile check must have run on ``mode``, passed, within the flake allowance."""
    return profile_missing(results, mode) + profile_failures(results, mode)
