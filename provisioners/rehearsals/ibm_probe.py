"""Does the IBM Gen2 connector run against the Ray in use? Asked of the real connector.

The probe loads the node provider the way Ray does (``_get_node_provider`` with
``type: external``) and makes the calls ``ray up`` and the head's autoscaler make — create the
head, list it, its external and internal IP, create a worker, its IP, terminate both — against
the loopback stand-in of IAM and the VPC API (:mod:`provisioners.rehearsals.ibm_standin`). Every answer
that Ray would use as an address must be one. It runs in a child process whose ``$HOME`` is a
scratch directory: the connector keeps node tags in ``~/.ray-gen2-tags``.

``python -m provisioners.rehearsals.ibm_probe MODULE.CLASS`` prints the steps and a JSON verdict.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import ipaddress
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioners.util.runner import CommandError, run

#: The connector's provider class since 1.0.0b64; the book's YAML names the old one.
CONNECTOR_CLASS = "gen2.node_provider.IBMGen2NodeProvider"
OLD_CONNECTOR_CLASS = "gen2.node_provider.Gen2NodeProvider"
COMPAT_DIR = Path(__file__).parents[1] / "sources" / "ibm_compat"
CLUSTER = "rc-probe"
PROBE_TIMEOUT_S = 120.0
VERDICT = "probe-verdict:"


@dataclass
class Probe:
    """What the probe found: each step's result, and the first failure in one line."""

    module: str
    versions: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def versions() -> dict[str, str]:
    out = {}
    for dist in ("gen2-connector", "ibm-vpc", "ibm-cloud-sdk-core", "ray"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _cache_file(module: str) -> Path:
    from provisioners.util.nodeimage import cache_dir

    source = b"".join(
        p.read_bytes()
        for p in (
            Path(__file__),
            Path(__file__).parent / "ibm_standin.py",
            COMPAT_DIR / "rc_gen2_compat.py",
        )
    )
    key = hashlib.sha256(source + json.dumps([module, versions()]).encode()).hexdigest()[:16]
    return cache_dir() / "ibm-probe" / f"{key}.json"


def probe(
    module: str = CONNECTOR_CLASS, *, cached: bool = True, timeout: float = PROBE_TIMEOUT_S
) -> Probe:
    """Run the probe in a child process (its verdict cached per connector, Ray, SDK and probe)."""
    cache = _cache_file(module)
    if cached and cache.exists():
        with contextlib.suppress(ValueError, TypeError):
            return Probe(**json.loads(cache.read_text()))
    # The fix (--ray-ibm-compat) is a standalone module: importable only from its directory.
    path = os.pathsep.join(p for p in (str(COMPAT_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": path}
    try:
        out = run(
            [sys.executable, "-m", "provisioners.rehearsals.ibm_probe", module],
            timeout,
            what=f"the IBM connector probe of {module}",
            env=env,
        )
    except CommandError as exc:
        return Probe(module, versions(), failure=f"the probe itself failed: {exc}")
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith(VERDICT)), None)
    if line is None:
        return Probe(module, versions(), failure="the probe printed no verdict")
    result = Probe(**json.loads(line[len(VERDICT) :]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(asdict(result)))
    return result


def _address(value: object) -> str | None:
    """``value`` when it is an IP address string, else None."""
    if not isinstance(value, str):
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None
    return value


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run_steps(module: str, result: Probe) -> None:
    from ray.autoscaler._private.providers import _get_node_provider

    from provisioners.rehearsals.ibm_standin import ZONE, serve
    from provisioners.util.waits import WaitTimeout, wait_for

    api_key = "probe-" + secrets.token_hex(8)
    with serve(api_key) as server:
        cloud = server.cloud
        config = {
            "type": "external",
            "module": module,
            "endpoint": server.base,
            "iam_endpoint": server.base,
            "iam_api_key": api_key,
            "zone_name": ZONE,
            "use_hybrid_ips": True,
            "cache_stopped_nodes": False,
        }
        node_config = {
            "vpc_id": cloud.vpc_id,
            "resource_group_id": cloud.resource_group_id,
            "security_group_id": cloud.security_group_id,
            "subnet_id": cloud.subnet_id,
            "key_id": "probe-key",
            "image_id": "probe-image",
            "instance_profile_name": "bx2-2x8",
        }

        def step(name: str, call: Callable[[], Any], check: Callable[[Any], str | None]) -> Any:
            why: str | None
            try:
                value = call()
            except Exception as exc:
                why, value = f"raised {type(exc).__name__}: {exc}", None
            else:
                why = check(value)
            result.steps.append({"step": name, "ok": why is None, "detail": why or _short(value)})
            if why is not None:
                result.failure = f"{name}: {why}"
                raise _Stop
            return value

        def is_ip(label: str, expected: str | None = None) -> Callable[[Any], str | None]:
            def check(value: Any) -> str | None:
                if _address(value) is None:
                    return f"returned {_short(value, 60)}, not an IP address ({label})"
                if expected is not None and value != expected:
                    return f"returned {value}, the VPC holds {expected} ({label})"
                return None

            return check

        def head_tags(kind: str) -> dict[str, str]:
            return {
                "ray-node-kind": kind,
                "ray-node-name": f"ray-{CLUSTER}-{kind}",
                "ray-user-node-type": f"ray_{kind}_default",
                "ray-node-status": "uninitialized",
            }

        created: list[str] = []
        provider: Any = None
        try:
            provider = step(
                "load the provider as Ray does",
                lambda: _get_node_provider(config, CLUSTER, use_cache=False),
                lambda _v: None,
            )
            step(
                "create the head",
                lambda: provider.create_node(node_config, head_tags("head"), 1),
                lambda v: None if isinstance(v, dict) and len(v) == 1 else f"returned {_short(v)}",
            )
            created += list(cloud.instances)

            def listed() -> list[str] | None:
                ids = provider.non_terminated_nodes({"ray-node-kind": "head"})
                return ids or None

            def head_listed() -> list[str]:
                try:
                    found = wait_for(listed, timeout=30, what="the head to be listed", interval=1.0)
                except WaitTimeout as exc:
                    raise RuntimeError(str(exc)) from None
                assert found is not None
                return found

            head = step(
                "non_terminated_nodes lists the head",
                head_listed,
                lambda v: None if len(v) == 1 else f"returned {_short(v)}",
            )[0]
            inst = cloud.instances[head]
            private = inst["primary_network_interface"]["primary_ip"]["address"]
            fips = [
                f["address"]
                for f in cloud.floating_ips.values()
                if (f.get("target") or {}).get("id") == inst["primary_network_interface"]["id"]
            ]
            step(
                "external_ip(head)",
                lambda: provider.external_ip(head),
                is_ip("ray up dials it", fips[0] if fips else None),
            )
            step(
                "internal_ip(head)",
                lambda: provider.internal_ip(head),
                is_ip("ray up exports it as RAY_HEAD_IP", private),
            )
            step(
                "create a worker",
                lambda: provider.create_node(node_config, head_tags("worker"), 1),
                lambda v: None if isinstance(v, dict) and len(v) == 1 else f"returned {_short(v)}",
            )
            worker = next(i for i in cloud.instances if i != head)
            created.append(worker)
            wip = cloud.instances[worker]["primary_network_interface"]["primary_ip"]["address"]
            step(
                "internal_ip(worker)",
                lambda: provider.internal_ip(worker),
                is_ip("the head's autoscaler dials it", wip),
            )
        except _Stop:
            pass
        finally:
            if provider is not None and created:
                with contextlib.suppress(_Stop):
                    step(
                        "terminate_nodes",
                        lambda: provider.terminate_nodes(created),
                        lambda _v: _left(cloud, created),
                    )


def _left(cloud: Any, created: list[str]) -> str | None:
    """What the provider left after terminating (deleting instances get a bounded moment)."""
    from provisioners.util.waits import WaitTimeout, wait_for

    def left() -> tuple[list[str], list[str]]:
        with cloud.lock:
            cloud.reap()
            instances = [i for i in created if i in cloud.instances]
            fips = [
                f["name"]
                for f in cloud.floating_ips.values()
                if f["name"].startswith("ray-recyclable")
            ]
        return instances, fips

    with contextlib.suppress(WaitTimeout):
        wait_for(
            lambda: left() == ([], []), timeout=15, what="the probe's instances to go", interval=0.5
        )
    instances, fips = left()
    if instances or fips:
        return f"left instances {instances} and floating IPs {fips}"
    return None


class _Stop(Exception):
    """A step failed; the probe stops there (and still terminates what it created)."""


def main(argv: list[str]) -> int:
    module = argv[0] if argv else CONNECTOR_CLASS
    result = Probe(module, versions())
    # The connector writes ~/.ray-gen2-tags: a scratch home, however the probe was started.
    with tempfile.TemporaryDirectory(prefix="ibm-probe-home-") as home:
        os.environ["HOME"] = home
        try:
            _run_steps(module, result)
        except Exception as exc:  # outside any step: the stand-in or Ray's import failed
            result.failure = result.failure or f"{type(exc).__name__}: {exc}"
    for s in result.steps:
        print(f"{'ok  ' if s['ok'] else 'FAIL'} {s['step']}: {s['detail']}")  # noqa: T201
    print(VERDICT + json.dumps(asdict(result)))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
