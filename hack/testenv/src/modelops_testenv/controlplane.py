"""A throw-away Kubernetes control plane on loopback.

etcd + kube-apiserver (client-certificate authentication, RBAC) + kube-controller-manager, and on
request kube-scheduler + kwok with fake nodes, started from the binaries that
``hack/build-k8s.sh`` builds. Everything lives in one temporary folder that :meth:`stop` removes.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import importlib.resources
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from . import certs
from .binaries import Binaries, find_binaries, find_kubectl
from .host import safe_rmtree
from .process import Component, ComponentExited, wait_until

WORKDIR_PREFIX = "modelops-testenv-"
SERVICE_CIDR = "10.0.0.0/24"
# The "kubernetes" Service's cluster IP: the first address of SERVICE_CIDR.
KUBERNETES_SERVICE_IP = "10.0.0.1"
POD_CIDR = "10.0.1.0/24"
LOOPBACK = "127.0.0.1"
# kwok manages only the nodes it made (never a real node in the same cluster).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

_live: set[ControlPlane] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - exercised by interpreter exit
    with _live_lock:
        planes = list(_live)
    for plane in planes:
        plane.stop()


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove work folders whose launcher is gone (e.g. it was killed with SIGKILL)."""
    parent = parent or Path(tempfile.gettempdir())
    removed = []
    for d in parent.glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            safe_rmtree(d)
            removed.append(d)
    return removed


@contextlib.contextmanager
def terminate_as_interrupt(sigint: bool = False) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so cleanup code runs (main thread only).

    Only signals left at their default action are taken over. With ``sigint``, SIGINT raises
    KeyboardInterrupt even if it was inherited as ignored (a shell's ``cmd &`` does that), so
    that Ctrl-C or ``kill -INT`` always stops a foreground launcher.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, raise_interrupt)
    if sigint and signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


class ControlPlane:
    """One control plane. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    ``nodes > 0`` also runs kube-scheduler and kwok with that many fake nodes, so Deployments
    become available and Job pods complete; :meth:`start_nodes` adds them later on demand.

    ``address`` other than loopback is the real-node mode (:class:`~modelops_testenv.node.RealNode`
    starts it so): kube-apiserver binds and advertises that address, which pods reach, keeps the
    ``kubernetes`` Service's endpoints, authorizes kubelets (Node, NodeRestriction) and can
    reach them for logs.
    """

    def __init__(
        self,
        *,
        nodes: int = 0,
        controller_manager: bool = True,
        bin_dir: Path | None = None,
        workdir_parent: Path | None = None,
        start_timeout: float = 60.0,
        keep_workdir: bool = False,
        taint_nodes: bool = True,
        address: str = LOOPBACK,
        scheduler: bool = False,
    ) -> None:
        if nodes and not controller_manager:
            raise ValueError("fake nodes need kube-controller-manager")
        self.binaries: Binaries = find_binaries(bin_dir)
        self.want_nodes = nodes
        # kube-scheduler without fake nodes: for a real node.
        self.want_scheduler = scheduler
        self.taint_nodes = taint_nodes
        self.address = address
        self.controller_manager = controller_manager
        self.workdir_parent = workdir_parent
        self.start_timeout = start_timeout
        self.keep_workdir = keep_workdir
        self.components: dict[str, Component] = {}
        self.node_names: list[str] = []
        self.startup_seconds: float | None = None
        # Seconds from start() until each readiness condition held (for tuning and reports).
        self.timings: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._workdir: Path | None = None
        self._ports: Ports | None = None
        self._certs: certs.CertFiles | None = None
        self._ssl: ssl.SSLContext | None = None
        # Loopback only: never let an http(s)_proxy variable route our requests elsewhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ----------------------------------------------------------------------------- accessors

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("control plane not started")
        return self._workdir

    @property
    def ports(self) -> Ports:
        if self._ports is None:
            raise RuntimeError("control plane not started")
        return self._ports

    @property
    def cert_files(self) -> certs.CertFiles:
        if self._certs is None:
            raise RuntimeError("control plane not started")
        return self._certs

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports.apiserver}"

    @property
    def real_node_mode(self) -> bool:
        return self.address != LOOPBACK

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    # ----------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and wait until the cluster is usable."""
        t0 = self._t0 = time.monotonic()
        self.timings.clear()
        with _live_lock:
            _live.add(self)
        try:
            for attempt in range(3):
                try:
                    self._start_once()
                    break
                except ComponentExited as exc:
                    # A port picked as free was taken before the component bound it: retry.
                    if attempt == 2 or "address already in use" not in str(exc):
                        raise
                    self._stop_components()
                    self._remove_workdir(force=True)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _start_once(self) -> None:
        remove_stale_workdirs(self.workdir_parent)
        self._workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=self.workdir_parent))
        (self.workdir / "owner.pid").write_text(str(os.getpid()))
        self.logs_dir.mkdir()
        p = free_ports(5)
        self._ports = Ports(*p)
        ips = [LOOPBACK, self.address, KUBERNETES_SERVICE_IP] if self.real_node_mode else None
        self._certs = certs.generate(self.workdir, ips)
        ctx = ssl.create_default_context(cafile=str(self.cert_files.serving_ca))
        ctx.load_cert_chain(self.cert_files.admin_cert, self.cert_files.admin_key)
        self._ssl = ctx
        self.write_kubeconfig(
            self.kubeconfig,
            self.cert_files.admin_cert.read_bytes(),
            self.cert_files.admin_key.read_bytes(),
        )

        etcd = self._launch("etcd", self._etcd_args())
        self._wait(self._etcd_healthy, "etcd /health", [etcd])
        apiserver = self._launch("kube-apiserver", self._apiserver_args())
        self._wait(self._apiserver_ready, "kube-apiserver /readyz", [apiserver])
        self._wait(
            lambda: self.request("GET", "/api/v1/namespaces/default")[0] == 200,
            "namespace default",
            [apiserver],
        )
        if self.controller_manager:
            self._launch("kube-controller-manager", self._controller_manager_args())
        if self.want_nodes:
            self._launch_node_components()
        elif self.want_scheduler:
            self._launch("kube-scheduler", self._scheduler_args())
        if self.controller_manager:
            kcm = self.components["kube-controller-manager"]
            self._wait(
                lambda: self._component_healthy(self.ports.controller_manager),
                "kube-controller-manager /healthz",
                [kcm],
            )
            # The service-account controller runs: namespaces get their "default" account.
            self._wait(
                functools.partial(
                    self.exists, "/api/v1/namespaces/default/serviceaccounts/default"
                ),
                "service account default/default",
                [kcm],
            )
        if self.want_nodes:
            self.start_nodes(self.want_nodes, self.taint_nodes)
        elif self.want_scheduler:
            self._wait(
                lambda: self._component_healthy(self.ports.scheduler),
                "kube-scheduler /healthz",
                [self.components["kube-scheduler"]],
            )

    def start_nodes(self, count: int = 1, taint: bool = True) -> list[str]:
        """Make sure kube-scheduler and kwok run and ``count`` fake nodes are Ready.

        With ``taint`` (the default) the nodes carry kwok's ``NoSchedule`` taint, so only pods
        that tolerate it (:data:`KWOK_TOLERATION`) land there: kwok completes every Job pod it
        runs with an empty termination message, which must not happen to the trainer pods of
        tests that play the kubelet themselves in the same session.
        """
        if not self.controller_manager:
            raise RuntimeError("fake nodes need kube-controller-manager")
        if "kwok" not in self.components:
            self._launch_node_components()
        watch = [self.components["kube-scheduler"], self.components["kwok"]]
        self._wait(
            lambda: self._component_healthy(self.ports.scheduler),
            "kube-scheduler /healthz",
            watch,
        )
        for i in range(len(self.node_names), count):
            name = f"kwok-node-{i}"
            status, body = self.request("POST", "/api/v1/nodes", _fake_node(name, taint))
            if status not in (201, 409):
                raise RuntimeError(f"creating node {name}: HTTP {status}: {body}")
            self.node_names.append(name)
        for name in self.node_names:
            self._wait(
                functools.partial(self._node_schedulable, name),
                f"node {name} Ready without taints",
                watch,
            )
        return list(self.node_names)

    def stop(self) -> None:
        """Stop every component (no orphans) and remove the work folder. Idempotent."""
        self._stop_components()
        self._remove_workdir()
        with _live_lock:
            _live.discard(self)

    def _stop_components(self) -> None:
        # Reverse start order: clients first, etcd last.
        for name in reversed(list(self.components)):
            self.components[name].stop()
        self.components.clear()
        self.node_names.clear()

    def _remove_workdir(self, force: bool = False) -> None:
        if self._workdir is not None and (force or not self.keep_workdir):
            safe_rmtree(self._workdir)
            self._workdir = None

    # ----------------------------------------------------------------------------- API access

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """One API call as admin: ``(HTTP status, decoded JSON body)``; no exception on 4xx/5xx."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        https = urllib.request.HTTPSHandler(context=self._ssl)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())
        except (urllib.error.URLError, OSError) as err:
            return 0, str(err)

    def exists(self, path: str) -> bool:
        """Whether ``GET path`` answers 200."""
        return self.request("GET", path)[0] == 200

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (built at the API server's version) against this control plane as admin."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(
            [str(find_kubectl()), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for ``user`` (client certificate; subject to RBAC unlike the admin)."""
        cert, key = certs.client_cert(self.cert_files, user, list(groups))
        path = self.workdir / f"user-{user.replace(':', '_')}.kubeconfig"
        self.write_kubeconfig(path, cert, key, user=user)
        return path

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running component."""
        return {name: comp.rss_bytes() for name, comp in self.components.items()}

    def failed_components(self) -> list[Component]:
        return [c for c in self.components.values() if not c.running()]

    # ----------------------------------------------------------------------------- internals

    def _wait(self, predicate: Callable[[], bool], what: str, watch: Sequence[Component]) -> None:
        wait_until(predicate, self.start_timeout, what, watch)
        self.timings[what] = round(time.monotonic() - self._t0, 2)

    def _launch(self, name: str, args: list[str]) -> Component:
        binary = {
            "etcd": self.binaries.etcd,
            "kube-apiserver": self.binaries.kube_apiserver,
            "kube-controller-manager": self.binaries.kube_controller_manager,
            "kube-scheduler": self.binaries.kube_scheduler,
            "kwok": self.binaries.kwok,
        }[name]
        comp = Component(name, [str(binary), *args], self.logs_dir / f"{name}.log")
        self.components[name] = comp
        return comp

    def _launch_node_components(self) -> None:
        if "kube-scheduler" not in self.components:
            self._launch("kube-scheduler", self._scheduler_args())
        self._launch("kwok", self._kwok_args())

    def write_kubeconfig(self, path: Path, cert: bytes, key: bytes, user: str = "admin") -> None:
        """A kubeconfig for this control plane with the given client certificate and key."""

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modelops-testenv",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.cert_files.serving_ca.read_bytes()),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
                }
            ],
            "contexts": [
                {
                    "name": "modelops-testenv",
                    "context": {"cluster": "modelops-testenv", "user": user},
                }
            ],
            "current-context": "modelops-testenv",
        }
        # kubectl and every client library read JSON kubeconfigs (JSON is YAML).
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)

    def _etcd_args(self) -> list[str]:
        p = self.ports
        peer = f"http://127.0.0.1:{p.etcd_peer}"
        client = f"http://127.0.0.1:{p.etcd_client}"
        return [
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",  # throw-away data: skip fsync for speed
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        c, p = self.cert_files, self.ports
        args = [
            f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
            f"--bind-address={self.address}",
            f"--secure-port={p.apiserver}",
            # Without it, hosts without a default route fail ("Unable to find suitable network
            # address").
            f"--advertise-address={self.address}",
            *(self._real_node_args() if self.real_node_mode else self._loopback_args()),
            f"--cert-dir={self.workdir}",
            f"--tls-cert-file={c.serving_cert}",
            f"--tls-private-key-file={c.serving_key}",
            f"--client-ca-file={c.client_ca}",
            f"--service-account-issuer={self.server}/",
            f"--service-account-key-file={c.sa_pub}",
            f"--service-account-signing-key-file={c.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        if not self.controller_manager:
            # Nobody would create the "default" service account that this plugin requires.
            args.append("--disable-admission-plugins=ServiceAccount")
        return args

    @staticmethod
    def _loopback_args() -> list[str]:
        # The endpoint reconciler rejects a loopback address: no endpoints for "kubernetes".
        return ["--endpoint-reconciler-type=none", "--authorization-mode=RBAC"]

    def _real_node_args(self) -> list[str]:
        c = self.cert_files
        return [
            # The default "lease" endpoint reconciler: the "kubernetes" Service gets endpoints.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # Logs/exec: reach the kubelet at its node IP (not the host name, which would be
            # resolved off the machine), with a client certificate the kubelet accepts.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={c.kubelet_client_cert}",
            f"--kubelet-client-key={c.kubelet_client_key}",
            f"--kubelet-certificate-authority={c.serving_ca}",
        ]

    def _controller_manager_args(self) -> list[str]:
        c = self.cert_files
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--service-account-private-key-file={c.sa_key}",
            f"--root-ca-file={c.serving_ca}",
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
            # Notice a fake node turning Ready (and untaint it) within a second or two.
            "--node-monitor-period=1s",
            "--profiling=false",
        ]

    def _scheduler_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.scheduler}",
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
            "--profiling=false",
        ]

    def _kwok_args(self) -> list[str]:
        stages = self.workdir / "kwok-config.yaml"
        data = importlib.resources.files("modelops_testenv") / "data" / "kwok-config.yaml"
        stages.write_text(data.read_text())
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={stages}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            # kwok's own health/metrics server would take a fixed port: keep it off.
            "--server-address=",
        ]

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports.etcd_client}/health"
        try:
            with self._opener.open(url, timeout=2) as resp:
                return bool(resp.status == 200 and json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        return self.request("GET", "/readyz", timeout=2)[0] == 200

    def _component_healthy(self, port: int) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert of a loopback component
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
        )
        try:
            with opener.open(f"https://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _node_schedulable(self, name: str) -> bool:
        status, node = self.request("GET", f"/api/v1/nodes/{name}")
        if status != 200:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        # Only our own kwok taint may stay (the node controller's not-ready taint must go).
        taints = [t for t in node.get("spec", {}).get("taints") or [] if t != KWOK_TAINT]
        return ready and not taints


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike its base class, the message includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# Add to a pod spec's `tolerations` to let it run on the (tainted) fake nodes.
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def _fake_node(name: str, taint: bool = True) -> dict[str, Any]:
    """A Node that kwok keeps Ready; tainted unless ``taint`` is False."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {"taints": [KWOK_TAINT]} if taint else {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "",
                "containerRuntimeVersion": "",
                "kernelVersion": "",
                "kubeProxyVersion": "fake",
                "kubeletVersion": "fake",
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "",
                "systemUUID": "",
            },
            "phase": "Running",
        },
    }
