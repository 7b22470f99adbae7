"""Finds deployment modes: built-ins and vendors' alike, from one entry-point group.

``--ray-provisioner [NAME=]module:Class`` adds a class not yet packaged. A mode that fails to
load is kept, with its error, so the harness can SKIP it with that reason instead of crashing.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "ray_conformance.provisioners"

_SPEC_RE = re.compile(
    r"^(?:(?P<name>[a-z0-9][a-z0-9_.-]*)=)?(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)$"
)


class RegistryError(ValueError):
    """A malformed ``--ray-provisioner`` value."""


@dataclass(frozen=True)
class Mode:
    """A deployment mode: its name, where it comes from, and how to make its provisioner."""

    name: str
    source: str  # "module:Class", for messages
    factory: Callable[[], Any] | None = None
    load_error: str = ""  # why it could not be loaded; the mode is then SKIPPED with this

    def create(self) -> Any:
        if self.factory is None:
            raise RuntimeError(f"{self.name}: {self.load_error}")
        return self.factory()


def _resolve(module: str, attr: str) -> Callable[[], Any]:
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{module}:{attr} is not a class or factory")
    return obj  # type: ignore[no-any-return]


def _load(name: str, source: str, loader: Callable[[], Callable[[], Any]]) -> Mode:
    try:
        return Mode(name, source, loader())
    except Exception as exc:  # a vendor's broken package must not take the whole run down
        return Mode(name, source, None, f"cannot load {source}: {type(exc).__name__}: {exc}")


def default_name(attr: str) -> str:
    """``FakeProvisioner`` -> ``fake``: the mode name when ``--ray-provisioner`` gives none."""
    base = attr.rsplit(".", 1)[-1]
    if base.endswith("Provisioner") and base != "Provisioner":
        base = base[: -len("Provisioner")]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", base).lower()


def parse_provisioner_option(value: str) -> tuple[str, str, str]:
    """``[NAME=]module:Class`` -> (name, module, attr); RegistryError saying the form if not."""
    m = _SPEC_RE.match(value.strip())
    if not m:
        raise RegistryError(
            f"--ray-provisioner {value!r} is not of the form [NAME=]module:Class "
            "(for example mycloud=mycloud_rc.provisioner:MyCloudProvisioner)"
        )
    return (m["name"] or default_name(m["attr"])), m["module"], m["attr"]


def discover(extra: list[str] | None = None) -> tuple[dict[str, Mode], list[str]]:
    """All modes, in registration order, and warnings (duplicate names, load failures).

    Entry points first (sorted by name for a stable order), then ``--ray-provisioner`` values,
    which override an entry point of the same name with a warning.
    """
    modes: dict[str, Mode] = {}
    warnings: list[str] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in modes:
            if modes[ep.name].source != ep.value:
                warnings.append(
                    f"mode {ep.name!r} is registered twice ({modes[ep.name].source} and {ep.value}); "
                    f"using {modes[ep.name].source}"
                )
            continue
        modes[ep.name] = _load(ep.name, ep.value, ep.load)
    for value in extra or []:
        name, module, attr = parse_provisioner_option(value)
        source = f"{module}:{attr}"
        if name in modes:
            warnings.append(
                f"--ray-provisioner {value} replaces the registered mode {name!r} ({modes[name].source})"
            )
        modes[name] = _load(name, source, lambda m=module, a=attr: _resolve(m, a))  # type: ignore[misc]
    for mode in modes.values():
        if mode.load_error:
            warnings.append(f"mode {mode.name!r} will be skipped: {mode.load_error}")
    return modes, warnings
