"""The one code path that drives Ray's cluster launcher (``ray up`` / ``exec`` / ``down``).

Split by job: :mod:`.config` renders and validates the cluster YAML, :mod:`.ssh` reaches nodes,
:mod:`.cli` runs the ``ray`` CLI and its helpers, and :mod:`.driver` is the ``ray up`` deployer:
the whole sequence and teardown order, given the machine source of a launcher mode (``vm``,
``autoscale``, the clouds).
"""

from provisioners.deployers.launcher.cli import Launcher
from provisioners.deployers.launcher.config import CLUSTER_YAML, LAUNCHER_CONFIG
from provisioners.deployers.launcher.driver import (
    GCS_PORT,
    DirectMachineSource,
    Machine,
    MachineSource,
    MachineSourceBase,
    RayUpMode,
    RayUpRun,
    SshMachineSource,
    SshRayUpMode,
)
from provisioners.deployers.launcher.ssh import SshTarget, generate_key, wait_for_ssh

__all__ = [
    "CLUSTER_YAML",
    "GCS_PORT",
    "LAUNCHER_CONFIG",
    "DirectMachineSource",
    "Launcher",
    "Machine",
    "MachineSource",
    "MachineSourceBase",
    "RayUpMode",
    "RayUpRun",
    "SshMachineSource",
    "SshRayUpMode",
    "SshTarget",
    "generate_key",
    "wait_for_ssh",
]
