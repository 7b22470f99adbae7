"""Options a mode declares next to its code; the plugin turns each into a ``--ray-*`` flag.

A mode (built-in or a vendor's) lists its settings as ``OPTIONS`` on its provisioner class::

    HOSTS = Option.csv("vm-hosts", "vm: existing hosts head,worker1,... instead of containers")

    class VmProvisioner:
        OPTIONS = (HOSTS, nodeimage.IMAGE, ...)
        def provision(self, spec):
            hosts = spec.get(HOSTS)  # typed: list[str]

The plugin adds ``--ray-vm-hosts`` with an ini twin ``ray_vm_hosts`` and the help text, parses
the value once in ``pytest_configure`` (a bad value is a ``UsageError`` naming the flag) and
hands the mode the typed value in ``ClusterSpec.options``. One declaration, one default. A mode
given with ``--ray-provisioner`` (not registered when flags are made) takes its declared
options as ``--ray-opt NAME=VALUE``; any other ``--ray-opt`` key is a usage error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

import yaml

T = TypeVar("T")

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
#: "string": one value; "bool": a flag without a value on the command line; "multi": repeatable.
OptionKind = Literal["string", "bool", "multi"]
OPTION_KINDS: tuple[str, ...] = get_args(OptionKind)

#: The longest any single bound may be (a day): anything longer is a typo, not a plan.
MAX_SECONDS = 86400.0


class OptionError(ValueError):
    """A value an option cannot take; the message says what was expected."""


@dataclass(frozen=True)
class Option(Generic[T]):
    """One setting: its name (``vm-hosts`` -> ``--ray-vm-hosts``), parser, default and help.

    ``parse`` turns the command-line or ini text into the typed value and raises ``ValueError``
    saying what it expected. Build options with the constructors below.
    """

    name: str
    help: str
    parse: Callable[[str], T] = field(compare=False)
    default: T
    kind: OptionKind = "string"
    metavar: str = "VALUE"

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"option name {self.name!r}: use lowercase words joined by dashes")
        if self.kind not in OPTION_KINDS:  # a vendor's mode is not type-checked
            raise ValueError(
                f"option {self.name!r}: kind {self.kind!r} is not one of {', '.join(OPTION_KINDS)}"
            )

    @property
    def flag(self) -> str:
        return f"--ray-{self.name}"

    @property
    def dest(self) -> str:
        """Its argparse dest and ini name: ``ray_vm_hosts``."""
        return "ray_" + self.name.replace("-", "_")

    @property
    def key(self) -> str:
        """Its ``--ray-opt`` key and its key in ``ClusterSpec.options``: ``vm_hosts``."""
        return self.name.replace("-", "_")

    def value(self, raw: Any) -> T:
        """The typed value of a command-line or ini ``raw``; ``None``/empty gives the default."""
        if raw is None or raw == "" or raw == []:
            return self.default
        if self.kind == "bool" and isinstance(raw, bool):
            return raw  # type: ignore[return-value]  # a store_true flag or an ini bool
        if self.kind == "multi":
            items = raw if isinstance(raw, list) else [raw]
            try:
                return [self.parse(str(v)) for v in items]  # type: ignore[return-value]
            except ValueError as exc:
                raise OptionError(f"{self.flag}: {exc}") from None
        try:
            return self.parse(str(raw).strip())
        except ValueError as exc:
            raise OptionError(f"{self.flag} {str(raw)!r}: {exc}") from None

    # Constructors --------------------------------------------------------------------------

    @staticmethod
    def string(name: str, help: str, default: str | None = None) -> Option[str | None]:
        return Option(name, help, str, default)

    @staticmethod
    def path(name: str, help: str) -> Option[Path | None]:
        """A path the run may create (an output directory)."""
        return Option(name, help, _path, None, metavar="PATH")

    @staticmethod
    def file(name: str, help: str) -> Option[Path | None]:
        """A file that must exist when the run starts (checked then, not when a mode reads it)."""
        return Option(name, help, _existing_file, None, metavar="PATH")

    @staticmethod
    def yaml_file(
        name: str, help: str, check: Callable[[dict[str, Any]], None] | None = None
    ) -> Option[Path | None]:
        """A YAML file holding a mapping, read and checked when the run starts.

        ``check`` raises ``ValueError`` saying what in the mapping is wrong.
        """

        def parse(text: str) -> Path:
            path = _existing_file(text)
            data = read_yaml_mapping(path)
            if check is not None:
                check(data)
            return path

        return Option(name, help, parse, None, metavar="PATH")

    @staticmethod
    def switch(name: str, help: str) -> Option[bool]:
        """A yes/no switch: ``--ray-NAME`` on the command line, ``true``/``false`` elsewhere."""
        return Option(name, help, parse_bool, False, kind="bool")

    @staticmethod
    def integer(
        name: str, help: str, default: int | None = None, *, minimum: int = 0
    ) -> Option[int | None]:
        return Option(name, help, lambda s: _int(s, minimum), default, metavar="N")

    @staticmethod
    def seconds(name: str, help: str, default: float) -> Option[float]:
        return Option(name, help, lambda s: _float(s, 0.1, MAX_SECONDS), default, metavar="SECONDS")

    @staticmethod
    def csv(name: str, help: str) -> Option[list[str]]:
        return Option(name, help, _csv, [], metavar="A,B,...")

    @staticmethod
    def size(name: str, help: str) -> Option[int | None]:
        """A byte size such as ``2g``, ``512m`` or ``1073741824``."""
        return Option(name, help, parse_size, None, metavar="SIZE")

    @staticmethod
    def choice(name: str, help: str, choices: Sequence[str], default: str) -> Option[str]:
        return Option(name, help, lambda s: _choice(s, choices), default, metavar="|".join(choices))


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str | int) -> int:
    """``"2g"`` -> 2147483648; a bare number is bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError("expected a size such as 512m, 2g or a number of bytes")
    return int(float(m[1]) * _UNITS[m[2].lower()])


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _existing_file(text: str) -> Path:
    path = _path(text)
    if not path.exists():
        raise ValueError("no such file")
    if path.is_dir():
        raise ValueError("is a directory, not a file")
    return path


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping a YAML file holds; ``ValueError`` saying in one line why it is not one."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a YAML mapping of keys (it holds {kind_of(data)})")
    return data


def kind_of(value: Any) -> str:
    """``a list``, ``a string``, ``nothing``: what a value is, for a message."""
    if value is None:
        return "nothing"
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def _int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    return value


def _float(text: str, minimum: float, maximum: float = math.inf) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    # nan compares false with everything and inf never ends a wait: both are typing mistakes.
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    if value < minimum:
        raise ValueError(f"must be at least {minimum:g}")
    if value > maximum:
        raise ValueError(f"must be at most {maximum:g}")
    return value


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _choice(text: str, choices: Sequence[str]) -> str:
    if text not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return text


def declared(provisioner_class: Any) -> tuple[Option[Any], ...]:
    """The options a provisioner class (or factory) declares, as its ``OPTIONS`` attribute."""
    options = getattr(provisioner_class, "OPTIONS", ())
    if not isinstance(options, tuple | list) or not all(isinstance(o, Option) for o in options):
        raise TypeError("OPTIONS must be a tuple of provisioners.contract.options.Option")
    return tuple(options)


def merge(groups: Iterable[tuple[str, Iterable[Option[Any]]]]) -> dict[str, Option[Any]]:
    """Options of several owners by name; one name declared two different ways is an error.

    Modes share options by sharing the object (``nodeimage.IMAGE``); two declarations that
    differ in help, kind or default would give one flag two meanings.
    """
    out: dict[str, Option[Any]] = {}
    owner: dict[str, str] = {}
    for who, options in groups:
        for opt in options:
            seen = out.get(opt.name)
            if seen is not None and (
                seen.kind,
                seen.default,
                seen.help,
            ) != (opt.kind, opt.default, opt.help):
                raise OptionError(
                    f"{opt.flag} is declared differently by {owner[opt.name]} and {who}"
                )
            out.setdefault(opt.name, opt)
            owner.setdefault(opt.name, who)
    return out
