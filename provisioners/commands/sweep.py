"""``python -m provisioners sweep``: find and remove what earlier runs left on this machine.

A run killed by SIGKILL (or pytest-timeout's ``os._exit``) never tears down. Everything a run
makes is findable again without it: Docker objects by the run label (containers of every
container mode, kind's node containers and network, the rehearsals' stages, build
containers), processes by the ``RC_RUN_ID`` in their environment, and the rest from the
notes its modes wrote before creating it (:mod:`provisioners.util.runstate`): firewall rules,
temp dirs, Ray's per-cluster files, the namespace and cluster-scoped objects on a cluster the
run did not make, cloud objects by the tags and names the modes' teardowns use, Ray on a
user's hosts. A run whose lock is held (a run in progress) is never touched.

    python -m provisioners sweep [--dry-run] [--run-id ID ...] [--mode MODE] [--older-than 2h] [--images]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from provisioners.contract.base import RUN_ID_LABEL
from provisioners.util import runstate
from provisioners.util.processes import kill_all
from provisioners.util.runner import run, run_full

#: Environment variable naming the mode of a process (beside ``runstate.RUN_ENV``).
MODE_ENV = runstate.MODE_ENV
EXIT_OK, EXIT_LEFT, EXIT_USAGE = 0, 1, 2
_CLOUD_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Leftover:
    """One thing of a dead run, and how to remove it."""

    run_id: str
    mode: str  # "" when not known
    kind: str
    name: str
    detail: str = ""
    remove: Callable[[], object] = field(default=lambda: None, compare=False, repr=False)
    order: int = 50  # removal order: processes first, the run's own directory last
    #: The run's own bookkeeping with no secret in it: removed with the run, never reported
    #: alone (a run whose only remnant it is has nothing left).
    quiet: bool = False
    created: float | None = None  # when it was made (epoch seconds), where its maker says

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.name}{extra}" + (f" [{self.mode}]" if self.mode else "")


@dataclass(frozen=True)
class Selection:
    """Which runs and modes a sweep may touch."""

    run_ids: frozenset[str] = frozenset()  # empty: every run
    mode: str = ""
    images: bool = False

    def wants(self, run_id: str, mode: str = "") -> bool:
        if self.run_ids and run_id not in self.run_ids:
            return False
        return not self.mode or not mode or mode == self.mode


# --- Finding ----------------------------------------------------------------------------------


def find(selection: Selection) -> dict[str, list[Leftover]]:
    """Every leftover the selection covers, by run, live runs included (the caller checks)."""
    found: dict[str, list[Leftover]] = {}
    finders: list[Callable[[Selection], list[Leftover]]] = [
        _processes,
        _docker,
        _noted,
        _run_dirs,
    ]
    for finder in finders:
        for item in finder(selection):
            found.setdefault(item.run_id, []).append(item)
    return {run_id: sorted(items, key=lambda i: i.order) for run_id, items in found.items()}


def _ancestors() -> set[int]:
    """This process and its parents: never swept, whatever their environment says."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def _processes(selection: Selection) -> list[Leftover]:
    mine = _ancestors()
    markers = {
        run_id: [str(n["marker"]) for n in runstate.notes(run_id, "process-marker")]
        for run_id in runstate.run_ids()
        if selection.wants(run_id)
    }
    out = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.pid in mine or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            env = {}
        run_id, mode = env.get(runstate.RUN_ENV, ""), env.get(MODE_ENV, "")
        cmdline = " ".join(proc.info["cmdline"] or [])
        if not run_id:
            run_id = next(
                (r for r, ms in markers.items() if any(m and m in cmdline for m in ms)), ""
            )
        if not run_id or not selection.wants(run_id, mode):
            continue
        out.append(
            Leftover(
                run_id,
                mode,
                "process",
                str(proc.pid),
                cmdline[:100],
                remove=_killer(proc),
                order=10,
            )
        )
    return out


def _killer(proc: psutil.Process) -> Callable[[], None]:
    def kill() -> None:
        # A zombie holds nothing (its parent, if alive, reaps it): it counts as gone.
        if kill_all([proc]):
            raise RuntimeError(f"process {proc.pid} survived SIGKILL for 10 s")

    return kill


def _docker(selection: Selection) -> list[Leftover]:
    from provisioners.util.containers import ENGINE_ERRORS, MODE_LABEL, docker_client

    try:
        client = docker_client(timeout=60)
        flt = {"label": [RUN_ID_LABEL]}
        found = [
            *(("container", c, 40) for c in client.containers.list(all=True, filters=flt)),
            *(("network", n, 60) for n in client.networks.list(filters=flt)),
            *(("volume", v, 61) for v in client.volumes.list(filters=flt)),
        ]
        if selection.images:
            found += [("image", i, 70) for i in client.images.list(filters=flt)]
    except ENGINE_ERRORS:
        return []  # no engine: nothing of Docker to sweep
    out = []
    for kind, obj, order in found:
        labels = (obj.attrs.get("Config") or {}).get("Labels") if kind == "image" else None
        labels = labels or getattr(obj, "labels", None) or obj.attrs.get("Labels") or {}
        run_id, mode = labels.get(RUN_ID_LABEL, ""), labels.get(MODE_LABEL, "")
        if not run_id or run_id == "none" or not selection.wants(run_id, mode):
            continue
        name = (obj.tags[0] if obj.tags else obj.short_id) if kind == "image" else obj.name
        detail = obj.short_id + (f" {obj.status}" if kind == "container" else "")
        out.append(
            Leftover(
                run_id,
                mode,
                kind,
                name,
                detail,
                _docker_remover(kind, obj),
                order,
                created=_created(obj.attrs.get("Created") or obj.attrs.get("CreatedAt")),
            )
        )
    return out


def _created(stamp: Any) -> float | None:
    """Docker's creation time (RFC 3339 with nanoseconds, or epoch seconds for images)."""
    if isinstance(stamp, int | float):
        return float(stamp)
    if not isinstance(stamp, str) or not stamp:
        return None
    import datetime

    text = re.sub(r"(\.\d{6})\d+", r"\1", stamp.replace("Z", "+00:00"))
    with contextlib.suppress(ValueError):
        return datetime.datetime.fromisoformat(text).timestamp()
    return None


def _docker_remover(kind: str, obj: Any) -> Callable[[], None]:
    import docker.errors

    def remove() -> None:
        with contextlib.suppress(docker.errors.NotFound):
            if kind == "container":
                obj.remove(force=True, v=True)
            elif kind == "network":
                obj.reload()
                for cid in obj.attrs.get("Containers") or {}:  # a container of another run
                    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                        obj.disconnect(cid, force=True)
                obj.remove()
            elif kind == "volume":
                obj.remove(force=True)
            else:
                obj.client.images.remove(obj.id, force=True)

    return remove


def _noted(selection: Selection) -> list[Leftover]:
    """What the run's ledger names and still exists."""
    out: list[Leftover] = []
    handlers: dict[str, Callable[[str, dict[str, Any]], list[Leftover]]] = {
        "path": _path,
        "ray-cluster": _ray_cluster,
        "iptables-rule": _iptables_rule,
        "kube": _kube,
        "ssh-hosts": _ssh_hosts,
        "aws": _aws,
        "ibm": _ibm,
    }
    for run_id in runstate.run_ids():
        if not selection.wants(run_id):
            continue
        for entry in runstate.notes(run_id):
            handler = handlers.get(str(entry.get("kind")))
            if handler is None or not selection.wants(run_id, str(entry.get("mode") or "")):
                continue
            try:
                out += handler(run_id, entry)
            except Exception as exc:  # one unreadable note must not hide the rest
                out.append(_unreachable(run_id, entry, f"{type(exc).__name__}: {exc}"))
    return out


def _unreachable(run_id: str, entry: dict[str, Any], why: str) -> Leftover:
    def fail() -> None:
        raise RuntimeError(why)

    return Leftover(
        run_id,
        str(entry.get("mode") or ""),
        str(entry.get("kind")),
        "?",
        f"cannot tell: {why}",
        remove=fail,
        order=80,
    )


def _path(run_id: str, entry: dict[str, Any]) -> list[Leftover]:
    path = Path(str(entry["path"]))
    if not path.exists():
        return []

    def remove() -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    return [
        Leftover(
            run_id,
            str(entry.get("mode") or ""),
            "directory" if path.is_dir() else "file",
            str(path),
            str(entry.get("what") or ""),
            remove,
            85,
        )
    ]


def _ray_cluster(run_id: str, entry: dict[str, Any]) -> list[Leftover]:
    """Files Ray's launcher keeps for a cluster outside the run's dirs."""
    from provisioners.deployers.launcher.cli import config_caches, control_dir

    name, mode = str(entry["name"]), str(entry.get("mode") or "")
    paths: list[Path] = []
    for tmp in dict.fromkeys(
        [Path(tempfile.gettempdir()), Path(str(entry.get("tmp_dir") or "/tmp"))]
    ):
        paths += [tmp / "ray" / f"cluster-{name}.{suffix}" for suffix in ("state", "lock")]
        paths += config_caches(tmp, name)
    paths.append(control_dir(name))
    out = []
    for path in dict.fromkeys(paths):
        if path.exists():
            out += _path(run_id, {"mode": mode, "path": str(path), "what": f"Ray's, of {name}"})
    return out


def _iptables_rule(run_id: str, entry: dict[str, Any]) -> list[Leftover]:
    from provisioners.util.iptables import iptables

    spec = [str(a) for a in entry["spec"]]
    binary = iptables()
    if binary is None:  # not looked at is not "gone"
        return [
            _unreachable(run_id, entry, "iptables is not installed here: cannot check the rule")
        ]
    if run_full([binary, "-w", "5", "-C", *spec], 30, check=False).returncode != 0:
        return []

    def remove() -> None:
        while run_full([binary, "-w", "5", "-C", *spec], 30, check=False).returncode == 0:
            run([binary, "-w", "5", "-D", *spec], 30, what="iptables -D")

    return [
        Leftover(
            run_id,
            str(entry.get("mode") or ""),
            "iptables-rule",
            shlex.join(spec),
            remove=remove,
            order=65,
        )
    ]


def _kube(run_id: str, entry: dict[str, Any]) -> list[Leftover]:
    """The run's namespace and labelled cluster-scoped objects on a cluster it did not make."""
    from provisioners.deployers.kuberay import CLUSTER_KINDS
    from provisioners.kube.api import Kube

    kubeconfig = Path(str(entry["kubeconfig"]))
    if not kubeconfig.is_file():
        return []  # a cluster of the run, gone with it (its kubeconfig was the run's)
    cache = Path(tempfile.mkdtemp(prefix="rc-sweep-")) / "discovery.json"
    kube = Kube(kubeconfig, cache_file=cache, context=entry.get("context") or None)
    mode = str(entry.get("mode") or "")
    where = f"{kubeconfig}" + (f" context {entry['context']}" if entry.get("context") else "")
    selector = f"{RUN_ID_LABEL}={run_id}"
    objs = [
        o
        for api_version, kind in CLUSTER_KINDS
        for o in kube.list_objects(api_version, kind, selector=selector)
    ]
    namespace = str(entry.get("namespace") or "")
    if namespace and not any(
        o["kind"] == "Namespace" and o["metadata"]["name"] == namespace for o in objs
    ):
        found = kube.get("v1", "Namespace", namespace)
        objs += [found] if found else []

    def remover(obj: dict[str, Any]) -> Callable[[], None]:
        def remove() -> None:
            kube.delete(obj)
            kube.wait_gone([obj], 120)

        return remove

    shutil.rmtree(cache.parent, ignore_errors=True)
    return [
        Leftover(
            run_id,
            mode,
            o["kind"].lower(),
            o["metadata"]["name"],
            where,
            remover(o),
            45 if o["kind"] == "Namespace" else 46,
        )
        for o in objs
    ]


def _ssh_hosts(run_id: str, entry: dict[str, Any]) -> list[Leftover]:
    """Ray of the run on a user's hosts, and the copies ``ray up`` put on the head."""
    from provisioners.deployers.launcher.ssh import SshTarget
    from provisioners.sources.vm import BOOTSTRAP_FILES, MARKED_PROCS, STOP_MARKED

    key, user, mode = Path(str(entry["key"])), str(entry["user"]), str(entry.get("mode") or "")
    cluster = str(entry.get("cluster") or "")
    if not key.is_file():
        return [_unreachable(run_id, entry, f"its SSH key {key} is gone")]
    out = []
    stop = STOP_MARKED.format(list=MARKED_PROCS.format(run_id=run_id))
    files = " ".join(f"~/{f}" for f in BOOTSTRAP_FILES)
    for i, host in enumerate(entry["hosts"]):
        target = SshTarget(str(host), user, key)
        pids = target.run(MARKED_PROCS.format(run_id=run_id), 30).split()
        if pids:
            out.append(
                Leftover(
                    run_id,
                    mode,
                    "remote-processes",
                    f"{host}: {' '.join(pids)}",
                    "Ray",
                    functools.partial(target.run, stop, 60),
                    20,
                )
            )
        if i == 0 and cluster:
            # Only when the config there is this run's: another cluster's copies are not ours.
            mine = f"grep -qs -- {shlex.quote(cluster)} ~/{BOOTSTRAP_FILES[0]} && ls {files} 2>/dev/null || true"
            found = target.run(mine, 30).split()
            if found:
                out.append(
                    Leftover(
                        run_id,
                        mode,
                        "remote-files",
                        f"{host}: {' '.join(found)}",
                        "ray up's copies",
                        functools.partial(target.run, f"rm -f {files}", 30),
                        21,
                    )
                )
    return out


def _aws(run_id: str, entry: dict[str, Any]) -> list[Leftover]:
    """The run's EC2 objects, by its tag and the names aws's teardown uses."""
    import boto3
    import botocore.session
    from botocore.config import Config

    from provisioners.sources.aws import aws_inventory, credentials_found, security_group_name

    if not credentials_found():
        return [
            _unreachable(
                run_id,
                entry,
                "no AWS credentials to list EC2 with (the metadata service is never asked)",
            )
        ]
    session = botocore.session.Session()
    resolver = session.get_component("credential_provider")
    for method in ("iam-role", "container-role"):  # never 169.254.169.254
        resolver.remove(method)
    config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3})
    region, cluster, key_name = str(entry["region"]), str(entry["cluster"]), str(entry["key_name"])
    ec2 = boto3.session.Session(botocore_session=session, region_name=region).client(
        "ec2", config=config
    )
    items = aws_inventory(ec2, cluster, run_id, key_name)
    instances = [i.name for i in items if i.kind == "instance"]
    mode = str(entry.get("mode") or "")
    out = [
        Leftover(run_id, mode, f"aws {i.kind}", i.name, f"{region} {i.detail}".strip(), order=30)
        for i in items
        if i.kind not in ("instance", "security-group", "key-pair")
    ]

    def remove() -> None:
        from provisioners.util.waits import wait_for

        if instances:
            ec2.terminate_instances(InstanceIds=instances)
        wait_for(
            lambda: (
                not [
                    i for i in aws_inventory(ec2, cluster, run_id, key_name) if i.kind == "instance"
                ]
            ),
            timeout=_CLOUD_TIMEOUT_S,
            what=f"instances of {cluster} to terminate",
            interval=2.0,
        )
        group = security_group_name(cluster)

        def group_gone() -> bool:
            found = ec2.describe_security_groups(
                Filters=[{"Name": "group-name", "Values": [group]}]
            )
            for g in found["SecurityGroups"]:
                ec2.delete_security_group(GroupId=g["GroupId"])
            return True

        wait_for(group_gone, timeout=_CLOUD_TIMEOUT_S, what=f"security group {group}", interval=5.0)
        ec2.delete_key_pair(KeyName=key_name)

    named = [i for i in items if i.kind in ("instance", "security-group", "key-pair")]
    if named:
        # One removal for all: instances must be gone before their group can be deleted.
        out.append(
            Leftover(
                run_id,
                mode,
                "aws objects",
                ", ".join(f"{i.kind} {i.name}" for i in named),
                region,
                remove,
                30,
            )
        )
    return out


def _ibm(run_id: str, entry: dict[str, Any]) -> list[Leftover]:
    """The run's VPC objects: instances named for its cluster, their floating IPs, the key."""
    from provisioners.sources.ibm import Snapshot, api_key_from_env, ibm_inventory
    from provisioners.util.ibm_vpc import vpc_client

    key = api_key_from_env()
    if not key:
        return [_unreachable(run_id, entry, "no IBMCLOUD_API_KEY (or IC_API_KEY) to list the VPC")]
    vpc = vpc_client(str(entry["endpoint"]), key, entry.get("iam_endpoint") or None)
    cluster, key_name = str(entry["cluster"]), str(entry["key_name"])
    before = Snapshot(set(), {})
    items = ibm_inventory(vpc, cluster, run_id, key_name, before)
    items = [i for i in items if i.kind != "floating-ip" or i.name in before.seen_fips]
    if not items:
        return []

    def remove() -> None:
        from provisioners.util.waits import wait_for

        for inst in (i for i in items if i.kind == "instance"):
            vpc.delete_instance(inst.name)
        wait_for(
            lambda: (
                not [
                    i
                    for i in ibm_inventory(vpc, cluster, run_id, key_name, before)
                    if i.kind == "instance"
                ]
            ),
            timeout=_CLOUD_TIMEOUT_S,
            what=f"instances of {cluster} to be deleted",
            interval=2.0,
        )
        deleters = {
            "floating-ip": vpc.delete_floating_ip,
            "volume": vpc.delete_volume,
            "key": vpc.delete_key,
        }
        for item in items:
            if item.kind in deleters:
                try:
                    deleters[item.kind](item.name)
                except Exception as exc:  # gone meanwhile (a boot volume the VPC deleted)
                    if getattr(exc, "code", None) != 404:
                        raise

    return [
        Leftover(
            run_id,
            str(entry.get("mode") or ""),
            "ibm objects",
            ", ".join(f"{i.kind} {i.name}" for i in items),
            str(entry["endpoint"]),
            remove,
            30,
        )
    ]


def _run_dirs(selection: Selection) -> list[Leftover]:
    """The run's own directory (lock, notes, secrets): removed last, once the rest is gone."""
    out = []
    for run_id in runstate.run_ids():
        if not selection.wants(run_id):
            continue
        directory = runstate.run_dir(run_id)
        if selection.mode:
            private = directory / runstate.PRIVATE_DIR / selection.mode
            if private.exists():
                out += _path(
                    run_id,
                    {"mode": selection.mode, "path": str(private), "what": "the mode's secrets"},
                )
            continue
        secrets = directory / runstate.PRIVATE_DIR
        held = secrets.exists() and any(p.is_file() for p in secrets.rglob("*"))
        out.append(
            Leftover(
                run_id,
                "",
                "run-state",
                str(directory),
                "its lock, notes and secrets" if held else "its lock and notes",
                functools.partial(shutil.rmtree, directory),
                90,
                quiet=not held,
            )
        )
    return out


# --- Runs -------------------------------------------------------------------------------------


def started(run_id: str, items: Sequence[Leftover]) -> float | None:
    """When the run started (its record), else its oldest object's creation; None if unknown."""
    record = runstate.record(run_id)
    if isinstance(record.get("started"), int | float):
        return float(record["started"])
    times = [item.created for item in items if item.created is not None]
    for item in items:
        if item.kind == "process":
            with contextlib.suppress(psutil.Error, ValueError):
                times.append(psutil.Process(int(item.name)).create_time())
    with contextlib.suppress(OSError):
        times.append((runstate.run_dir(run_id) / runstate.LEDGER_FILE).stat().st_mtime)
    return min(times) if times else None


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 90s, 30m, 2h, 1d")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


@dataclass
class Outcome:
    removed: int = 0
    failed: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    too_young: list[str] = field(default_factory=list)


def sweep(
    selection: Selection,
    *,
    dry_run: bool,
    older_than: float | None = None,
    say: Callable[[str], None] = print,
) -> Outcome:
    """List (``dry_run``) or remove every leftover of dead runs the selection covers."""
    outcome = Outcome()
    now = time.time()
    found = find(selection)
    if not any(not i.quiet for items in found.values() for i in items):
        say(
            "nothing left of any run"
            if not selection.run_ids
            else "nothing left of " + ", ".join(sorted(selection.run_ids))
        )
    for run_id, items in sorted(found.items()):
        if all(i.quiet for i in items):
            if not dry_run:  # only its bookkeeping is left: removed without a word
                with runstate.exclusive(run_id) as mine:
                    for item in items if mine else []:
                        with contextlib.suppress(OSError):
                            item.remove()
            continue
        with runstate.exclusive(run_id) as mine:
            if not mine:
                outcome.live.append(run_id)
                pid = runstate.record(run_id).get("pid", "?")
                say(f"run {run_id}: in progress (its lock is held; pid {pid}): not swept")
                continue
            begun = started(run_id, items)
            if older_than is not None and (begun is None or now - begun < older_than):
                outcome.too_young.append(run_id)
                age = "age unknown" if begun is None else f"started {_ago(now - begun)} ago"
                say(f"run {run_id}: {age}, not older than {_ago(older_than)}: kept")
                continue
            when = f", started {_ago(now - begun)} ago" if begun is not None else ""
            say(f"run {run_id}{when}: {sum(not i.quiet for i in items)} thing(s) left")
            failed = False
            for item in items:
                if dry_run:
                    if not item.quiet:
                        say(f"  {item}")
                    continue
                if failed and item.kind == "run-state":
                    say(f"  kept {item}: its notes say where to look for what is still there")
                    continue
                try:
                    item.remove()
                except Exception as exc:
                    failed = True
                    outcome.failed.append(f"{run_id}: {item}: {type(exc).__name__}: {exc}")
                    say(f"  could not remove {item}: {type(exc).__name__}: {exc}")
                    continue
                if not item.quiet:
                    outcome.removed += 1
                    say(f"  removed {item}")
            if selection.mode and not dry_run and not failed:
                _tidy(run_id)
    if selection.mode and not dry_run:
        # A mode with nothing left (its own teardown ran) may be the run's last: its dir goes.
        for run_id in sorted(selection.run_ids - set(found)):
            with runstate.exclusive(run_id) as mine:
                if mine:
                    _tidy(run_id)
    return outcome


def _tidy(run_id: str) -> None:
    """After a sweep of one mode: the run's own directory too, when nothing else of it is left."""
    rest = find(Selection(frozenset({run_id})))
    if all(i.quiet for i in rest.get(run_id, [])):
        shutil.rmtree(runstate.run_dir(run_id), ignore_errors=True)


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def command(run_id: str, mode: str = "") -> str:
    """The sweep of one run (and mode) as a person runs it in a clean shell."""
    return runstate.sweep_command(run_id, mode)


# --- CLI --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m provisioners sweep",
        description="Find and remove what earlier ray-conformance runs left on this machine "
        "(containers, networks, kind clusters, processes, temp dirs, firewall rules, Kubernetes "
        "and cloud objects). A run in progress is never touched.",
        epilog="Exit status: 0 nothing left to remove (or listed with --dry-run), 1 something "
        "could not be removed, 2 bad usage.",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="List what would be removed; remove nothing"
    )
    p.add_argument(
        "--run-id", action="append", default=[], metavar="ID", help="Only this run (repeatable)"
    )
    p.add_argument("--mode", default="", help="Only what this mode of the run made")
    p.add_argument(
        "--older-than",
        type=parse_age,
        metavar="AGE",
        help="Only runs that started longer ago than AGE (90s, 30m, 2h, 1d)",
    )
    p.add_argument("--images", action="store_true", help="Also remove images the runs built")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for run_id in args.run_id:
        try:
            runstate.run_dir(run_id)
        except ValueError as exc:
            sys.stderr.write(f"sweep: --run-id: {exc}\n")
            return EXIT_USAGE
    selection = Selection(frozenset(args.run_id), args.mode, args.images)
    say = _printer()
    from provisioners.util.containers import engine_problem

    if problem := engine_problem(None):  # not looked at is not "nothing left": say so
        say(f"note: containers, networks and volumes were not looked for: {problem}")
    outcome = sweep(selection, dry_run=args.dry_run, older_than=args.older_than, say=say)
    if args.dry_run:
        return EXIT_OK
    if outcome.failed:
        say(f"{len(outcome.failed)} thing(s) could not be removed:")
        for line in outcome.failed:
            say(f"  {line}")
        return EXIT_LEFT
    # What a removal uncovered (a network freed once its containers went) goes in a second pass.
    again = sweep(selection, dry_run=False, older_than=args.older_than, say=lambda _m: None)
    if again.failed:
        for line in again.failed:
            say(f"could not remove: {line}")
        return EXIT_LEFT
    left = {
        r: [i for i in items if not i.quiet]
        for r, items in find(selection).items()
        if r not in outcome.live + outcome.too_young and any(not i.quiet for i in items)
    }
    if left:
        for run_id, items in left.items():
            say(f"run {run_id}: still left: " + "; ".join(str(i) for i in items))
        return EXIT_LEFT
    removed = outcome.removed + again.removed
    if removed:
        say(f"removed {removed} thing(s)")
    return EXIT_OK


def _printer() -> Callable[[str], None]:
    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return say


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Leftover", "Selection", "command", "find", "main", "sweep"]
