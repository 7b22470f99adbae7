"""``python -m provisioners COMMAND``: the project's commands that are not pytest runs.

Each command is a module with ``main(argv) -> int``; this table is the only wiring.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "prepare": ("provisioners.prepare", "build the images and tools the modes need (cached)"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        out = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        if argv and argv[0] not in ("-h", "--help"):
            out.write(f"unknown command {argv[0]!r}\n")
        out.write("usage: python -m provisioners COMMAND [ARGS]\n\ncommands:\n")
        for name, (_module, summary) in COMMANDS.items():
            out.write(f"  {name:<10} {summary}\n")
        return 0 if out is sys.stdout else 2
    module, _summary = COMMANDS[argv[0]]
    code: int = importlib.import_module(module).main(argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
