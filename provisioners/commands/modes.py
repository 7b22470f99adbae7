"""``python -m provisioners modes [--json]``: the registered modes, where each comes from."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from provisioners.options import declared
from provisioners.registry import discover


def listing() -> list[dict[str, Any]]:
    """Each registered mode: name, ``module:Class``, its flags, and why it cannot load (if so)."""
    modes, _ = discover()
    out = []
    for name, mode in modes.items():
        loaded = mode.load()
        try:
            flags = [o.flag for o in declared(loaded.factory)] if loaded.factory else []
            error = loaded.load_error
        except TypeError as exc:  # a malformed OPTIONS: the mode cannot run
            flags, error = [], str(exc)
        out.append({"name": name, "source": mode.source, "options": flags, "error": error})
    return out


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioners modes",
        description="List the registered deployment modes (entry points ray_conformance.provisioners)",
    )
    parser.add_argument("--json", action="store_true", help="As a JSON list (for CI matrices)")
    args = parser.parse_args(argv)
    found = listing()
    if args.json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
    else:
        for m in found:
            sys.stdout.write(
                f"{m['name']:15} {m['source']}" + (f"  ({m['error']})" if m["error"] else "") + "\n"
            )
    return 0
