"""Mode ``kind-rayup``: the book's ``ray up raycluster.yaml`` on a kind cluster.

Ray's ``kubernetes`` node provider, which that path needs, was removed after Ray 2.1.0 (KubeRay
replaced it); the installed Ray's own provider table says whether ``ray up`` can target
Kubernetes. Where it cannot, the mode is SKIPPED with that reason and a pointer to
``kind-operator``. The book's cluster YAML is still rendered here (``templates/kind-rayup.yaml``)
and :func:`legacy_schema_errors` checks it against the schema of the last Ray release with the
provider, read from that release's wheel (downloaded with ``pip download --no-deps``, never
installed), so the file stays right for users who pin that Ray.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from provisioners.contract.base import (
    DEFAULT_WORKERS,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    NightlyRun,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.deployers.launcher.config import load_template
from provisioners.util import nodeimage
from provisioners.util.runner import CommandError, CommandTimeout, pip_download

#: The last Ray release whose ``ray up`` had a ``kubernetes`` provider (2.2.0 dropped it).
LEGACY_RAY = "2.1.0"
#: 2.1.0 has no wheel for this project's Python; the schema file is the same in every wheel.
LEGACY_PYTHON = "3.9"
SCHEMA_IN_WHEEL = "ray/autoscaler/ray-schema.json"
NAMESPACE = "ray"
HEAD_SERVICE = "ray-ray-head"


def kubernetes_provider() -> bool:
    """True when the installed Ray's ``ray up`` knows a ``kubernetes`` node provider."""
    from ray.autoscaler._private.providers import _NODE_PROVIDERS

    return "kubernetes" in _NODE_PROVIDERS


def render(
    image: str, workers: int = DEFAULT_WORKERS, ray_version: str = LEGACY_RAY
) -> dict[str, Any]:
    """The book's cluster YAML for ``ray up``: namespace ``ray``, head and worker node types."""
    config = load_template("kind-rayup.yaml", {"image": image})
    config["max_workers"] = workers
    worker = config["available_node_types"]["worker_node"]
    worker["min_workers"] = worker["max_workers"] = workers
    config["setup_commands"] = [
        f"python -c \"import ray; assert ray.__version__ == '{ray_version}', ray.__version__\""
    ]
    return config


def legacy_wheel(timeout: float) -> Path:
    """Ray 2.1.0's wheel, downloaded once into the cache (``pip download --no-deps``)."""
    dest = nodeimage.cache_dir() / "legacy-ray" / LEGACY_RAY
    found = sorted(dest.glob(f"ray-{LEGACY_RAY}-*.whl"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    try:
        pip_download(
            [
                f"ray=={LEGACY_RAY}",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                LEGACY_PYTHON,
                "-d",
                str(dest),
            ],
            timeout,
            what=f"pip download ray=={LEGACY_RAY}",
        )
    except (CommandError, CommandTimeout) as exc:
        raise ProvisionError(str(exc)) from None
    found = sorted(dest.glob(f"ray-{LEGACY_RAY}-*.whl"))
    if not found:
        raise ProvisionError(f"pip download ray=={LEGACY_RAY} left no wheel in {dest}")
    return found[0]


def legacy_schema(wheel: Path) -> dict[str, Any]:
    """``ray-schema.json`` as that wheel ships it (under ``ray-<v>.data/purelib/`` or top level)."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith(SCHEMA_IN_WHEEL):
                return dict(json.loads(zf.read(name)))
    raise ProvisionError(f"{wheel.name} has no {SCHEMA_IN_WHEEL}")


def legacy_schema_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every way ``config`` breaks ``schema``, as ``where: message`` (empty when it conforms)."""
    import jsonschema  # type: ignore[import-untyped]  # Ray's own dependency

    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]


class KindRayUpProvisioner:
    """``ray up`` with Ray's ``kubernetes`` provider; SKIPPED where the installed Ray has none."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = ()
    NIGHTLY: ClassVar[tuple[NightlyRun, ...]] = (NightlyRun("kind"),)

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        ray_version = nodeimage.client_ray_version()
        if not kubernetes_provider():
            return [
                f"the installed Ray {ray_version} has no `kubernetes` node provider "
                f"(`ray up` on Kubernetes ended with Ray {LEGACY_RAY}; KubeRay replaced it): "
                "use kind-operator for Ray on kind"
            ]
        # A Ray with the provider needs Python <= 3.10 and is not what this project pins.
        return [
            f"Ray {ray_version} has a `kubernetes` provider, but this harness drives "
            "`ray up` on Kubernetes only up to rendering and checking its YAML"
        ]

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        raise ProvisionError("no `ray up` on Kubernetes with this Ray (see preflight)")

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        return self._nothing()

    @contextlib.contextmanager
    def _nothing(self) -> Iterator[Endpoint]:
        raise ProvisionError("not provisioned")
        yield Endpoint("127.0.0.1", 0)  # pragma: no cover

    def run_in_cluster(self, script: str, timeout: float) -> str:
        raise ProvisionError("not provisioned")

    def inventory(self) -> list[InventoryItem]:
        return []

    def collect_diagnostics(self, dest: Path) -> None:
        """Nothing was made."""

    def teardown(self) -> None:
        """Nothing was made."""
