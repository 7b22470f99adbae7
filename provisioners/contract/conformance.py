"""One conformance check for every mode, built-in or a vendor's: what it claims, it implements.

The suites probe abilities with ``isinstance`` against runtime-checkable Protocols, which look
only for the names. A method whose parameters drifted from the contract, or an ability
implemented in part, would surface as a TypeError deep in a check or as a check silently
skipped. :func:`drift` finds both when the mode loads, so the mode is SKIPPED naming the method
and both signatures instead.
"""

from __future__ import annotations

import inspect
from typing import Any

from provisioners.contract import base

#: Every contract a mode can meet: the Provisioner lifecycle, then each optional ability.
CONTRACTS: tuple[type, ...] = tuple(
    obj
    for obj in vars(base).values()
    if isinstance(obj, type) and getattr(obj, "_is_runtime_protocol", False)
)


def members(contract: type) -> list[str]:
    """The methods a contract declares, in declaration order."""
    return [name for name, v in vars(contract).items() if callable(v) and not name.startswith("_")]


def _params(fn: Any) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def _mismatch(want: Any, have: Any) -> bool:
    """True when ``have`` cannot be called as ``want`` is declared: each declared parameter by
    the same name and kind; any extra one optional."""
    theirs = {p.name: p for p in _params(have)}
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in theirs.values()):
        return False  # takes whatever it is given
    for p in _params(want):
        if p.name not in theirs or theirs.pop(p.name).kind != p.kind:
            return True
    return any(p.default is p.empty for p in theirs.values())


def drift(cls: type) -> list[str]:
    """How ``cls`` departs from the contracts it claims; empty when it conforms.

    It claims ``Provisioner`` always, and an ability when it has any of its methods.
    """
    found = []
    for contract in CONTRACTS:
        names = members(contract)
        have = [n for n in names if callable(getattr(cls, n, None))]
        if not have and contract is not base.Provisioner:
            continue
        lacking = [n for n in names if n not in have]
        if lacking:
            found.append(
                f"{contract.__name__} without {', '.join(lacking)}"
                + (f" (it has {', '.join(have)})" if have else "")
            )
        for n in have:
            want, theirs = getattr(contract, n), getattr(cls, n)
            if _mismatch(want, theirs):
                found.append(
                    f"{n}{_signature(theirs)} where {contract.__name__} declares {n}{_signature(want)}"
                )
    return found


def _signature(fn: Any) -> str:
    return "(" + ", ".join(str(p).split(":")[0] for p in _params(fn)) + ")"
