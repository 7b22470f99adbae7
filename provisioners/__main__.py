"""``python -m provisioners COMMAND``: the project's commands that are not pytest runs.

Each command is a module with ``main(argv) -> int``; this table is the only wiring.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "prepare": (
        "provisioners.commands.prepare",
        "build the images and tools the modes need (cached)",
    ),
    "sweep": ("provisioners.commands.sweep", "find and remove what earlier (killed) runs left"),
    "options": ("provisioners.commands.options", "the modes' options (--markdown: README's table)"),
    "modes": ("provisioners.commands.modes", "the registered modes (--json)"),
}


def main(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        module, _summary = COMMANDS[argv[0]]
        return int(importlib.import_module(module).main(argv[1:]))
    asked = bool(argv) and argv[0] in ("-h", "--help")
    out = sys.stdout if asked else sys.stderr
    out.write(f"usage: python -m provisioners {{{','.join(COMMANDS)}}} ...\n")
    if argv and not asked:
        out.write(f"error: unknown command {argv[0]!r}\n")
        return 2
    for name, (_module, summary) in COMMANDS.items():
        out.write(f"  {name:<10} {summary}\n")
    return 0 if asked else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
