"""What a run left on this machine, looked up independently of the sweep, and planted secrets.

Shared by the heavy tests that kill runs, keep clusters and then remove them: each looks for
the run's Docker objects by label, its processes by environment, its firewall rules by its notes,
and greps its reports for secrets planted in the run's environment and files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from provisioners.contract.base import RUN_ID_LABEL
from provisioners.util import runstate
from provisioners.util.containers import MODE_LABEL, docker_client
from provisioners.util.runner import run_full
from provisioners.util.waits import wait_for
from reports.secrets import key_material

REPO = Path(__file__).resolve().parents[1]

#: Fake credentials of the shapes the report writers look for, planted in a run's environment.
PLANTED_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDSWEEP0042",
    "AWS_SECRET_ACCESS_KEY": "pLaNtEd/SwEeP/sEcReT/0123456789abcdefXYZW",
    "IBMCLOUD_API_KEY": "planted-ibm-api-key-0123456789abcdefghijklmnop",
}
PLANTED_TOKEN = "planted-kube-token-0123456789abcdef"
#: A private key nobody uses, planted in a file the run could read (and must not copy).
PLANTED_PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nplanted0123456789abcdef\n-----END OPENSSH PRIVATE KEY-----\n"


def plant(tmp_path: Path) -> dict[str, str]:
    """The planted environment: keys by value, and a kubeconfig and a key file by path."""
    kubeconfig = tmp_path / "planted-kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n"
        f"    token: {PLANTED_TOKEN}\n"
    )
    key = tmp_path / "planted-id"
    key.write_text(PLANTED_PEM)
    key.chmod(0o600)
    return {**PLANTED_ENV, "KUBECONFIG": str(kubeconfig), "RC_PLANTED_KEY_FILE": str(key)}


def secrets_found(paths: list[Path], extra: Sequence[str] = ()) -> list[str]:
    """Every file under ``paths`` (and text in ``extra``) holding key material or a planted value."""
    planted = [*PLANTED_ENV.values(), PLANTED_TOKEN, "planted0123456789abcdef"]
    found = []
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    for f in files:
        data = f.read_bytes()
        what = key_material(data) + [f"planted {v[:12]}..." for v in planted if v.encode() in data]
        if what:
            found.append(f"{f}: {', '.join(what)}")
    for i, text in enumerate(extra):
        data = text.encode()
        what = key_material(data) + [f"planted {v[:12]}..." for v in planted if v.encode() in data]
        if what:
            found.append(f"output {i}: {', '.join(what)}")
    return found


def labeled(run_id: str, mode: str | None = None) -> set[str]:
    """Docker objects of the run (and mode), as "kind name" lines."""
    flt = {"label": [f"{RUN_ID_LABEL}={run_id}", *([f"{MODE_LABEL}={mode}"] if mode else [])]}
    client = docker_client(timeout=60)
    try:
        return (
            {f"container {c.name}" for c in client.containers.list(all=True, filters=flt)}
            | {f"network {n.name}" for n in client.networks.list(filters=flt)}
            | {f"volume {v.name}" for v in client.volumes.list(filters=flt)}
        )
    finally:
        client.close()


def settled_labeled(run_id: str, timeout: float = 30.0) -> set[str]:
    """:func:`labeled` once Docker stops adding to it: a request the killed run had sent
    finishes in the engine after the run died (a worker container appeared after the first
    look, in a cold trial)."""
    seen: list[set[str]] = []

    def settled() -> set[str] | None:
        seen.append(labeled(run_id))
        return seen[-1] if len(seen) > 1 and seen[-1] == seen[-2] else None

    return wait_for(
        settled,
        timeout=timeout,
        what=f"Docker's objects of run {run_id} to stop changing",
        interval=2.0,
        last_seen=lambda: " -> ".join(str(sorted(s)) for s in seen[-2:]),
    )


def processes(run_id: str, mode: str | None = None) -> set[int]:
    """Live processes carrying the run's (and mode's) mark in their environment."""
    out = set()
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(runstate.RUN_ENV) == run_id and (
            mode is None or env.get(runstate.MODE_ENV, mode) == mode
        ):
            out.add(proc.pid)
    return out


def rules(run_id: str) -> list[list[str]]:
    """The run's noted firewall rules that are still in place."""
    return [
        [str(a) for a in n["spec"]]
        for n in runstate.notes(run_id, "iptables-rule")
        if run_full(["iptables", "-w", "5", "-C", *n["spec"]], 30, check=False).returncode == 0
    ]


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioners", "sweep", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def listed(dry_run_output: str, run_id: str) -> set[str]:
    """The items a dry run lists under ``run_id``, as "kind name" (details dropped)."""
    out: set[str] = set()
    inside = False
    for line in dry_run_output.splitlines():
        if line.startswith("run "):
            inside = line.startswith((f"run {run_id}:", f"run {run_id},"))
            continue
        if inside and line.startswith("  "):
            kind, name = line.strip().split(" ", 2)[:2]
            out.add(f"{kind} {name}")
    return out


def clean_shell(command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``command`` in a shell with nothing of ours in its environment: no venv, a bare PATH."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_argv(
    mode: str, run_id: str, report: Path, flags: Sequence[str], *selection: str
) -> list[str]:
    """A real run of one mode as a person starts it, with its own run id and report dir."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--ray-modes={mode}",
        f"--ray-run-id={run_id}",
        f"--ray-report-dir={report}",
        *flags,
        *selection,
    ]


def start_run(
    argv: Sequence[str], output: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``argv`` started from the checkout in a session of its own, its output into ``output``."""
    with output.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
