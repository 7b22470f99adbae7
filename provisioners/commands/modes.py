"""``python -m provisioners modes [--json | --matrix]``: the registered modes, where each comes
from, and the nightly matrix they make (each mode's ``NIGHTLY`` runs)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from provisioners.contract.base import RUNNERS, NightlyRun, nightly_runs
from provisioners.contract.options import declared
from provisioners.contract.registry import discover


@dataclass(frozen=True)
class _Found:
    name: str
    source: str  # "module:Class"
    flags: list[str]
    runs: tuple[NightlyRun, ...]
    error: str  # why the mode cannot run: it cannot load, or declares OPTIONS or NIGHTLY wrong


def _found() -> list[_Found]:
    modes, _ = discover()
    out = []
    for name, mode in modes.items():
        loaded = mode.load()
        flags: list[str] = []
        runs: tuple[NightlyRun, ...] = ()
        error = loaded.load_error
        if loaded.factory is not None:
            try:
                flags = [o.flag for o in declared(loaded.factory)]
                runs = nightly_runs(loaded.factory)
            except TypeError as exc:
                flags, runs, error = [], (), str(exc)
        out.append(_Found(name, mode.source, flags, runs, error))
    return out


def listing() -> list[dict[str, Any]]:
    """Each registered mode: name, ``module:Class``, its flags, its nightly runs' names, and why
    it cannot run (if so)."""
    return [
        {
            "name": m.name,
            "source": m.source,
            "options": m.flags,
            "nightly": [run.named(m.name) for run in m.runs],
            "error": m.error,
        }
        for m in _found()
    ]


def matrix() -> tuple[dict[str, list[dict[str, str]]], list[str]]:
    """The nightly matrix: runner -> its runs (``mode``, ``name``, ``args``), in registration
    order; and, for each mode or run left out, why."""
    out: dict[str, list[dict[str, str]]] = {runner: [] for runner in RUNNERS}
    errors: list[str] = []
    owner: dict[str, str] = {}  # run name -> its mode: the name names a job and an artifact
    for m in _found():
        if m.error:
            errors.append(f"mode {m.name!r} is left out of the nightly: {m.error}")
        for run in m.runs:
            name = run.named(m.name)
            if name in owner:
                errors.append(
                    f"mode {m.name!r}: its nightly run {name!r} is left out: "
                    f"mode {owner[name]!r} has a run of that name"
                )
                continue
            owner[name] = m.name
            out[run.runner].append({"mode": m.name, "name": name, "args": " ".join(run.args)})
    return out, errors


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioners modes",
        description="List the registered deployment modes (entry points ray_conformance.provisioners)",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="As a JSON list")
    form.add_argument(
        "--matrix",
        action="store_true",
        help="The nightly matrix, one line of JSON: runner -> [{mode, name, args}]; "
        "exits 1 naming each mode left out",
    )
    args = parser.parse_args(argv)
    if args.matrix:
        runs, errors = matrix()
        sys.stdout.write(json.dumps(runs, separators=(",", ":")) + "\n")
        for error in errors:
            sys.stderr.write(error + "\n")
        return 1 if errors else 0
    found = listing()
    if args.json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
    else:
        for m in found:
            sys.stdout.write(
                f"{m['name']:15} {m['source']}" + (f"  ({m['error']})" if m["error"] else "") + "\n"
            )
    return 0
