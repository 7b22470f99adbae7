"""Offline validation of every manifest before anything is applied.

Built-in kinds go through ``kubernetes-validate`` (the OpenAPI schemas of a Kubernetes
release, strict: an unknown field is an error); custom resources through their CRD's
``openAPIV3Schema`` — the CRD the cluster serves when there is one, else the one shipped with
the operator. A bad manifest fails naming the object and the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from provisioners.contract.base import ProvisionError
from provisioners.kube.api import ref

#: The Kubernetes schema version manifests are checked against when the cluster's is unknown.
DEFAULT_SCHEMA_VERSION = "1.34.0"


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_builtin(obj: Mapping[str, Any], kube_version: str = DEFAULT_SCHEMA_VERSION) -> None:
    """Check a built-in kind against Kubernetes' OpenAPI schema of ``kube_version``."""
    import kubernetes_validate

    version = kube_version.lstrip("v").split("+")[0].split("-")[0]
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        # A newer cluster than the package knows, or a kind it has no schema for: fall back
        # to the newest schema it has rather than skipping the check.
        try:
            kubernetes_validate.validate(
                dict(obj), kubernetes_validate.latest_version(), strict=True
            )
        except kubernetes_validate.SchemaNotFoundError:
            return  # a kind no schema covers (a CRD's own kind): validate_custom handles it
        except kubernetes_validate.ValidationError as exc:
            raise ProvisionError(f"{ref(obj)}: field {_where(exc.path)!r}: {exc.message}") from None
    except kubernetes_validate.ValidationError as exc:
        raise ProvisionError(f"{ref(obj)}: field {_where(exc.path)!r}: {exc.message}") from None


def crd_schema(crd: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of one served version of a CustomResourceDefinition."""
    for v in crd.get("spec", {}).get("versions", []):
        if v.get("name") == version:
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if schema:
                return dict(schema)
    name = crd.get("metadata", {}).get("name")
    raise ProvisionError(f"CRD {name} has no schema for version {version}")


def validate_custom(obj: Mapping[str, Any], crd: Mapping[str, Any]) -> None:
    """Check a custom resource against its CRD's schema (naming the field on failure)."""
    import jsonschema  # type: ignore[import-untyped]  # Ray's own dependency

    version = str(obj.get("apiVersion", "")).rpartition("/")[2]
    schema = crd_schema(crd, version)
    # apiVersion/kind/metadata are checked by the API server itself, not by the CRD schema.
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(body))
    if error is not None:
        raise ProvisionError(f"{ref(obj)}: field {_where(error.absolute_path)!r}: {error.message}")


def validate_all(
    objs: Sequence[Mapping[str, Any]],
    *,
    crds: Mapping[str, Mapping[str, Any]],
    kube_version: str = DEFAULT_SCHEMA_VERSION,
) -> None:
    """Validate each object: custom kinds by ``crds`` (``kind`` -> CRD), the rest by OpenAPI."""
    for obj in objs:
        crd = crds.get(str(obj.get("kind")))
        if crd is not None:
            validate_custom(obj, crd)
        elif obj.get("kind") != "CustomResourceDefinition":
            validate_builtin(obj, kube_version)
