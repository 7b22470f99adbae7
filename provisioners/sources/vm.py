"""The node source of mode ``vm``: ``ray up`` with Ray's ``local`` provider, over SSH, onto existing machines.

By default the "machines" are containers of the node image on a network of this run, each with
its own hostname and IP, sshd and this run's key. With ``--ray-vm-hosts head,worker1,...``,
``--ray-ssh-user`` and ``--ray-ssh-key`` it drives real hosts instead and creates no containers.

The mode is the SSH ``ray up`` deployer given a machine source, ``SshRayUpMode(VmMachines())``
(:mod:`provisioners.deployers.launcher.driver`): the deployer owns the ``ray up`` sequence, the teardown
order and SSH; :class:`VmMachines` supplies the provider section, the machines, and the leak
query. Its removal stops the Ray processes this run started on *every* node (``ray down`` with
this provider leaves Ray running on workers), then removes the containers.
"""

from __future__ import annotations

import contextlib
import getpass
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import docker

from provisioners.contract.base import (
    ClusterSpec,
    InventoryError,
    InventoryItem,
    NodeAddresses,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.deployers.launcher import LAUNCHER_CONFIG, Machine, MachineSourceBase, RayUpRun
from provisioners.util import containers, nodeimage, runstate
from provisioners.util.iptables import NO_EGRESS, NO_UPSTREAM_DNS, EgressLock
from provisioners.util.naming import run_name
from provisioners.util.runner import CommandError, pip_download
from provisioners.util.waits import port_accepts

HOSTS = Option.csv("vm-hosts", "Existing hosts head,worker1,... to drive instead of containers")
SSH_USER = Option.string("ssh-user", "SSH user for --ray-vm-hosts (default: you)")
SSH_KEY = Option.file("ssh-key", "SSH private key for --ray-vm-hosts")
AUTOSCALER_V2 = Option.switch(
    "autoscaler-v2", "Let `ray up` run autoscaler v2 (v1 starts every worker of the list)"
)

#: One small pure-Python package ``setup_commands`` installs on every node, and its module.
SETUP_REQUIREMENT = "tomli-w==1.2.0"
SETUP_MODULE = "tomli_w"
REMOTE_WHEELS = "/tmp/rc-setup-wheels"
OBJECT_STORE_BYTES = 150_000_000  # fits the containers' /dev/shm below
SHM_SIZE = "400m"

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
#: What `ray up` copies to the head's home (the whole config, and the run's private key).
BOOTSTRAP_FILES = ("ray_bootstrap_config.yaml", "ray_bootstrap_key.pem")
#: Counts the marked processes, stops them (TERM, then KILL after up to 5 s); runs on the node.
STOP_MARKED = (
    "{list} | wc -l; SIG=TERM; {list}; for i in 1 2 3 4 5 6 7 8 9 10; do"
    ' [ -z "$({list})" ] && break; sleep 0.5; done; SIG=KILL; {list}'
)


class VmMachines(MachineSourceBase):
    """Machines reached over SSH: containers of the node image (default) or the user's hosts."""

    TEMPLATE: ClassVar[str] = "vm.yaml"
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (
        HOSTS,
        SSH_USER,
        SSH_KEY,
        LAUNCHER_CONFIG,
        AUTOSCALER_V2,
        nodeimage.IMAGE,
        nodeimage.IMAGE_BUILD,
        containers.DOCKER_HOST,
        NO_EGRESS,
    )

    def __init__(self) -> None:
        super().__init__()
        self._egress: EgressLock | None = None
        self._image = ""  # the node image of the containers
        self._workers = 0
        self._wheels: Path | None = None
        self._ray_on_nodes = False  # Ray this run started may still run on the nodes
        self._creating = False  # asking the engine for the nodes (an interrupt may land there)

    def _in_containers(self) -> bool:
        return not self.spec.get(HOSTS)

    # --- MachineSource ----------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing: list[str] = []
        if not spec.get(HOSTS):
            problem = containers.engine_problem(spec.get(containers.DOCKER_HOST))
            missing += [problem] if problem else []
            missing += EgressLock.missing() if spec.get(NO_EGRESS) else []
        return missing

    def plan(self, run: RayUpRun) -> None:
        super().plan(run)
        spec = run.spec
        hosts = spec.get(HOSTS)
        if hosts:
            key = spec.get(SSH_KEY)
            if key is None or not key.is_file():
                raise ProvisionError(
                    f"--ray-ssh-key must name a private key file (got {str(key or '')!r})"
                )
            self._workers = len(hosts) - 1
        else:
            self._workers = spec.worker_count()
            if self._workers < 0:
                raise ProvisionError(f"workers must be >= 0 (got {self._workers})")

    def identity(self, run: RayUpRun) -> tuple[str, Path | None]:
        key = self.spec.get(SSH_KEY)
        if self._in_containers() or key is None:
            return "root", None
        return self.spec.get(SSH_USER) or getpass.getuser(), key.resolve()

    def template_values(self, run: RayUpRun) -> Mapping[str, object]:
        return {
            "ssh_user": run.ssh.user,
            "ssh_key": run.ssh.key,
            "wheel_dir_remote": REMOTE_WHEELS,
            "wheel_dir_local": f"{self._wheels or self.spec.workdir}/",
            "setup_requirement": SETUP_REQUIREMENT,
            "run_id": self.spec.run_id,
            "object_store_bytes": OBJECT_STORE_BYTES,
        }

    def provider_section(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        ips = [m.ip for m in machines]
        return {
            "provider": {"head_ip": ips[0], "worker_ips": ips[1:]},
            "max_workers": len(ips) - 1,
        }

    def planned_machines(self, run: RayUpRun) -> list[Machine]:
        hosts = self.spec.get(HOSTS)
        return [Machine(h, h) for h in hosts] or [Machine("planned", "10.0.0.1")] * (
            self._workers + 1
        )

    def launcher_env(self, run: RayUpRun) -> dict[str, str]:
        # `ray up` turns on autoscaler v2 by default; with the local provider v2 adopted the
        # head as an unmanaged worker, then asked for the last worker every 5 s and never
        # launched it. v1 starts every worker ip (measured with 2 workers).
        return {"RAY_UP_enable_autoscaler_v2": "1" if self.spec.get(AUTOSCALER_V2) else "0"}

    def setup_packages(self) -> list[str]:
        return [SETUP_MODULE]

    def up(self, run: RayUpRun, timeout: float) -> None:
        self._ray_on_nodes = True
        super().up(run, timeout)

    def prepare_machines(self, run: RayUpRun, timeout: float) -> list[Machine]:
        # The download can fail on a machine without an index: before any container.
        self._wheels = self._download_wheel(min(120.0, timeout))
        hosts = self.spec.get(HOSTS)
        if hosts:
            # Before Ray runs there: how a sweep after a crash reaches the hosts to stop it.
            runstate.note(
                self.spec.run_id,
                self.spec.mode,
                "ssh-hosts",
                hosts=list(hosts),
                user=run.ssh.user,
                key=str(run.ssh.key),
                cluster=self._cluster_name(),
            )
            return [Machine(h, h) for h in hosts]
        return self._start_containers(run, self.spec.deadline.left())

    def _cluster_name(self) -> str:
        return run_name(self.spec.run_id, self.spec.mode)

    def remove_machines(self, run: RayUpRun) -> None:
        if self._ray_on_nodes:
            self._ray_on_nodes = False
            self._stop_ray_on_nodes(run)
            if not self._in_containers():
                self._remove_bootstrap_files(run)
        if self._in_containers():
            with self._docker() as client:
                if client is not None:
                    containers.remove(client, self.spec.run_id, self.spec.mode, late=self._creating)
            if self._egress is not None:
                self._egress.remove()

    def leak_query(self, run: RayUpRun) -> list[InventoryItem]:
        run_id = self.spec.run_id
        items = self._marked_processes(run)
        if not self._in_containers():
            items += self._bootstrap_files(run)
        if self._in_containers():
            with self._docker() as client:
                try:
                    if client is None:
                        raise InventoryError(f"Docker objects of run {run_id}", "no engine answers")
                    items += containers.inventory(client, run_id, self.spec.mode)
                except InventoryError as exc:
                    items.append(exc.item(run_id))
            items += self._egress.inventory() if self._egress is not None else []
        return items

    def removal_commands(self, run: RayUpRun) -> list[str]:
        # The sweep stops the run's Ray on every node (by its RC_RUN_ID), removes what `ray up`
        # copied to the head, the run's containers and network, and its key: as printed, from
        # any shell, once this run's process has exited.
        return [runstate.sweep_command(self.spec.run_id, self.spec.mode)]

    # --- SupportsNodeAddresses ---------------------------------------------------------------

    def node_addresses(self, run: RayUpRun) -> list[NodeAddresses]:
        """Each node's addresses (``SupportsNodeAddresses``)."""
        if self._in_containers():
            # The run's network is the nodes' network: probed from outside it, no address of
            # theirs may answer at all.
            return [NodeAddresses(m.name, "", (m.ip,)) for m in run.machines]
        # A user's hosts: the address given is the one the cluster uses (the GCS and the client
        # answer there, to that network); every other address the host has must stay shut.
        out = []
        for machine in run.machines:
            found = run.ssh.target(machine).run("hostname -I", 30).split()
            others = tuple(a for a in found if a != machine.ip and not a.startswith("127."))
            out.append(NodeAddresses(machine.name, machine.ip, others))
        return out

    def probe_from_outside(
        self, targets: list[tuple[str, int]], timeout: float
    ) -> set[tuple[str, int]]:
        """The targets that accept a connection from outside the nodes' network."""
        if not self._in_containers():  # no network of the run's: this machine is outside
            return {t for t in targets if port_accepts(t[0], t[1], timeout=timeout)}
        with self._docker() as client:
            if client is None:
                raise RuntimeError("the Docker engine does not answer")
            return containers.probe_from_outside(
                client, self._image, self.spec.run_id, self.spec.mode, targets, timeout
            )

    # --- Machines ---------------------------------------------------------------------------

    def _download_wheel(self, timeout: float) -> Path:
        """The setup package's wheel, downloaded once into the harness cache."""
        dest = nodeimage.cache_dir() / "setup-wheels" / SETUP_REQUIREMENT.replace("==", "-")
        dest.mkdir(parents=True, exist_ok=True)
        if not any(dest.glob("*.whl")):
            argv = [
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(dest),
                SETUP_REQUIREMENT,
            ]
            try:
                pip_download(argv, timeout, what=f"pip download {SETUP_REQUIREMENT}")
            except CommandError as e:
                raise ProvisionError(f"cannot fetch the setup package: {e}") from None
        return dest

    def _start_containers(self, run: RayUpRun, timeout: float) -> list[Machine]:
        spec = self.spec
        image = self._image = nodeimage.node_image_for(spec, timeout, need_ssh=True)
        labels = containers.labels(spec.run_id, spec.mode)
        pub = Path(f"{run.ssh.key}.pub").read_text().strip()
        names = [run_name(spec.run_id, spec.mode, "head")]
        names += [
            run_name(spec.run_id, spec.mode, "worker", str(i)) for i in range(1, self._workers + 1)
        ]
        self._creating = True  # until every node exists: see containers.remove(late=)
        with self._docker() as client:
            assert client is not None
            net = client.networks.create(
                run_name(spec.run_id, spec.mode, "net"), driver="bridge", labels=labels
            )
            if spec.get(NO_EGRESS):  # before any node: nothing of the run ever had a way out
                self._egress = EgressLock(spec.run_id, spec.mode, spec.progress)
                self._egress.add(str(net.id))
            machines = []
            for name in names:
                container = client.containers.run(
                    image,
                    ["bash", "-c", SSHD_COMMAND],
                    name=name,
                    hostname=name,
                    detach=True,
                    labels=labels,
                    network=net.name,
                    shm_size=SHM_SIZE,
                    environment={"RC_AUTHORIZED_KEY": pub},
                    **({"dns": NO_UPSTREAM_DNS} if self._egress is not None else {}),
                )
                info = client.api.inspect_container(container.id)
                ip = info["NetworkSettings"]["Networks"][net.name]["IPAddress"]
                if not ip:
                    raise ProvisionError(f"container {name} got no IP on {net.name}")
                machines.append(Machine(name, ip))
        self._creating = False
        spec.progress("nodes: " + ", ".join(f"{m.name}={m.ip}" for m in machines))
        return machines

    @contextlib.contextmanager
    def _docker(self) -> Iterator[docker.DockerClient | None]:
        """A client of the run's engine (closed on exit), or None when it does not answer."""
        try:
            client = containers.docker_client(self.spec.get(containers.DOCKER_HOST))
        except containers.ENGINE_ERRORS:
            yield None
            return
        try:
            yield client
        finally:
            client.close()

    # --- SupportsKillHead ---------------------------------------------------------------------

    def kill_head(self, run: RayUpRun) -> str:
        """SIGKILL this run's Ray processes on the head machine (they carry RC_RUN_ID=<run id>):
        the head node dies, the machine and its sshd stay, as after a crash of Ray alone."""
        head = run.head()
        run.ssh.target(head).run("SIG=KILL; " + MARKED_PROCS.format(run_id=self.spec.run_id), 30)
        return head.ip

    # --- Ray on the nodes -------------------------------------------------------------------

    def _stop_ray_on_nodes(self, run: RayUpRun) -> None:
        """Stop the Ray processes this run started, on every node: `ray down` leaves the
        workers' raylets running. Only processes carrying RC_RUN_ID=<run id> are touched."""
        stop = STOP_MARKED.format(list=MARKED_PROCS.format(run_id=self.spec.run_id))
        left: dict[str, int] = {}
        for machine in run.machines:
            try:
                left[machine.name] = int(run.ssh.target(machine).run(stop, 60).split()[0])
            except (CommandError, ProvisionError, ValueError, IndexError) as e:
                self.spec.progress(
                    f"could not stop Ray on {machine.name}: {str(e).splitlines()[0]}"
                )
        if any(left.values()):
            self.spec.progress(
                "stopped Ray processes ray down left running: "
                + ", ".join(f"{n}: {c}" for n, c in left.items() if c)
            )

    def _bootstrap_files(self, run: RayUpRun) -> list[InventoryItem]:
        """``ray up``'s copies on the head of a user's host (on containers they go with them)."""
        if not run.up_started or not run.machines:
            return []
        try:
            out = run.ssh.target(run.machines[0]).run(self._bootstrap_listing(), 30)
        except (CommandError, ProvisionError):
            return []  # an unreachable head: its processes' listing says so already
        return [
            InventoryItem(
                "file",
                f"{run.machines[0].name}:{f}",
                self.spec.run_id,
                "ray up's copy on the head",
            )
            for f in out.split()
        ]

    def _bootstrap_listing(self) -> str:
        # Only when the config there is this run's: another cluster's copies are not ours.
        files = " ".join(f"~/{f}" for f in BOOTSTRAP_FILES)
        name = shlex.quote(self._cluster_name())
        return f"grep -qs -- {name} ~/{BOOTSTRAP_FILES[0]} && ls {files} 2>/dev/null || true"

    def _remove_bootstrap_files(self, run: RayUpRun) -> None:
        files = " ".join(f"~/{f}" for f in BOOTSTRAP_FILES)
        listing = self._bootstrap_listing()
        try:
            run.ssh.target(run.machines[0]).run(f'[ -n "$({listing})" ] && rm -f {files}; true', 30)
        except (CommandError, ProvisionError) as e:
            self.spec.progress(
                f"could not remove ray up's copies on the head: {str(e).splitlines()[0]}"
            )

    def _marked_processes(self, run: RayUpRun) -> list[InventoryItem]:
        """Ray processes of this run still running on any node (ray down misses workers)."""
        if not run.up_started or (run.torn_down and self._in_containers()):
            return []  # containers are gone with their processes; their inventory covers them
        items = []
        for machine in run.machines:
            try:
                out = run.ssh.target(machine).run(MARKED_PROCS.format(run_id=self.spec.run_id), 30)
            except (CommandError, ProvisionError) as exc:
                if self._in_containers():
                    continue  # an unreachable node: its container is listed separately
                what = f"Ray processes on {machine.name} ({machine.ip})"
                items.append(InventoryError(what, exc).item(self.spec.run_id))
                continue
            items += [
                InventoryItem("process", f"{machine.name}:{pid}", self.spec.run_id, "Ray")
                for pid in out.split()
            ]
        return items
