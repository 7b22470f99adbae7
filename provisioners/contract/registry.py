"""Finds deployment modes: built-ins and vendors' alike, from one entry-point group.

``--ray-provisioner [NAME=]module:Class`` adds a class not yet packaged. A mode that fails to
load is kept, with its error, so the harness can SKIP it with that reason instead of crashing
(or, when the user named it, stop with that reason). :func:`catalogue` gathers the options the
loaded modes declare, which the plugin turns into flags.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

from provisioners.contract.conformance import drift
from provisioners.contract.options import Option, OptionError, declared, merge

ENTRY_POINT_GROUP = "ray_conformance.provisioners"

_SPEC_RE = re.compile(
    r"^(?:(?P<name>[a-z0-9][a-z0-9_.-]*)=)?(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)$"
)


class RegistryError(ValueError):
    """A malformed ``--ray-provisioner`` value."""


@dataclass(frozen=True)
class Mode:
    """A deployment mode: its name, where it comes from, and how to make its provisioner.

    Found without importing anything; ``load()`` imports it. The plugin imports a mode when a
    run selects it or lists it (``--help``, no ``--ray-modes``, a flag only an unselected mode
    may declare); a mode that fails to load keeps its error and costs a run that does not
    select it nothing.
    """

    name: str
    source: str  # "module:Class", for messages
    loader: Callable[[], Callable[[], Any]] | None = field(default=None, compare=False)
    factory: Callable[[], Any] | None = None
    load_error: str = ""  # why it could not be loaded; the mode is then SKIPPED with this

    def load(self) -> Mode:
        """This mode imported: with its factory, or with the error that stopped the import."""
        if self.factory is not None or self.load_error or self.loader is None:
            return self
        try:
            factory = self.loader()
        except Exception as exc:  # a vendor's broken package must not take the whole run down
            return replace(
                self, load_error=f"cannot load {self.source}: {type(exc).__name__}: {exc}"
            )
        departs = drift(factory) if isinstance(factory, type) else []
        if departs:
            return replace(
                self, load_error=f"{self.source} does not meet its contract: {'; '.join(departs)}"
            )
        return replace(self, factory=factory)

    def create(self) -> Any:
        loaded = self.load()
        if loaded.factory is None:
            raise RuntimeError(f"{self.name}: {loaded.load_error}")
        return loaded.factory()


def _resolve(module: str, attr: str) -> Callable[[], Any]:
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{module}:{attr} is not a class or factory")
    return obj  # type: ignore[no-any-return]


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
    """All modes (not yet imported), in registration order, and warnings about duplicate names.

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
        modes[ep.name] = Mode(ep.name, ep.value, ep.load)
    for value in extra or []:
        name, module, attr = parse_provisioner_option(value)
        source = f"{module}:{attr}"
        if name in modes:
            warnings.append(
                f"--ray-provisioner {value} replaces the registered mode {name!r} ({modes[name].source})"
            )
        modes[name] = Mode(name, source, lambda m=module, a=attr: _resolve(m, a))  # type: ignore[misc]
    return modes, warnings


@dataclass(frozen=True)
class Catalogue:
    """Every option a run knows: the harness's first, then each loaded mode's, merged by name."""

    options: Mapping[str, Option[Any]]
    owners: Mapping[str, tuple[str, ...]]  # option name -> the modes declaring it
    #: mode -> why its options were left out (a malformed ``OPTIONS``, or a name it declares
    #: differently from the harness or an earlier mode); such a mode cannot run.
    problems: Mapping[str, str]


def catalogue(harness: Iterable[Option[Any]], modes: Mapping[str, Mode]) -> Catalogue:
    """The options of ``harness`` and of every loaded mode in ``modes`` (in their order).

    A shared option is one object (``nodeimage.IMAGE``), so it merges into one flag; a mode
    whose declaration clashes is left out with the reason instead of failing every run.
    """
    groups: list[tuple[str, tuple[Option[Any], ...]]] = [("the harness", tuple(harness))]
    owners: dict[str, tuple[str, ...]] = {}
    problems: dict[str, str] = {}
    for name, mode in modes.items():
        if mode.factory is None:
            continue
        try:
            options = declared(mode.factory)
            merge([*groups, (f"mode {name!r}", options)])
        except (TypeError, OptionError) as exc:
            problems[name] = f"its OPTIONS cannot be used: {exc}"
            continue
        groups.append((f"mode {name!r}", options))
        for opt in options:
            owners[opt.name] = (*owners.get(opt.name, ()), name)
    return Catalogue(merge(groups), owners, problems)
