"""Mode ``vm``: ``ray up`` with Ray's ``local`` provider, over SSH, onto existing machines.

By default the "machines" are containers of the node image on a network of this run, each with
its own hostname and IP, sshd and this run's key. With ``ray_vm_hosts`` (``head,worker1,...``),
``ray_ssh_user`` and ``ray_ssh_key`` it drives real hosts instead and creates no containers.

Teardown runs ``ray down -y``, then stops the Ray processes this run started on *every* node
(``ray down`` with this provider leaves Ray running on workers), then removes the containers.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioners import launcher
from provisioners.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    RUN_ID_LABEL,
    ClusterHandle,
    ClusterSpec,
    Endpoint,
    InventoryItem,
    ProvisionError,
)
from provisioners.launcher import CommandError, Launcher, SshTarget

DEFAULT_WORKERS = 2
#: One small pure-Python package ``setup_commands`` installs on every node, and its module.
SETUP_REQUIREMENT = "tomli-w==1.2.0"
SETUP_MODULE = "tomli_w"
REMOTE_WHEELS = "/tmp/rc-setup-wheels"
OBJECT_STORE_BYTES = 150_000_000  # fits the containers' /dev/shm below
SHM_SIZE = "400m"
GCS_PORT = 6379

#: Run in each container at start: host keys, this run's public key, sshd in the foreground.
SSHD_COMMAND = (
    "ssh-keygen -A >/dev/null && mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh"
    ' && printf "%s\\n" "$RC_AUTHORIZED_KEY" > /root/.ssh/authorized_keys'
    " && chmod 600 /root/.ssh/authorized_keys && exec /usr/sbin/sshd -D -e"
)

#: Lists (or stops, with SIG set) the processes whose environment carries this run's marker.
MARKED_PROCS = (
    "for e in /proc/[0-9]*/environ; do"
    ' if tr "\\0" "\\n" < "$e" 2>/dev/null | grep -qx "RC_RUN_ID={run_id}"; then'
    ' p=${{e#/proc/}}; p=${{p%/environ}}; [ "$p" = "$$" ] && continue;'
    ' if [ -n "$SIG" ]; then kill -"$SIG" "$p" 2>/dev/null; else echo "$p"; fi; fi; done; true'
)


@dataclass(frozen=True)
class Node:
    name: str  # container name, or the host as the user gave it
    ip: str


class VmProvisioner:
    """``ray up`` over SSH onto containers (default) or the user's hosts."""

    def __init__(self) -> None:
        self._spec: ClusterSpec | None = None
        self._nodes: list[Node] = []
        self._user = "root"
        self._key: Path | None = None
        self._launcher: Launcher | None = None
        self._containers: list[str] = []  # ids this run created
        self._network: str | None = None
        self._client: Any = None  # docker.DockerClient, only when we run containers
        self._torn_down = False
        self._ray_started = False  # `ray up` ran: Ray may be running on the nodes
        self._in_containers = False  # nodes are our containers (gone after teardown)
        self._generated_key = False

    # --- Provisioner ------------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing = [f"vm: `{t}` not on PATH" for t in ("ssh", "ssh-keygen", "rsync")
                   if shutil.which(t) is None]  # fmt: skip
        if not spec.option("ray_vm_hosts"):
            try:
                from provisioners.containers import docker_client

                docker_client(spec.option("docker_host"), timeout=5).ping()
            except Exception as e:  # any failure to reach the engine means "skip", with why
                missing.append(f"vm: no Docker engine answers ({type(e).__name__}: {e})")
        return missing

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        deadline = time.monotonic() + spec.timeouts.provision
        started = time.monotonic()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        hosts = [h.strip() for h in str(spec.option("ray_vm_hosts", "")).split(",") if h.strip()]
        if hosts:
            key_opt = spec.option("ray_ssh_key")
            if not key_opt or not Path(key_opt).expanduser().is_file():
                raise ProvisionError(
                    f"vm: --ray-ssh-key must name a private key file (got {key_opt!r})"
                )
            self._key = Path(key_opt).expanduser().resolve()
            self._user = str(spec.option("ray_ssh_user") or getpass.getuser())
            workers = len(hosts) - 1
        else:
            workers = DEFAULT_WORKERS if spec.workers is None else spec.workers
            if workers < 0:
                raise ProvisionError(f"vm: workers must be >= 0 (got {workers})")
            self._key = launcher.generate_key(spec.workdir)
            self._generated_key = True

        # Everything that can fail on bad input fails here, before any node exists.
        planned = hosts or ["10.0.0.1"] * (workers + 1)  # schema check only; real IPs follow
        launcher.validate_config(self._render(planned), source="vm cluster config")
        preflight = min(spec.timeouts.preflight, max(1.0, deadline - time.monotonic()))
        if hosts:
            # A user's host that does not answer is the likeliest failure: find it first.
            self._nodes = [Node(h, h) for h in hosts]
            launcher.wait_for_ssh([self._target(n) for n in self._nodes], preflight)
            wheels = self._download_wheel(spec, deadline)
        else:
            # The download can fail on a machine without an index: before any container.
            wheels = self._download_wheel(spec, deadline)
            self._in_containers = True
            self._nodes = self._start_containers(spec, workers, deadline)
            launcher.wait_for_ssh([self._target(n) for n in self._nodes], preflight)
        config = self._render([n.ip for n in self._nodes], wheels)
        launcher.validate_config(config, source="vm cluster config")
        path = launcher.write_config(config, spec.workdir, "cluster.yaml")
        self._launcher = Launcher(
            path, run_id=spec.run_id, log=spec.workdir / "launcher.log",
            leak_query=self._node_leaks, progress=spec.progress,
            # `ray up` turns on autoscaler v2 by default; with the local provider v2 adopted the
            # head as an unmanaged worker, then asked for the last worker every 5 s and never
            # launched it. v1 starts every worker ip (measured with 2 workers).
            env={"RAY_UP_enable_autoscaler_v2": str(spec.option("ray_autoscaler_v2", "0"))},
        )  # fmt: skip
        spec.progress(f"ray up on {len(self._nodes)} node(s)")
        self._ray_started = True
        self._launcher.up(max(1.0, deadline - time.monotonic()))
        spec.progress(f"ray up done in {time.monotonic() - started:.1f} s; waiting for workers")
        self._wait_nodes(min(spec.timeouts.node_join, max(1.0, deadline - time.monotonic())))
        spec.progress(f"{len(self._nodes)} node(s) alive in {time.monotonic() - started:.1f} s")
        head = self._nodes[0]
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=len(self._nodes),
            ray_version=self._head_ray_version(),
            python_version=self._head_python(),
            head_address=f"{head.ip}:{GCS_PORT}",
            access={
                "config": str(path),
                "ssh": shlex.join(self._target(head).argv()),
                "dashboard": f"ray dashboard {path}",
                "exec": f"ray exec {path} 'ray status'",
            },
        )

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        la = self._require_launcher()
        if remote_port == DASHBOARD_PORT:
            return la.dashboard(timeout=self._spec.timeouts.preflight if self._spec else 30.0)
        # Ray's services on the head listen on its own address, not its loopback.
        head = self._nodes[0]
        host = head.ip if remote_port == CLIENT_PORT else "127.0.0.1"
        return la.tunnel(self._target(head), host, remote_port)

    def run_in_cluster(self, script: str, timeout: float) -> str:
        head = self._nodes[0]
        command = f"RAY_ADDRESS={head.ip}:{GCS_PORT} python -"
        try:
            return self._target(head).run(command, timeout, stdin=script)
        except (CommandError, ProvisionError) as e:
            raise RuntimeError(str(e)) from None

    def inventory(self) -> list[InventoryItem]:
        items = self._launcher.inventory() if self._launcher else self._node_leaks()
        return items + self._docker_leaks()

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        spec = self._spec
        if spec is not None:
            for name in ("cluster.yaml", "launcher.log"):
                if (spec.workdir / name).exists():
                    shutil.copy2(spec.workdir / name, dest / name)
        for node in self._nodes:
            with contextlib.suppress(Exception):
                out = self._target(node).run(
                    "tail -n 200 /tmp/ray/session_latest/logs/{raylet.out,monitor.log,gcs_server.out}"
                    " 2>&1; ray status 2>&1 | tail -n 40",
                    30,
                )
                (dest / f"{node.name}.log").write_text(out)

    def teardown(self) -> None:
        spec = self._spec
        if spec is None:
            return
        first = not self._torn_down
        self._torn_down = True
        if self._launcher is not None:
            self._launcher.close()  # tunnels first: they hold ssh sessions to the head
            if first:
                self._launcher.down(spec.timeouts.provision / 4)
            self._launcher.close()  # ray down's own ssh control masters
            self._launcher.remove_state_files()
        if first and self._ray_started:
            self._stop_ray_on_nodes(spec)
        self._remove_docker_objects()
        if self._generated_key and self._key is not None:
            for path in (self._key, Path(f"{self._key}.pub")):
                path.unlink(missing_ok=True)

    def _stop_ray_on_nodes(self, spec: ClusterSpec) -> None:
        """Stop the Ray processes this run started, on every node: `ray down` leaves the
        workers' raylets running. Only processes carrying RC_RUN_ID=<run id> are touched."""
        left: dict[str, int] = {}
        stop = (
            f"{MARKED_PROCS.format(run_id=spec.run_id)} | wc -l; SIG=TERM; "
            f"{MARKED_PROCS.format(run_id=spec.run_id)}; for i in 1 2 3 4 5 6 7 8 9 10; do"
            f' [ -z "$({MARKED_PROCS.format(run_id=spec.run_id)})" ] && break; sleep 0.5; done;'
            f" SIG=KILL; {MARKED_PROCS.format(run_id=spec.run_id)}"
        )
        for node in self._nodes:
            try:
                out = self._target(node).run(stop, 60)
                left[node.name] = int(out.split()[0])
            except (CommandError, ProvisionError, ValueError, IndexError) as e:
                spec.progress(f"could not stop Ray on {node.name}: {str(e).splitlines()[0]}")
        if any(left.values()):
            spec.progress(
                "stopped Ray processes ray down left running: "
                + ", ".join(f"{n}: {c}" for n, c in left.items() if c)
            )

    # --- SupportsLauncher -------------------------------------------------------------------

    def cluster_config(self) -> Path:
        return self._require_launcher().config_path

    def launcher_exec(self, command: str, timeout: float) -> str:
        return self._require_launcher().exec(command, timeout)

    def head_ssh(self, command: str, timeout: float) -> str:
        return self._target(self._nodes[0]).run(command, timeout)

    def setup_packages(self) -> list[str]:
        return [SETUP_MODULE]

    # --- SupportsNodeExec -------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [n.name for n in self._nodes]

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        match = [n for n in self._nodes if n.name == node]
        if not match:
            raise RuntimeError(f"no node {node!r}; nodes: {self.node_names()}")
        try:
            return self._target(match[0]).run(shlex.join(argv), timeout)
        except (CommandError, ProvisionError) as e:
            raise RuntimeError(str(e)) from None

    # --- helpers ------------------------------------------------------------------------------

    def _require_launcher(self) -> Launcher:
        if self._launcher is None:
            raise RuntimeError("vm: not provisioned")
        return self._launcher

    def _target(self, node: Node) -> SshTarget:
        assert self._key is not None
        return SshTarget(node.ip, self._user, self._key)

    def _render(self, ips: list[str], wheels: Path | None = None) -> dict[str, Any]:
        spec = self._spec
        assert spec is not None
        assert self._key is not None
        config = launcher.load_template(
            "vm.yaml",
            {
                "cluster_name": f"rc-{spec.run_id}-vm",
                "head_ip": ips[0],
                "ssh_user": self._user,
                "ssh_key": self._key,
                "wheel_dir_remote": REMOTE_WHEELS,
                "wheel_dir_local": f"{wheels or spec.workdir}/",
                "setup_requirement": SETUP_REQUIREMENT,
                "run_id": spec.run_id,
                "object_store_bytes": OBJECT_STORE_BYTES,
            },
        )
        config["provider"]["worker_ips"] = ips[1:]
        config["max_workers"] = len(ips) - 1
        return launcher.deep_merge(
            config, launcher.load_user_overrides(spec.option("ray_launcher_config"))
        )

    def _download_wheel(self, spec: ClusterSpec, deadline: float) -> Path:
        """The setup package's wheel, downloaded once into the harness cache."""
        from provisioners.nodeimage import cache_dir

        dest = cache_dir() / "setup-wheels" / SETUP_REQUIREMENT.replace("==", "-")
        dest.mkdir(parents=True, exist_ok=True)
        if not any(dest.glob("*.whl")):
            argv = [
                sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                "--no-deps", "--only-binary=:all:", "-d", str(dest), SETUP_REQUIREMENT,
            ]  # fmt: skip
            try:
                launcher.run(argv, min(120.0, max(1.0, deadline - time.monotonic())),
                             what=f"pip download {SETUP_REQUIREMENT}")  # fmt: skip
            except CommandError as e:
                raise ProvisionError(f"vm: cannot fetch the setup package: {e}") from None
        return dest

    def _start_containers(self, spec: ClusterSpec, workers: int, deadline: float) -> list[Node]:
        from provisioners.containers import docker_client
        from provisioners.nodeimage import ensure_node_image

        image = ensure_node_image(
            spec.progress,
            max(1.0, deadline - time.monotonic()),
            image=spec.option("ray_image"),
            force_build=bool(spec.option("ray_image_build")),
            need_ssh=True,
            docker_host=spec.option("docker_host"),
            run_id=spec.run_id,
        )
        self._client = client = docker_client(spec.option("docker_host"))
        labels = {RUN_ID_LABEL: spec.run_id}
        prefix = f"rc-{spec.run_id}-vm"
        network = client.networks.create(f"{prefix}-net", driver="bridge", labels=labels)
        self._network = network.id
        pub = Path(f"{self._key}.pub").read_text().strip()
        names = [f"{prefix}-head"] + [f"{prefix}-worker-{i}" for i in range(1, workers + 1)]
        for name in names:
            container = client.containers.run(
                image, ["bash", "-c", SSHD_COMMAND], name=name, hostname=name, detach=True,
                labels=labels, network=network.name, shm_size=SHM_SIZE,
                environment={"RC_AUTHORIZED_KEY": pub},
            )  # fmt: skip
            self._containers.append(container.id)
        nodes = []
        for name, cid in zip(names, self._containers, strict=True):
            info = client.api.inspect_container(cid)
            ip = info["NetworkSettings"]["Networks"][network.name]["IPAddress"]
            if not ip:
                raise ProvisionError(f"vm: container {name} got no IP on {network.name}")
            nodes.append(Node(name, ip))
        spec.progress("nodes: " + ", ".join(f"{n.name}={n.ip}" for n in nodes))
        return nodes

    def _wait_nodes(self, timeout: float) -> None:
        """Wait for every node's IP in the head's node list; the error names the missing IPs."""
        want = {n.ip: n.name for n in self._nodes}
        probe = (
            "import json, urllib.request;"
            "d = json.load(urllib.request.urlopen("
            "'http://127.0.0.1:8265/nodes?view=summary', timeout=5));"
            "print(json.dumps([n['ip'] for n in d['data']['summary']"
            " if (n.get('raylet') or {}).get('state') == 'ALIVE']))"
        )
        head = self._target(self._nodes[0])
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        last_error = ""
        while True:
            try:
                out = head.run(f"python -c {shlex.quote(probe)}", 20)
                seen = set(json.loads(out.strip().splitlines()[-1]))
                last_error = ""
            except (CommandError, ProvisionError, ValueError, IndexError) as e:
                last_error = f"; last probe error: {str(e).splitlines()[-1][:150]}"
            missing = [f"{want[ip]} ({ip})" for ip in want if ip not in seen]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ProvisionError(
                    f"vm: {len(seen)}/{len(want)} nodes alive after {timeout:.0f}s; "
                    f"never joined: {', '.join(missing)}{last_error}"
                )
            time.sleep(2)

    def _head_python(self) -> str:
        out = self.head_ssh("python -c 'import sys; print(*sys.version_info[:2], sep=\".\")'", 30)
        return out.strip().splitlines()[-1]

    def _head_ray_version(self) -> str:
        out = self.head_ssh("python -c 'import ray; print(ray.__version__)'", 60)
        return out.strip().splitlines()[-1]

    def _node_leaks(self) -> list[InventoryItem]:
        """Ray processes of this run still running on any node (ray down misses workers)."""
        spec = self._spec
        if spec is None or not self._ray_started or (self._torn_down and self._in_containers):
            return []  # containers are gone with their processes; docker leaks cover them
        items = []
        for node in self._nodes:
            try:
                out = self._target(node).run(MARKED_PROCS.format(run_id=spec.run_id), 30)
            except (CommandError, ProvisionError):
                continue  # an unreachable node: its container (if any) is listed separately
            items += [InventoryItem("process", f"{node.name}:{pid}", spec.run_id, "Ray")
                      for pid in out.split()]  # fmt: skip
        return items

    @contextlib.contextmanager
    def _docker(self) -> Iterator[Any]:
        if (
            self._client is None
            and self._spec is not None
            and not self._spec.option("ray_vm_hosts")
        ):
            with contextlib.suppress(Exception):
                from provisioners.containers import docker_client

                self._client = docker_client(self._spec.option("docker_host"))
        yield self._client

    def _docker_leaks(self) -> list[InventoryItem]:
        spec = self._spec
        if spec is None:
            return []
        with self._docker() as client:
            if client is None:
                return []
            flt = {"label": f"{RUN_ID_LABEL}={spec.run_id}"}
            prefix = f"rc-{spec.run_id}-vm"
            items = [InventoryItem("container", c.name, spec.run_id, c.status)
                     for c in client.containers.list(all=True, filters=flt)
                     if c.name.startswith(prefix)]  # fmt: skip
            items += [InventoryItem("network", n.name, spec.run_id)
                      for n in client.networks.list(filters=flt)
                      if n.name.startswith(prefix)]  # fmt: skip
            return items

    def _remove_docker_objects(self) -> None:
        """Remove this run's vm containers and network (by label and name prefix), idempotently."""
        import docker.errors

        spec = self._spec
        with self._docker() as client:
            if client is None or spec is None:
                return
            flt = {"label": f"{RUN_ID_LABEL}={spec.run_id}"}
            prefix = f"rc-{spec.run_id}-vm"
            for c in client.containers.list(all=True, filters=flt):
                if c.name.startswith(prefix):
                    with contextlib.suppress(docker.errors.NotFound):
                        c.remove(force=True)
            for n in client.networks.list(filters=flt):
                if n.name.startswith(prefix):
                    with contextlib.suppress(docker.errors.NotFound):
                        n.remove()
        self._containers.clear()
        self._network = None


def _conforms(p: VmProvisioner) -> None:
    """Static conformance check: mypy fails here when a method drifts from the contract."""
    from provisioners.base import Provisioner, SupportsLauncher, SupportsNodeExec

    _a: Provisioner = p
    _b: SupportsLauncher = p
    _c: SupportsNodeExec = p
