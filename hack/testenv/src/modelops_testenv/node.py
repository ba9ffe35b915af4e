"""A real node: containerd + kubelet + kube-proxy + CoreDNS next to a throw-away control plane.

:class:`RealNode` starts its own :class:`~modelops_testenv.controlplane.ControlPlane` in
real-node mode (kube-apiserver on the bridge address pods reach), then the node. It changes the
machine (a bridge, iptables rules, kernel settings, cgroups, mounts), so it records what the
machine looked like first, in its work folder, and undoes everything on :meth:`RealNode.stop`;
the next start does the same for a node whose launcher was killed (:func:`clean_stale_nodes`).
One real node per machine: a lock file says whose it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from . import certs, host
from . import nodeconfig as cfg
from .binaries import NodeBinaries, default_bin_dir, default_node_dir, find_node_binaries
from .controlplane import ControlPlane, _pid_alive, free_ports
from .images import find_image
from .process import Component, wait_until

WORKDIR_PREFIX = "modelops-node-"
LOCK_PATH = Path("/run/modelops-testenv-real-node.lock")
# Host folders the kubelet, containerd or CNI may create outside the work folder: each one
# that did not exist before the node started is removed when it stops.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/var/lib/containerd",
    "/opt/containerd",
    "/run/nri",
    "/etc/kubernetes",
    "/usr/libexec/kubernetes",
)
INOTIFY_MIN = {"fs.inotify.max_user_instances": 512, "fs.inotify.max_user_watches": 524288}


class RealNodeError(RuntimeError):
    """The real node cannot start here (not root, another node runs, ...)."""


@dataclass
class HostState:
    """What the machine looked like before the node changed it (``host-state.json``)."""

    sysctls: dict[str, str]
    chains: dict[str, list[str]]
    nft_tables: list[str]
    host_paths: list[str]
    cgroup: str
    kube_proxy: str

    @classmethod
    def record(cls, cgroup: str, kube_proxy: Path) -> HostState:
        return cls(
            sysctls=host.read_sysctls(),
            chains=host.iptables_chains(),
            nft_tables=host.nft_tables(),
            host_paths=[p for p in HOST_PATHS if Path(p).exists()],
            cgroup=cgroup,
            kube_proxy=str(kube_proxy),
        )


@dataclass
class Undone:
    """What a clean-up removed (for logs and tests)."""

    killed: list[int] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    nft_tables: list[str] = field(default_factory=list)
    sysctls: list[str] = field(default_factory=list)
    host_paths: list[str] = field(default_factory=list)


def undo(workdir: Path, state: HostState) -> Undone:
    """Put the machine back as ``state`` recorded it, then remove ``workdir``.

    Order matters: processes first (shims re-parent to PID 1 and outlive containerd, containers
    live in the node's cgroups), then mounts (never delete files under a live mount), then
    network state, kernel settings, and only then files. A failed step does not stop the
    others (except that files stay while a mount does); the errors are raised at the end.
    """
    done = Undone()
    errors: list[str] = []

    def step(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            errors.append(f"{what}: {err}")

    step("processes", lambda: _kill_node_processes(workdir, state, done))
    step("mounts", lambda: done.unmounted.extend(str(p) for p in host.unmount_all(workdir)))
    if Path(state.kube_proxy).exists():
        step("kube-proxy --cleanup", lambda: host.run(state.kube_proxy, "--cleanup", timeout=60))
    step("network devices", _delete_links)
    step("iptables", lambda: done.chains.extend(host.remove_new_chains(state.chains)))
    step("nf_tables", lambda: done.nft_tables.extend(host.remove_new_nft_tables(state.nft_tables)))
    step("kernel settings", lambda: done.sysctls.extend(host.restore_sysctls(state.sysctls)))
    for path in HOST_PATHS:
        if path not in state.host_paths and Path(path).exists():
            step(path, functools.partial(host.safe_rmtree, Path(path)))
            done.host_paths.append(path)
    step("work folder", lambda: host.safe_rmtree(workdir))
    if errors:
        raise RuntimeError(f"clean-up of {workdir} incomplete:\n" + "\n".join(errors))
    return done


def _kill_node_processes(workdir: Path, state: HostState, done: Undone) -> None:
    # Shims name containerd's socket on their command line (and nothing else does).
    shims = host.pids_with_cmdline(str(cfg.NodePaths(workdir).containerd_socket))
    host.kill_pids(shims)
    done.killed = shims + host.remove_cgroup(state.cgroup)
    host.wait_pids_gone(done.killed)


def _delete_links() -> None:
    for link in _links_on_bridge():
        host.delete_link(link)
    host.delete_link(cfg.BRIDGE)


def _links_on_bridge() -> list[str]:
    """Host ends of pod veths still attached to the bridge."""
    return [
        d.name
        for d in Path("/sys/class/net").iterdir()
        if (d / "master").exists() and (d / "master").resolve().name == cfg.BRIDGE
    ]


def _read_state(workdir: Path) -> HostState | None:
    try:
        return HostState(**json.loads((workdir / "host-state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def clean_stale_nodes(parent: Path | None = None) -> list[Path]:
    """Undo the nodes whose launcher is gone (SIGKILL leaves shims, mounts, rules behind)."""
    parent = parent or Path(tempfile.gettempdir())
    cleaned = []
    for workdir in sorted(parent.glob(f"{WORKDIR_PREFIX}*")):
        try:
            owner = int((workdir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        state = _read_state(workdir)
        if state is None:  # killed before it changed anything
            host.safe_rmtree(workdir)
        else:
            undo(workdir, state)
        cleaned.append(workdir)
    return cleaned


def leftovers_if_alone() -> list[str]:
    """:func:`leftovers`, if no real node runs on the machine (else nothing can be told)."""
    with LOCK_PATH.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        return leftovers()


def wait_machine_free(timeout: float) -> None:
    """Wait until no real node runs on this machine (another launcher holds the lock)."""

    def free() -> bool:
        with LOCK_PATH.open("a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True  # closing releases it

    wait_until(free, timeout, "the real node of another launcher to stop", interval=1)


class RealNode:
    """A control plane in real-node mode with one real node, ``modelops-node``.

    Pods land on the node only if they tolerate :data:`REAL_NODE_TOLERATION`. ``nodes`` adds
    that many kwok fake nodes to the same cluster (kwok never manages the real node).
    """

    def __init__(
        self,
        *,
        pause: tuple[str, Path] | None = None,
        nodes: int = 0,
        bin_dir: Path | None = None,
        node_dir: Path | None = None,
        workdir_parent: Path | None = None,
        start_timeout: float = 120.0,
        keep_workdir: bool = False,
        taint_fake_nodes: bool = True,
        lock_timeout: float = 0.0,
    ) -> None:
        self.binaries: NodeBinaries = find_node_binaries(bin_dir, node_dir)
        self.pause = pause
        # How long to wait for another launcher's real node to stop (0: fail at once).
        self.lock_timeout = lock_timeout
        self.plane = ControlPlane(
            nodes=nodes,
            bin_dir=bin_dir,
            workdir_parent=workdir_parent,
            start_timeout=start_timeout,
            keep_workdir=keep_workdir,
            taint_nodes=taint_fake_nodes,
            address=cfg.NODE_IP,
            scheduler=True,
        )
        self.workdir_parent = workdir_parent
        self.start_timeout = start_timeout
        self.components: dict[str, Component] = {}
        self.imported: list[Path] = []
        self.import_seconds = 0.0  # spent in import_images (for reports)
        self.timings: dict[str, float] = {}
        self.startup_seconds: float | None = None
        self._paths: cfg.NodePaths | None = None
        self._state: HostState | None = None
        self._lock: IO[str] | None = None
        self._ports: cfg.NodePorts | None = None
        self._t0 = time.monotonic()

    name = cfg.NODE_NAME

    @property
    def paths(self) -> cfg.NodePaths:
        if self._paths is None:
            raise RuntimeError("real node not started")
        return self._paths

    @property
    def workdir(self) -> Path:
        return self.paths.root

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def __enter__(self) -> RealNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Prepare the machine, start the control plane, then the node; wait until Ready."""
        self._t0 = time.monotonic()
        if os.geteuid() != 0:
            raise RealNodeError("the real node needs root (bridge, iptables, cgroups, mounts)")
        pause = self.pause or _default_pause()
        self._acquire_lock()
        try:
            clean_stale_nodes(self.workdir_parent)
            self._prepare_host()
            self.plane.start()
            self._mark("control plane ready")
            self._write_files(pause[0])
            self._start_containerd()
            self._import(pause[1])
            self._mark("pause image imported")
            self._start_node_components()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._t0

    def stop(self) -> Undone | None:
        """Stop everything and put the machine back as it was. Idempotent."""
        for name in ("kubelet", "coredns", "kube-proxy", "containerd"):
            if comp := self.components.pop(name, None):
                comp.stop()
        self.components.clear()
        self.plane.stop()
        done = None
        if self._paths is not None and self._state is not None:
            done = undo(self.workdir, self._state)
        elif self._paths is not None:
            host.safe_rmtree(self.workdir)
        self._paths = self._state = None
        self.imported.clear()
        self._release_lock()
        return done

    def _acquire_lock(self) -> None:
        lock = LOCK_PATH.open("a+")
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(1)
                    continue
                lock.seek(0)
                owner = lock.read().strip() or "?"
                lock.close()
                raise RealNodeError(
                    f"another real node runs on this machine (launcher pid {owner}); stop it "
                    "first (one real node per machine: one bridge, one kube-proxy)"
                ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def _prepare_host(self) -> None:
        if host.link_exists(cfg.BRIDGE):
            raise RealNodeError(
                f"network device {cfg.BRIDGE} exists but no real node owns it: remove it "
                f"(`ip link delete {cfg.BRIDGE}`) if nothing else uses it"
            )
        root = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=self.workdir_parent))
        root.chmod(0o755)
        self._paths = cfg.NodePaths(root)
        (root / "owner.pid").write_text(str(os.getpid()))
        state = HostState.record(f"modelops-node-{root.name[-8:]}", self.binaries.kube_proxy)
        # Written before any change, so a killed launcher's successor knows what to undo.
        (root / "host-state.json").write_text(json.dumps(asdict(state), indent=2))
        self._state = state
        for name, minimum in INOTIFY_MIN.items():
            if int(state.sysctls.get(name, minimum)) < minimum:
                host.write_sysctl(name, str(minimum))
        host.write_sysctl("net.ipv4.ip_forward", "1")
        # The guard first: no pod may ever send a packet off the machine.
        host.add_egress_guard(cfg.BRIDGE)
        host.create_bridge(cfg.BRIDGE, f"{cfg.NODE_IP}/24")
        host.create_cgroup(state.cgroup)
        self._mark("host prepared")

    # ------------------------------------------------------------------------------- images

    def import_images(self, archives: Iterable[Path]) -> float:
        """Import OCI (or docker-save) archives into the node's containerd; return seconds.

        The archive's ``io.containerd.image.name`` annotation names the image; pods use it with
        ``imagePullPolicy: Never`` (or ``IfNotPresent``).
        """
        t0 = time.monotonic()
        for archive in archives:
            self._import(Path(archive))
            self.imported.append(Path(archive))
        seconds = time.monotonic() - t0
        self.import_seconds += seconds
        return seconds

    def _import(self, archive: Path) -> None:
        proc = self.ctr("images", "import", "--all-platforms", str(archive), timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"importing {archive}: {proc.stderr.strip()}")

    def images(self) -> list[str]:
        """Names of the images the node's containerd holds."""
        return self.ctr("images", "list", "--quiet", check=True).stdout.split()

    def ctr(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``ctr`` against the node's containerd, namespace ``k8s.io`` (the kubelet's)."""
        argv = [str(self.binaries.ctr), "--address", str(self.paths.containerd_socket)]
        proc = subprocess.run(
            [*argv, "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    # ---------------------------------------------------------------------------- accessors

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, input=input, check=check, timeout=timeout)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of the node's components and of the containerd shims."""
        rss = {name: comp.rss_bytes() for name, comp in self.components.items()}
        shims = host.pids_with_cmdline(str(self.paths.containerd_socket))
        shims = [p for p in shims if _is_shim(p)]
        rss["shims"] = sum(_rss(p) for p in shims)
        return rss

    def failed_components(self) -> list[Component]:
        failed = [c for c in self.components.values() if not c.running()]
        return failed + self.plane.failed_components()

    def egress_drops(self) -> int:
        """Packets pods sent towards anything off the bridge, dropped by the guard."""
        return host.egress_drops()

    # ---------------------------------------------------------------------------- internals

    def _mark(self, what: str) -> None:
        self.timings[what] = round(time.monotonic() - self._t0, 2)

    def _wait(self, predicate: Any, what: str, watch: Sequence[Component]) -> None:
        wait_until(predicate, self.start_timeout, what, [*watch, *self.plane.components.values()])
        self._mark(what)

    def _launch(self, name: str, argv: list[str]) -> Component:
        env = {
            "PATH": f"{self.binaries.containerd.parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
        }
        # Next to the control plane's logs: kept with them (--keep) after the node is gone.
        comp = Component(name, argv, self.plane.logs_dir / f"{name}.log", env=env)
        self.components[name] = comp
        return comp

    def _write_files(self, sandbox_image: str) -> None:
        p = self.paths
        for d in (p.certs, p.cni_conf_dir, p.kubelet_root, p.pod_logs):
            d.mkdir(parents=True, exist_ok=True)
        self._ports = cfg.NodePorts(*free_ports(6))
        b = self.binaries
        p.containerd_config.write_text(cfg.containerd_config(p, b.runc, b.cni_dir, sandbox_image))
        (p.cni_conf_dir / "10-modelops.conflist").write_text(cfg.cni_conflist(p))
        p.resolv_conf.write_text(cfg.resolv_conf())
        files = self.plane.cert_files
        serving = self._write_pair(
            "kubelet-serving", *certs.serving_cert(files, self.name, [cfg.NODE_IP])
        )
        kubelet_kc = self._user_kubeconfig("kubelet", f"system:node:{self.name}", ["system:nodes"])
        p.kubelet_config.write_text(
            cfg.kubelet_config(p, self._ports, files.client_ca, serving, self._state_cgroup())
        )
        proxy_kc = self._user_kubeconfig("kube-proxy", "system:kube-proxy", [])
        p.proxy_config.write_text(cfg.kube_proxy_config(proxy_kc, self._ports))
        self._grant_coredns()
        dns_kc = self._user_kubeconfig("coredns", "system:coredns", [])
        p.corefile.write_text(cfg.corefile(dns_kc, self._ports))
        self._kubelet_kubeconfig = kubelet_kc

    def _state_cgroup(self) -> str:
        assert self._state is not None
        return self._state.cgroup

    def _write_pair(self, name: str, cert: bytes, key: bytes) -> tuple[Path, Path]:
        crt, pem = self.paths.certs / f"{name}.crt", self.paths.certs / f"{name}.key"
        crt.write_bytes(cert)
        pem.write_bytes(key)
        pem.chmod(0o600)
        return crt, pem

    def _user_kubeconfig(self, name: str, user: str, groups: list[str]) -> Path:
        cert, key = certs.client_cert(self.plane.cert_files, user, groups)
        path = self.paths.certs / f"{name}.kubeconfig"
        self.plane.write_kubeconfig(path, cert, key, user=user)
        return path

    def _grant_coredns(self) -> None:
        """What CoreDNS's kubernetes plugin reads (there is no bootstrap role for it)."""
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "modelops-testenv:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "modelops-testenv:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "modelops-testenv:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
            ],
        }
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        for path, body in (
            (f"{rbac}/clusterroles", role),
            (f"{rbac}/clusterrolebindings", binding),
        ):
            status, resp = self.plane.request("POST", path, body)
            if status not in (201, 409):
                raise RuntimeError(f"creating {body['kind']}: HTTP {status}: {resp}")

    def _start_containerd(self) -> None:
        p = self.paths
        comp = self._launch(
            "containerd", [str(self.binaries.containerd), "--config", str(p.containerd_config)]
        )
        self._wait(
            lambda: p.containerd_socket.exists() and self.ctr("version").returncode == 0,
            "containerd serving",
            [comp],
        )

    def _start_node_components(self) -> None:
        p, ports, b = self.paths, self._ports, self.binaries
        assert ports is not None
        dns = self._launch("coredns", [str(b.coredns), "-conf", str(p.corefile)])
        proxy = self._launch("kube-proxy", [str(b.kube_proxy), f"--config={p.proxy_config}"])
        kubelet = self._launch(
            "kubelet",
            [
                str(b.kubelet),
                f"--config={p.kubelet_config}",
                f"--kubeconfig={self._kubelet_kubeconfig}",
                f"--root-dir={p.kubelet_root}",
                f"--cert-dir={p.certs}",
                f"--hostname-override={self.name}",
                f"--node-ip={cfg.NODE_IP}",
                f"--node-labels={cfg.REAL_NODE_LABEL}=true",
                "--v=1",
            ],
        )
        watch = [dns, proxy, kubelet, self.components["containerd"]]
        self._wait(
            lambda: _http_ok(f"http://127.0.0.1:{ports.dns_ready}/ready"), "CoreDNS ready", watch
        )
        self._wait(
            lambda: _http_ok(f"http://127.0.0.1:{ports.proxy_healthz}/healthz"),
            "kube-proxy healthy",
            watch,
        )
        self._wait(self._node_ready, f"node {self.name} Ready", watch)

    def _node_ready(self) -> bool:
        status, node = self.plane.request("GET", f"/api/v1/nodes/{self.name}")
        if status != 200:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _is_shim(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/exe").resolve().name == "containerd-shim-runc-v2"
    return False


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _default_pause() -> tuple[str, Path]:
    """The pause image built by hack/build-images.sh (name, OCI archive)."""
    image = find_image("pause")
    return image.name, image.archive


def leftovers(parent: Path | None = None) -> list[str]:
    """What any real node left on this machine: processes, mounts, cgroups, links, chains.

    Empty when no real node runs and every one that ran was cleaned up (tests assert that).
    """
    parent = parent or Path(tempfile.gettempdir())
    ours = (
        str(default_node_dir()),
        str(default_bin_dir() / "kubelet"),
        str(default_bin_dir() / "kube-proxy"),
        WORKDIR_PREFIX,
    )
    found = []
    for pid, cmdline in host.processes().items():
        if pid != os.getpid() and (any(f in cmdline for f in ours) or _is_shim(pid)):
            found.append(f"process {pid}: {cmdline}")
    found += [f"mount {m}" for m in host.mount_points() if WORKDIR_PREFIX in str(m)]
    for hierarchy in host.cgroup_hierarchies():
        found += [f"cgroup {d}" for d in hierarchy.glob(f"{WORKDIR_PREFIX}*")]
    if host.link_exists(cfg.BRIDGE):
        found.append(f"network device {cfg.BRIDGE}")
    for key, chains in host.iptables_chains().items():
        found += [f"{key} chain {c}" for c in chains if c.startswith(host.OWN_CHAIN_PREFIXES)]
    found += [f"work folder {d}" for d in parent.glob(f"{WORKDIR_PREFIX}*")]
    return found
