"""``python -m provisioners <command> [args]``: the harness's commands that are not pytest runs.

Each command is a module with ``main(argv) -> int``; this table only names them.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "options": "provisioners.commands.options",  # the modes' options (--markdown: README's table)
    "modes": "provisioners.commands.modes",  # the registered modes (--json)
}


def main(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        return int(importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]))
    sys.stderr.write(f"usage: python -m provisioners {{{','.join(COMMANDS)}}} ...\n")
    if argv and argv[0] not in ("-h", "--help"):
        sys.stderr.write(f"error: unknown command {argv[0]!r}\n")
        return 2
    return 0 if argv else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
