"""Mode ``local``: a Ray cluster of processes on this machine (``ray start`` head + workers).

A composition: the ``ray start`` deployer (:mod:`provisioners.deployers.raystart`) given
:class:`LocalHosts` (:mod:`provisioners.sources.local`, whose docstring tells the mode's whole
story).
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.options import Option
from provisioners.deployers.raystart import RayStartMode
from provisioners.sources.local import LOCAL_WORKERS, LocalHosts


class LocalProvisioner(RayStartMode):
    """Head and ``--ray-workers`` nodes as local processes (``ray start`` on :class:`LocalHosts`)."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = LocalHosts.OPTIONS

    def __init__(self) -> None:
        super().__init__(LocalHosts(), default_workers=LOCAL_WORKERS)
