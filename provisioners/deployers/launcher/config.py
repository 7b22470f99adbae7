"""A ``ray up`` cluster config: template, the mode's provider section, the user's overrides.

:func:`render` lays them over each other in that order; :func:`validate` checks the result
against Ray's own ``ray-schema.json`` (naming the field) before anything is launched.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from provisioners.contract.base import ProvisionError
from provisioners.contract.options import Option, kind_of, read_yaml_mapping

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

#: Sections of a cluster config that are mappings (Ray's ray-schema.json: "type": "object").
MAPPING_SECTIONS = ("provider", "auth", "docker", "available_node_types", "file_mounts")
#: The same within each node type.
NODE_TYPE_SECTIONS = ("node_config", "resources", "labels")


def check_shape(config: Mapping[str, Any]) -> None:
    """``ValueError`` naming a section that is not a mapping (``provider: aws``, a node type
    given as a string), before any code reads a key of it; the schema check runs later."""
    for key in MAPPING_SECTIONS:
        if config.get(key) is not None and not isinstance(config[key], Mapping):
            raise ValueError(f"{key!r} is {kind_of(config[key])}, not a mapping")
    for name, node_type in (config.get("available_node_types") or {}).items():
        where = f"available_node_types.{name}"
        if not isinstance(node_type, Mapping):
            raise ValueError(f"node type {where!r} is {kind_of(node_type)}, not a mapping")
        for key in NODE_TYPE_SECTIONS:
            if node_type.get(key) is not None and not isinstance(node_type[key], Mapping):
                raise ValueError(f"{where}.{key} is {kind_of(node_type[key])}, not a mapping")


#: Shared by every launcher mode (vm, autoscale, and the cloud modes to come).
LAUNCHER_CONFIG = Option.yaml_file(
    "launcher-config",
    "A YAML file of cluster-config keys laid over the rendered template",
    check_shape,
)
#: The clouds' whole cluster YAML (one flag for aws and ibm: give it with one of them selected).
CLUSTER_YAML = Option.yaml_file(
    "cluster-yaml",
    "aws, ibm: your cluster YAML instead of the template (the run sets name, key, tags)",
    check_shape,
)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it; nested mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_template(name: str, values: Mapping[str, object] | None = None) -> dict[str, Any]:
    """A cluster YAML template from ``provisioners/templates/`` with ``${field}``s filled in.

    Values are YAML-quoted so a path or command never changes the document's structure; a
    field the caller forgot raises instead of leaving ``${field}`` in a config.
    """
    text = (TEMPLATES / name).read_text()
    if values is not None:
        quoted = {k: json.dumps(str(v)) for k, v in values.items()}
        try:
            text = string.Template(text).substitute(quoted)
        except (KeyError, ValueError) as e:
            raise ProvisionError(f"template {name}: no value for {e}") from None
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ProvisionError(f"template {name} is not a YAML mapping")
    return data


def load_user_overrides(path: str | Path | None) -> dict[str, Any]:
    """A user's YAML of cluster-config keys (``--ray-launcher-config``, ``--ray-cluster-yaml``).

    The options check it when the run starts; read again here, it may have changed since.
    """
    if not path:
        return {}
    try:
        data = read_yaml_mapping(Path(path))
        check_shape(data)
    except ValueError as e:
        raise ProvisionError(f"cluster config {path}: {e}") from None
    return data


def render(
    template: str,
    values: Mapping[str, object] | None,
    provider: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The template filled with ``values``, the mode's ``provider`` section, the user's keys."""
    return deep_merge(deep_merge(load_template(template, values), provider), overrides)


def min_nodes(config: Mapping[str, Any]) -> int:
    """The nodes a provider-made cluster has once up: the head and every type's ``min_workers``."""
    head = config.get("head_node_type")
    return 1 + sum(
        int(t.get("min_workers", 0))
        for name, t in (config.get("available_node_types") or {}).items()
        if name != head
    )


def validate(config: Mapping[str, Any], source: str = "cluster config") -> None:
    """Check ``config`` against Ray's own ``ray-schema.json`` before anything is launched.

    Raises :class:`ProvisionError` naming the offending field, e.g.
    ``cluster config: field 'max_workers': 'lots' is not of type 'integer'``.
    """
    # Ray's own dependency (no stubs); imported late to keep module import cheap.
    import jsonschema  # type: ignore[import-untyped]
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft7Validator(schema).iter_errors(dict(config))
    )
    if error is None:
        return
    # The path of an unknown key is its parent (empty at top level); the message names it.
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    raise ProvisionError(f"{source}: field {where!r}: {error.message}")


def write(
    config: Mapping[str, Any], workdir: Path, name: str = "cluster.yaml", mode: int = 0o644
) -> Path:
    """Write the rendered config into ``workdir`` (the run's: kept there for the report)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.touch(mode=mode)
    path.chmod(mode)  # before the content: a secret is never readable by others
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path
