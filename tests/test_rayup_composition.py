"""The ``ray up`` modes are compositions: the deployer given a machine source, nothing else.

Each mode class may hold ``__init__`` (which hands the deployer its source), its declarations
(``OPTIONS``, ``NIGHTLY``) and one-line delegations for its optional abilities; it overrides no
step of the deployer. Its source satisfies the source Protocol of the deployer that takes it.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import pytest

from provisioners.contract import base
from provisioners.deployers.launcher import (
    DirectMachineSource,
    MachineSource,
    RayUpMode,
    RayUpRun,
    SshMachineSource,
    SshRayUpMode,
)
from provisioners.deployers.launcher.driver import RayUpDriver
from provisioners.modes.autoscale import AutoscaleProvisioner
from provisioners.modes.aws import AwsProvisioner
from provisioners.modes.ibm import IbmProvisioner
from provisioners.modes.vm import VmProvisioner
from provisioners.sources.aws import AwsMachines
from provisioners.sources.fake_provider import AutoscaleMachines
from provisioners.sources.ibm import IbmMachines
from provisioners.sources.vm import VmMachines

MODES: dict[type[Any], tuple[type[Any], type[Any], type[Any]]] = {
    # mode: (deployer, source class, the source Protocol that deployer takes)
    VmProvisioner: (SshRayUpMode, VmMachines, SshMachineSource),
    AwsProvisioner: (SshRayUpMode, AwsMachines, SshMachineSource),
    IbmProvisioner: (SshRayUpMode, IbmMachines, SshMachineSource),
    AutoscaleProvisioner: (RayUpMode, AutoscaleMachines, DirectMachineSource),
}
DECLARATIONS = {"OPTIONS", "NIGHTLY"}
#: What Python itself puts on a subclass of an abc.ABC (the deployer is one).
MACHINERY = {"_abc_impl"}
#: Methods of the optional abilities (base.Supports*) and the cloud modes' instance listing.
ABILITIES = {
    name
    for proto in vars(base).values()
    if inspect.isclass(proto) and proto.__name__.startswith("Supports")
    for name in vars(proto)
    if not name.startswith("_")
} | {"cloud_instances"}


# mypy checks these: a source that drifts from its Protocol fails the build.
def _vm(s: VmMachines) -> SshMachineSource:
    return s


def _aws(s: AwsMachines) -> SshMachineSource:
    return s


def _ibm(s: IbmMachines) -> SshMachineSource:
    return s


def _autoscale(s: AutoscaleMachines) -> DirectMachineSource:
    return s


def _members(proto: type[Any]) -> set[str]:
    """The names a Protocol declares, its bases' included (methods and class variables)."""
    names: set[str] = set()
    for cls in proto.__mro__:
        if cls is object or not getattr(cls, "_is_protocol", False):
            continue
        names |= {n for n in vars(cls) if not n.startswith("_")}
        names |= set(getattr(cls, "__annotations__", {}))
    return names


@pytest.mark.parametrize("mode", list(MODES), ids=lambda m: m.__name__)
def test_the_mode_is_its_deployer_given_a_source_and_overrides_no_step(mode: type[Any]) -> None:
    deployer, source_class, _ = MODES[mode]
    assert issubclass(mode, deployer)
    instance = mode()
    assert type(instance.source) is source_class
    own = {n for n in vars(mode) if not (n.startswith("__") and n.endswith("__"))} - MACHINERY
    steps = {n for cls in deployer.__mro__ if cls is not object for n in vars(cls)}
    extra = own - DECLARATIONS - ABILITIES
    assert not extra, f"{mode.__name__} has methods that are no ability: {sorted(extra)}"
    overridden = own & steps - {"OPTIONS"}
    assert not overridden, f"{mode.__name__} overrides deployer steps: {sorted(overridden)}"
    assert "__init__" in vars(mode)  # where the source is handed over
    assert mode.OPTIONS == source_class.OPTIONS


@pytest.mark.parametrize("mode", list(MODES), ids=lambda m: m.__name__)
def test_each_ability_is_a_one_line_delegation_or_a_declared_fact(mode: type[Any]) -> None:
    for name in sorted(set(vars(mode)) & ABILITIES):
        tree = ast.parse(textwrap.dedent(inspect.getsource(vars(mode)[name])))
        func = tree.body[0]
        assert isinstance(func, ast.FunctionDef)
        body = [s for s in func.body if not isinstance(s, ast.Expr)]  # a docstring may stay
        assert len(body) == 1, (mode.__name__, name)
        assert isinstance(body[0], ast.Return), (mode.__name__, name)
        value = body[0].value
        if isinstance(value, ast.Constant):
            continue  # a fact of the mode (recovers_head: False)
        assert isinstance(value, ast.Call), (mode.__name__, name)
        target = value.func
        assert isinstance(target, ast.Attribute), (mode.__name__, name)
        assert ast.unparse(target.value) == "self.source", (
            f"{mode.__name__}.{name} does not delegate to its source: {ast.unparse(value)}"
        )


@pytest.mark.parametrize("mode", list(MODES), ids=lambda m: m.__name__)
def test_the_source_satisfies_its_protocol_and_holds_no_deployer(mode: type[Any]) -> None:
    _, source_class, proto = MODES[mode]
    instance = mode()
    source = instance.source
    missing = sorted(n for n in _members(proto) if not hasattr(source, n))
    assert not missing, f"{source_class.__name__} lacks {missing} of {proto.__name__}"
    assert _members(MachineSource) <= _members(proto)
    held = [
        k for k, v in vars(source).items() if isinstance(v, (RayUpDriver, RayUpRun, SshRayUpMode))
    ]
    assert not held, f"{source_class.__name__} keeps its deployer in {held}"


def test_only_the_ssh_deployer_has_the_ssh_abilities() -> None:
    """The fixtures check these abilities with isinstance: a mode without SSH must lack them."""
    for mode, (deployer, _, _) in MODES.items():
        ssh = deployer is SshRayUpMode
        assert isinstance(mode(), base.SupportsLauncher) is ssh, mode.__name__
        assert isinstance(mode(), base.SupportsNodeExec) is ssh, mode.__name__
