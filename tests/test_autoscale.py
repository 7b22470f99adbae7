"""Mode ``autoscale`` on bad input: a clear one-line error, and no process left behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from provisioners.contract.base import ClusterSpec, ProvisionError, Timeouts
from provisioners.deployers.launcher import LAUNCHER_CONFIG
from provisioners.modes.autoscale import AutoscaleProvisioner
from provisioners.sources import fake_provider


def _spec(
    tmp_path: Path, workers: int | None = None, options: dict[str, object] | None = None
) -> ClusterSpec:
    return ClusterSpec(
        mode="autoscale",
        run_id=f"t{int(time.time() * 1000) % 10**8}",
        workdir=tmp_path / "work",
        workers=workers,
        timeouts=Timeouts(provision=60, node_join=60, preflight=5, job=60),
        options=options or {},
    )


def test_zero_workers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    p = AutoscaleProvisioner()
    with pytest.raises(ProvisionError, match=r"workers must be >= 1 \(got 0\)"):
        p.provision(_spec(tmp_path, workers=0))
    p.teardown()
    assert p.inventory() == []


def test_schema_error_names_the_field_and_starts_nothing(tmp_path: Path) -> None:
    overrides = tmp_path / "bad.yaml"
    overrides.write_text(yaml.safe_dump({"upscaling_speed": "fast"}))
    spec = _spec(tmp_path, options={LAUNCHER_CONFIG.key: overrides})
    p = AutoscaleProvisioner()
    with pytest.raises(ProvisionError, match=r"field 'upscaling_speed': 'fast' is not of type"):
        p.provision(spec)
    assert p.inventory() == []
    p.teardown()
    p.teardown()  # idempotent
    assert p.inventory() == []


def test_head_that_dies_half_way_is_reported_and_cleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ray start` exits after starting a child (as a half-started head would)."""
    fake = tmp_path / "ray"
    fake.write_text(
        "#!/bin/bash\n"
        "sleep 300 &\n"  # a leftover process of this run's group
        # ... once it runs as `sleep`: a forked child not yet exec'd still shows this
        # script's command line (seen on a busy machine in a cold trial).
        "until grep -qa '^sleep' /proc/$!/cmdline; do :; done\n"
        "echo 'ValueError: the GCS failed to start' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(fake_provider, "ray_cli", lambda: str(fake))
    p = AutoscaleProvisioner()
    try:
        with pytest.raises(ProvisionError, match=r"ray start --head. exited 1: .*GCS failed") as e:
            p.provision(_spec(tmp_path))
        assert "\n" not in str(e.value)
        leftovers = p.inventory()
        assert any("sleep 300" in i.detail for i in leftovers), leftovers
    finally:
        p.teardown()
    assert p.inventory() == []


def test_limits_before_provision_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before provision"):
        AutoscaleProvisioner().autoscaling_limits()
