"""``python -m provisioners options [--markdown]``: every mode's options, from the registry.

The README's options table is this command's ``--markdown`` output (a test keeps them equal),
so it lists exactly what ``pytest --help`` shows: each flag, the modes that read it, its help
and default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from provisioners.contract.options import Option
from provisioners.contract.registry import Catalogue, catalogue, discover


def mode_options() -> Catalogue:
    """The options every registered mode declares (the harness's own are pytest's, not here)."""
    modes, _ = discover()
    return catalogue((), {name: mode.load() for name, mode in modes.items()})


def usage(opt: Option[Any]) -> str:
    """``--ray-vm-hosts A,B,...``; a switch has no value."""
    return opt.flag if opt.kind == "bool" else f"{opt.flag} {opt.metavar}"


def meaning(opt: Option[Any]) -> str:
    text = opt.help
    if opt.default not in (None, False, [], "") and "default" not in text:
        shown = f"{opt.default:g}" if isinstance(opt.default, float) else opt.default
        text += f" (default: {shown})"
    return text


def markdown(cat: Catalogue) -> str:
    rows = ["| flag | modes | meaning |", "|---|---|---|"]
    for name, opt in cat.options.items():
        cells = [f"`{usage(opt)}`", ", ".join(cat.owners.get(name, ())), meaning(opt)]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def plain(cat: Catalogue) -> str:
    return "".join(
        f"{usage(opt)}\n    [{', '.join(cat.owners.get(name, ()))}] {meaning(opt)}\n"
        for name, opt in cat.options.items()
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioners options",
        description="List the options the registered modes declare (each is a --ray-* flag)",
    )
    parser.add_argument("--markdown", action="store_true", help="As the README's table")
    args = parser.parse_args(argv)
    cat = mode_options()
    sys.stdout.write(markdown(cat) if args.markdown else plain(cat))
    for name, problem in cat.problems.items():
        sys.stderr.write(f"warning: mode {name!r} left out: {problem}\n")
    return 0
