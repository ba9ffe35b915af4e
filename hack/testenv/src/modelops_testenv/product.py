"""The product deployed the way its users deploy it, for the end-to-end tests (tests/e2e).

``config/overlays/e2e`` (CRDs, RBAC, the operator under its own ServiceAccount, Prometheus with
the shipped config and rules) inside a kustomization that only names the images under test.
Two kinds of cluster run the same tests:

- the session's real node (the default; root): images built by hack/build-images.sh and
  imported into its containerd (tests/e2e/conftest.py);
- an existing cluster (kind in GitHub Actions): ``MODELOPS_E2E_KUBECONFIG`` names its
  kubeconfig (``MODELOPS_E2E_CONTEXT`` a context in it) and ``MODELOPS_E2E_<IMAGE>_IMAGE`` the
  images loaded into it (OPERATOR, TRAINER, SERVER, LOADGEN required; PROMETHEUS optional: the
  shipped prom/prometheus otherwise).

:class:`Product` is the handle the tests get: kubectl, the Prometheus API from the host
(``kubectl port-forward`` to its Service), test namespaces, and a client pod per namespace
that sends predictions through a Service as any other pod would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import shlex
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .images import COMPONENTS

OVERLAY = "config/overlays/e2e"
SYSTEM_NAMESPACE = "modelops-system"
OPERATOR = "modelops-operator"
PROMETHEUS = "prometheus"
PROMETHEUS_SERVICE = "prometheus-service"
SHIPPED_PROMETHEUS = "prom/prometheus"
KUBECONFIG_ENV = "MODELOPS_E2E_KUBECONFIG"
CONTEXT_ENV = "MODELOPS_E2E_CONTEXT"
IMAGE_ENVS = {image: f"MODELOPS_E2E_{image.upper()}_IMAGE" for image in (*COMPONENTS, "prometheus")}
# The operator's variables naming the images of the workloads it creates.
WORKLOAD_IMAGE_ENVS = {
    "trainer": "MODELOPS_TRAINER_IMAGE",
    "server": "MODELOPS_SERVER_IMAGE",
    "loadgen": "MODELOPS_LOADGEN_IMAGE",
}
NAMESPACE_LABEL = "modelops.dev/e2e"
CLIENT_POD = "e2e-client"
# Only loopback (the port-forward) is reached from the host: never through a proxy.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{shlex.join(self.cmd)} exited {self.returncode}: {self.stderr.strip()}"


@dataclass(frozen=True)
class ClusterKubectl:
    """``kubectl`` against one cluster, with the interface of the plugin's ``Kubectl``."""

    kubeconfig: Path
    context: str | None = None

    def argv(self, *args: str) -> list[str]:
        context = ["--context", self.context] if self.context else []
        return ["kubectl", "--kubeconfig", str(self.kubeconfig), *context, *args]

    def run(
        self, *args: str, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return the completed process, whatever its exit code."""
        return subprocess.run(
            self.argv(*args), input=input, capture_output=True, text=True, timeout=timeout
        )

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> str:
        """Run kubectl; return stdout (raise :class:`KubectlError` on failure when ``check``)."""
        proc = self.run(*args, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc.stdout

    def json(self, *args: str, timeout: float = 120.0) -> Any:
        """``kubectl get ... -o json``'s answer, parsed."""
        return json.loads(self(*args, "-o", "json", timeout=timeout))


@dataclass(frozen=True)
class ExistingCluster:
    """A cluster the tests did not start (kind in CI), from the environment."""

    kubectl: ClusterKubectl
    images: dict[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExistingCluster | None:
        """None unless ``MODELOPS_E2E_KUBECONFIG`` is set; then every image it needs."""
        env = os.environ if env is None else env
        kubeconfig = env.get(KUBECONFIG_ENV, "").strip()
        if not kubeconfig:
            return None
        images = {k: env[v].strip() for k, v in IMAGE_ENVS.items() if env.get(v, "").strip()}
        missing = [IMAGE_ENVS[c] for c in COMPONENTS if c not in images]
        if missing:
            raise ValueError(
                f"{KUBECONFIG_ENV} selects an existing cluster; also set {', '.join(missing)} "
                "to the images loaded into it (e.g. modelops-server:ci-1234567)"
            )
        context = env.get(CONTEXT_ENV, "").strip() or None
        return cls(ClusterKubectl(Path(kubeconfig).expanduser(), context), images)


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference (a registry port is not a tag)."""
    name, _, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def _image_entry(original: str, image: str) -> dict[str, str]:
    name, tag, digest = _split_image(image)
    entry = {"name": original, "newName": name}
    if digest:
        entry["digest"] = digest
    elif tag:
        entry["newTag"] = tag
    return entry


def overlay_kustomization(repo: Path, images: Mapping[str, str], at: Path) -> dict[str, Any]:
    """The kustomization (written in folder ``at``) the tests apply: ``config/overlays/e2e``
    with the images under test, and nothing else changed."""
    entries = [_image_entry(OPERATOR, images["operator"])]
    if images.get("prometheus"):
        entries.append(_image_entry(SHIPPED_PROMETHEUS, images["prometheus"]))
    env = [{"name": var, "value": images[image]} for image, var in WORKLOAD_IMAGE_ENVS.items()]
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": OPERATOR, "namespace": SYSTEM_NAMESPACE},
        # Strategic merge: env entries are matched by name.
        "spec": {"template": {"spec": {"containers": [{"name": "operator", "env": env}]}}},
    }
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes no absolute path of a base.
        "resources": [os.path.relpath((repo / OVERLAY).resolve(), at.resolve())],
        "images": entries,
        "patches": [{"patch": yaml.safe_dump(patch)}],
    }


def render_overlay(repo: Path, images: Mapping[str, str]) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize`` builds from :func:`overlay_kustomization`."""
    with tempfile.TemporaryDirectory(prefix="modelops-e2e-") as tmp:
        path = Path(tmp) / "kustomization.yaml"
        path.write_text(yaml.safe_dump(overlay_kustomization(repo, images, Path(tmp))))
        out = subprocess.run(
            ["kubectl", "kustomize", tmp], check=True, capture_output=True, text=True, timeout=60
        ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _first(doc: Mapping[str, Any]) -> bool:
    """Applied before the rest: CRDs and Namespaces (kubectl cannot order that itself)."""
    return doc["kind"] in ("CustomResourceDefinition", "Namespace")


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy (returned); TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Product:
    """The deployed product: the handle every e2e test gets (``deployed_product``)."""

    repo: Path
    kubectl: ClusterKubectl
    images: dict[str, str]
    # Where the cluster came from, for reports: "real-node" or "existing".
    cluster: str = "real-node"
    manifests: list[dict[str, Any]] = field(default_factory=list)
    # Seconds: "apply" (manifests applied), "operator" and "prometheus" (Ready after start).
    timings: dict[str, float] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    _forward: subprocess.Popen[str] | None = None
    _prometheus_url: str | None = None

    # Deploy ----------------------------------------------------------------------------------

    def deploy(self, timeout: float = 300.0) -> None:
        """Apply the overlay and wait until the operator and Prometheus are Ready."""
        started = time.monotonic()
        self.manifests = render_overlay(self.repo, self.images)
        first = [d for d in self.manifests if _first(d)]
        rest = [d for d in self.manifests if not _first(d)]
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(first))
        for crd in (d for d in first if d["kind"] == "CustomResourceDefinition"):
            name = crd["metadata"]["name"]
            wait(functools.partial(self._established, name), 60, f"CRD {name} established", 0.2)
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rest))
        self.timings["apply"] = time.monotonic() - started
        for name, deployment in (("operator", OPERATOR), ("prometheus", PROMETHEUS)):
            try:
                self.kubectl(
                    *("rollout", "status", "-n", SYSTEM_NAMESPACE, f"deployment/{deployment}"),
                    f"--timeout={int(timeout)}s",
                    timeout=timeout + 30,
                )
            except KubectlError as exc:
                raise RuntimeError(f"{exc}\n{self.diagnostics(SYSTEM_NAMESPACE)}") from None
            self.timings[name] = time.monotonic() - started

    def _leftover_mds(self) -> list[tuple[str, str]]:
        found = []
        for namespace in self.namespaces:
            names = self.kubectl.run("get", "md", "-n", namespace, "-o", "name").stdout.split()
            found += [(namespace, n.split("/", 1)[1]) for n in names]
        return found

    def _established(self, crd: str) -> bool:
        # (Polled: `kubectl wait` fails on a CRD that has no conditions yet.)
        jsonpath = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
        return self.kubectl("get", "crd", crd, "-o", jsonpath) == "True"

    def teardown(self) -> None:
        """ModelDeployments first (the operator removes its finalizer), then the test
        namespaces, then the product itself; the port-forward stops."""
        for namespace in self.namespaces:
            self.kubectl.run("delete", "modeldeployments", "--all", "-n", namespace, "--wait=false")
        try:
            wait(lambda: not self._leftover_mds(), 60, "ModelDeployments deleted")
        except TimeoutError:  # no operator left to remove its finalizer (a test stopped it)
            for namespace, name in self._leftover_mds():
                patch = '{"metadata": {"finalizers": null}}'
                self.kubectl.run("patch", "md", name, "-n", namespace, "--type=merge", "-p", patch)
        for namespace in self.namespaces:
            self.kubectl.run("delete", "namespace", namespace, "--wait=false")
        self.namespaces.clear()
        self.stop_port_forward()
        for group in ([d for d in self.manifests if not _first(d)], self.manifests):
            self.kubectl.run(
                "delete", "--ignore-not-found", "--wait=false", "-f", "-",
                input=yaml.safe_dump_all(group),
            )  # fmt: skip

    # Namespaces and their client pods ---------------------------------------------------------

    def create_namespace(self, prefix: str) -> str:
        """A fresh namespace (restricted Pod Security, like the product's), deleted at the end
        of the session with everything in it."""
        base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].strip("-") or "e2e"
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    NAMESPACE_LABEL: "true",
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            },
        }
        self.kubectl("create", "-f", "-", input=json.dumps(body))
        self.namespaces.append(name)
        # Pods are admitted once the service-account controller made "default".
        wait(
            lambda: (
                self.kubectl.run("get", "serviceaccount", "default", "-n", name).returncode == 0
            ),
            60,
            f"service account {name}/default",
            interval=0.3,
        )
        return name

    def client_pod(self, namespace: str, timeout: float = 180.0) -> str:
        """The namespace's client pod (the server image, which has Python), Ready to exec in;
        created on first use."""
        if self.kubectl.run("get", "pod", CLIENT_POD, "-n", namespace).returncode != 0:
            self.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(self._client()))
        self.kubectl(
            "wait", "--for=condition=Ready", f"pod/{CLIENT_POD}", "-n", namespace,
            f"--timeout={int(timeout)}s", timeout=timeout + 30,
        )  # fmt: skip
        return CLIENT_POD

    def _client(self) -> dict[str, Any]:
        container = {
            "name": "client",
            "image": self.images["server"],
            "imagePullPolicy": "IfNotPresent",
            # PID 1 sleeping in Python: deleting the pod waits its (short) grace period.
            "command": ["python3", "-c", "import time\nwhile True: time.sleep(3600)"],
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"memory": "128Mi"},
            },
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": CLIENT_POD, "labels": {"app.kubernetes.io/name": CLIENT_POD}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
            },
        }

    def exec_python(self, namespace: str, code: str, *args: str, timeout: float = 60.0) -> str:
        """Run ``python3 -c code args`` in the namespace's client pod; its stdout."""
        pod = self.client_pod(namespace)
        return self.kubectl(
            "exec", "-n", namespace, pod, "--", "python3", "-c", code, *args, timeout=timeout
        )

    def predict(
        self,
        namespace: str,
        payload: Mapping[str, Any],
        service: str = "iris",
        port: int = 8000,
        path: str = "/predict",
    ) -> tuple[int, Any]:
        """POST ``payload`` to ``http://<service>:<port><path>`` from a pod in ``namespace``
        (through the Service's cluster IP, by its DNS name); (HTTP status, parsed body)."""
        out = self.exec_python(
            namespace, _PREDICT, f"http://{service}:{port}{path}", json.dumps(payload)
        )
        answer = json.loads(out)
        return int(answer["status"]), answer["body"]

    # Prometheus ------------------------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        """``http://127.0.0.1:<port>``: Prometheus's Service, forwarded to loopback."""
        if self._forward is None or self._forward.poll() is not None:
            self._prometheus_url = self._start_port_forward()
        assert self._prometheus_url is not None
        return self._prometheus_url

    def _start_port_forward(self) -> str:
        argv = self.kubectl.argv(
            "port-forward", "-n", SYSTEM_NAMESPACE, f"service/{PROMETHEUS_SERVICE}",
            "--address", "127.0.0.1", ":9090",
        )  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise RuntimeError(f"kubectl port-forward to Prometheus failed: {line}{err}")
        self._forward = proc
        return f"http://127.0.0.1:{match.group(1)}"

    def stop_port_forward(self) -> None:
        if self._forward is not None:
            self._forward.kill()
            self._forward.communicate(timeout=10)
            self._forward = None

    def prometheus_get(self, path: str, **params: str) -> Any:
        """``GET <prometheus>/api/v1/<path>?params``: its ``data`` (raises on an error)."""
        query = urllib.parse.urlencode(params)
        url = f"{self.prometheus_url}/api/v1/{path}" + (f"?{query}" if query else "")
        for attempt in range(2):
            try:
                with DIRECT.open(url, timeout=20) as resp:
                    answer = json.loads(resp.read())
                break
            except OSError:
                if attempt:
                    raise
                self.stop_port_forward()  # the pod behind it may have been replaced
                url = url.replace(url.split("/api/")[0], self.prometheus_url)
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {answer}")
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        result: list[dict[str, Any]] = self.prometheus_get("query", query=promql)["result"]
        return result

    # ModelDeployments ------------------------------------------------------------------------

    def md(self, namespace: str, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.kubectl.json("get", "modeldeployment", name, "-n", namespace)
        return got

    def posted(self, namespace: str, reason: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The namespace's events of ``reason`` once there is one: the operator posts an event
        after the status write that tells of it, so the status can be seen first."""

        def found() -> list[dict[str, Any]]:
            items = self.kubectl.json("get", "events", "-n", namespace)["items"]
            return [e for e in items if e.get("reason") == reason]

        try:
            got: list[dict[str, Any]] = wait(found, timeout, f"{namespace}: event {reason}", 0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics(namespace)}") from None
        return got

    def wait_md(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
    ) -> dict[str, Any]:
        """The ModelDeployment once ``predicate`` holds for it; on time-out an AssertionError
        with its status, pods, events and the operator's log."""
        last: dict[str, Any] = {}

        def check() -> bool:
            last.clear()
            last.update(self.md(namespace, name))
            return predicate(last)

        try:
            wait(check, timeout, f"{namespace}/{name}: {what}", interval=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics(namespace)}") from None
        return last

    def serving(
        self, namespace: str, name: str, version: str, replicas: int, timeout: float
    ) -> dict[str, Any]:
        """The ModelDeployment once it serves ``version`` on ``replicas`` ready replicas."""
        return self.wait_md(
            namespace,
            name,
            lambda md: (
                (md.get("status") or {}).get("phase") == "Serving"
                and md["status"].get("servingVersion") == version
                and md["status"].get("ready") == f"{replicas}/{replicas}"
            ),
            timeout,
            f"Serving {version} on {replicas}/{replicas}",
        )

    def diagnostics(self, namespace: str) -> str:
        """What to look at when something did not happen: the namespace's objects and events,
        the ModelDeployments' status, the logs of its pods that are not Ready, the operator's
        recent log."""
        commands: list[tuple[str, ...]] = [
            ("get", "modeldeployments,deployments,jobs,pods,services,configmaps", "-n", namespace,
             "-o", "wide"),
            ("get", "modeldeployments", "-n", namespace, "-o", "jsonpath={.items[*].status}"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
        ]  # fmt: skip
        pods = self.kubectl.run("get", "pods", "-n", namespace, "-o", "json")
        for pod in json.loads(pods.stdout or "{}").get("items", []):
            statuses = pod.get("status", {}).get("containerStatuses") or []
            if all(c.get("ready") for c in statuses) and statuses:
                continue
            name = pod["metadata"]["name"]
            commands.append(("logs", "-n", namespace, name, "--all-containers", "--tail=30"))
            if any(c.get("restartCount") for c in statuses):
                commands.append(("logs", "-n", namespace, name, "--previous", "--tail=30"))
        commands.append(("logs", "-n", SYSTEM_NAMESPACE, f"deployment/{OPERATOR}", "--tail=40"))
        parts = []
        for args in commands:
            proc = self.kubectl.run(*args)
            parts.append(f"$ kubectl {shlex.join(args)}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def timed(self, what: str, into: dict[str, float]) -> Iterator[None]:
        """Record how long the block took in ``into[what]`` (seconds)."""
        started = time.monotonic()
        try:
            yield
        finally:
            into[what] = time.monotonic() - started


# Runs in the client pod: one POST, its status and JSON body on stdout.
_PREDICT = r"""
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),
                             headers={"Content-Type": "application/json"})
try:
    with opener.open(req, timeout=20) as resp:
        status, body = resp.status, resp.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
try:
    parsed = json.loads(body)
except ValueError:
    parsed = body.decode(errors="replace")
print(json.dumps({"status": status, "body": parsed}))
"""
