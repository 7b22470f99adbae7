"""An example vendor mode: "Example Ray Service", which is Ray's processes on this machine.

A real vendor implements the ``Provisioner`` protocol (``provisioners/base.py``) against their
platform's API; this one reuses the built-in local mode for the cluster itself, and shows the
parts that are the vendor's own: a class found through the entry point, a declared option read
typed from the spec, and what the handle tells a person about the cluster.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from provisioners.base import ClusterHandle, ClusterSpec
from provisioners.local import LocalProvisioner
from provisioners.options import Option

#: ``--ray-example-zone`` on the command line, ``ray_example_zone`` in an ini file.
ZONE = Option.string("example-zone", "example: zone the service places the cluster in", "zone-a")


class ExampleProvisioner(LocalProvisioner):
    """The example service's clusters: local Ray nodes, labelled with the chosen zone."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (ZONE,)

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        handle = super().provision(spec)
        return replace(handle, access={**handle.access, "zone": spec.get(ZONE) or "default"})
