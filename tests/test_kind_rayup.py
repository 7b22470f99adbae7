"""Mode ``kind-rayup``: SKIPPED with its reason on this Ray, and the book's YAML still checked.

The schema check reads ``ray-schema.json`` from Ray 2.1.0's wheel (the last release whose
``ray up`` had a ``kubernetes`` provider), downloaded once into the cache and never installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioners.contract.base import ProvisionError
from provisioners.modes.kind_rayup import (
    HEAD_SERVICE,
    NAMESPACE,
    kubernetes_provider,
    legacy_schema,
    legacy_schema_errors,
    legacy_wheel,
    render,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def schema_2_1() -> dict[str, Any]:
    """Ray 2.1.0's cluster-config schema (a skip naming why when the wheel cannot be had)."""
    try:
        return legacy_schema(legacy_wheel(300))
    except ProvisionError as exc:
        pytest.skip(f"Ray 2.1.0's wheel could not be downloaded: {exc}")


def test_rendered_yaml_is_the_books() -> None:
    config = render("rayproject/ray:2.1.0-py39", workers=3)
    assert config["cluster_name"] == "ray"  # pods ray-ray-head-*, ray-ray-worker-*
    assert config["provider"]["type"] == "kubernetes"
    assert config["provider"]["namespace"] == NAMESPACE
    assert [s["metadata"]["name"] for s in config["provider"]["services"]] == [HEAD_SERVICE]
    ports = {p["port"] for p in config["provider"]["services"][0]["spec"]["ports"]}
    assert 10001 in ports
    types = config["available_node_types"]
    assert set(types) == {"head_node", "worker_node"}
    assert config["head_node_type"] == "head_node"
    assert types["head_node"]["node_config"]["metadata"]["generateName"] == "ray-ray-head-"
    assert types["worker_node"]["node_config"]["metadata"]["generateName"] == "ray-ray-worker-"
    assert types["worker_node"]["min_workers"] == config["max_workers"] == 3
    assert "2.1.0" in config["setup_commands"][0]
    for t in types.values():
        assert t["node_config"]["spec"]["containers"][0]["image"] == "rayproject/ray:2.1.0-py39"
    start = config["worker_start_ray_commands"][-1]
    assert "$RAY_HEAD_IP:6379" in start, start  # $$ in the template is a literal $


def test_rendered_yaml_passes_ray_2_1_schema(schema_2_1: dict[str, Any]) -> None:
    errors = legacy_schema_errors(render("rayproject/ray:2.1.0-py39"), schema_2_1)
    assert errors == []


def test_schema_check_catches_missing_resources(schema_2_1: dict[str, Any]) -> None:
    """The book's YAML as printed (no ``resources`` per node type) fails 2.1.0's schema."""
    config = render("rayproject/ray:2.1.0-py39")
    for node_type in config["available_node_types"].values():
        del node_type["resources"]
    errors = legacy_schema_errors(config, schema_2_1)
    assert len(errors) == 2, errors
    assert all("'resources' is a required property" in e for e in errors), errors
    assert any(e.startswith("available_node_types.head_node") for e in errors), errors


@pytest.mark.skipif(kubernetes_provider(), reason="this Ray has a `kubernetes` provider")
def test_mode_is_skipped_naming_the_provider_and_kind_operator(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "--ray-modes",
        "kind-rayup",
        "--ray-report-dir",
        str(tmp_path / "report"),
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert " passed" not in out, out[-3000:]
    assert " skipped" in out, out[-3000:]
    assert "no `kubernetes` node provider" in out, out[-3000:]
    assert "use kind-operator" in out, out[-3000:]
