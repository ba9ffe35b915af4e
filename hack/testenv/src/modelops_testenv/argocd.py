"""Argo CD (built by hack/build-argocd.sh) run as processes against a test control plane.

What a real install runs in pods, here as three local processes on loopback: Debian's
redis, the repo server and the application controller (the multi-call ``argocd`` binary,
picked by ``ARGOCD_BINARY_NAME``). The API server, UI, Dex and notifications are not needed to
sync Applications. The Git source is a bare repository on disk (``file://``), which Argo CD's own
end-to-end tests use too. See docs/argocd-local.md.

The in-cluster destination ``https://kubernetes.default.svc`` is the test cluster:
``ARGOCD_FAKE_IN_CLUSTER`` with ``KUBECONFIG`` makes Argo CD read it from that file outside a pod.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .binaries import ARGOCD_VERSION, find_argocd
from .controlplane import ControlPlane, free_ports
from .process import Component, ComponentExited, wait_until
from .thirdparty import crd

NAMESPACE = "argocd"
IN_CLUSTER = "https://kubernetes.default.svc"
# The placeholders argocd/install.sh fills in (argocd/bootstrap/root.yaml passes them on).
REPO_URL_PLACEHOLDER = "REPO_URL_PLACEHOLDER"
REVISION_PLACEHOLDER = "REVISION_PLACEHOLDER"
# The app of apps (argocd/bootstrap/root.yaml, argocd/apps/) and the folders its Applications
# read: argocd/, config/, and crds/ (config/crd takes the ModelDeployment CRD from there).
ROOT_APP, PLATFORM_APP, MODELS_APP = "modelops", "modelops-platform", "modelops-models"
MODELS_NAMESPACE = "mlops-puj"
GITOPS_TREES = ("argocd", "config", "crds")
_PART_OF = {"app.kubernetes.io/part-of": "argocd"}  # the settings informer reads only these
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "modelops tests",
    "GIT_AUTHOR_EMAIL": "tests@modelops.invalid",
    "GIT_COMMITTER_NAME": "modelops tests",
    "GIT_COMMITTER_EMAIL": "tests@modelops.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


class GitRepo:
    """A bare repository (what Argo CD reads) and a working clone (what a test commits in)."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.bare = root / "gitops.git"
        self.checkout = root / "checkout"
        self.branch = branch
        self.url = f"file://{self.bare}"
        self.git_env = {**os.environ, **_GIT_ENV}
        self._run_in(
            root, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(self.bare)
        )
        self._run_in(root, "init", "--quiet", f"--initial-branch={branch}", str(self.checkout))
        self.git("remote", "add", "origin", self.url)

    def _run_in(self, cwd: Path, *args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=self.git_env, capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
        return proc.stdout

    def git(self, *args: str) -> str:
        """Run git in the working clone; return its stdout."""
        return self._run_in(self.checkout, *args)

    def seed(self, source: Path, trees: Iterable[str]) -> str:
        """Copy the tracked files of ``trees`` (folders of the Git work tree ``source``, as they
        are on disk) into the clone, commit and push; the new commit's SHA."""
        listed = subprocess.run(
            ["git", "-C", str(source), "ls-files", "-z", "--", *trees],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        files = [f for f in listed.split("\0") if f and (source / f).is_file()]
        if not files:
            raise RuntimeError(f"no tracked files under {list(trees)} in {source}")
        for rel in files:
            (self.checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, self.checkout / rel)
        return self.commit_all("seed: the GitOps trees of this repository")

    def commit_all(self, message: str) -> str:
        """Commit every change in the clone and push it; the new commit's SHA."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        return self.push()

    def push(self) -> str:
        self.git("push", "--quiet", "origin", f"HEAD:{self.branch}")
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()


@dataclass(frozen=True)
class ArgoPorts:
    redis: int
    repo_server: int
    repo_server_metrics: int
    controller_metrics: int


class ArgoCD:
    """Redis, repo server and application controller for one control plane.

    ``install`` creates what Argo CD's own install.yaml gives a cluster and these two components
    read (the Application/AppProject CRDs, an empty argocd-cm and argocd-secret); ``start``
    installs them if that was not done and starts the processes; ``stop`` stops them by PID
    (the objects stay). Apply argocd-cm's settings before ``start``, as install.sh restarts the
    controller after changing them.
    """

    def __init__(self, plane: ControlPlane, workdir: Path, start_timeout: float = 90.0) -> None:
        self.plane = plane
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.binary = find_argocd()
        self.components: dict[str, Component] = {}
        self.ports = ArgoPorts(*free_ports(4))
        self.logs_dir = workdir / "logs"
        self.installed = False

    def __enter__(self) -> ArgoCD:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self.installed:
            self.install()
        try:
            self._start_redis()
            self._start_repo_server()
            self._start_controller()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the processes, controller first (it talks to the other two). Idempotent."""
        for name in reversed(list(self.components)):
            self.components[name].stop()
        self.components.clear()

    def install(self) -> None:
        for name in ("argocd-application-crd.yaml", "argocd-appproject-crd.yaml"):
            # Server-side: the Application CRD is too large for client-side apply.
            self.plane.kubectl("apply", "--server-side", "-f", str(crd(name)))
        for name in ("applications.argoproj.io", "appprojects.argoproj.io"):
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            established = functools.partial(_established, self.plane, path)
            wait_until(established, 60, f"CRD {name}", (), 0.2)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        # Both are read at start (the controller exits without argocd-cm); empty is valid.
        settings = [
            {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": _PART_OF},
            }
            for kind, name in (("ConfigMap", "argocd-cm"), ("Secret", "argocd-secret"))
        ]
        self.apply([namespace, *settings], manager="argocd-install")
        self.installed = True

    def _launch(self, name: str, argv: list[str], env: dict[str, str]) -> Component:
        comp = Component(name, argv, self.logs_dir / f"{name}.log", env=env)
        self.components[name] = comp
        return comp

    def _wait(self, what: str, predicate: Callable[[], bool]) -> None:
        wait_until(predicate, self.start_timeout, what, list(self.components.values()), 0.2)

    def _start_redis(self) -> None:
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        redis = shutil.which("redis-server")
        if redis is None:
            raise FileNotFoundError(
                "redis-server is not installed: `make install` installs it (hack/apt-packages.txt)"
            )
        argv = [redis, "--bind", "127.0.0.1", "--port", str(self.ports.redis), "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(data), "--protected-mode", "yes"]
        self._launch("redis", argv, dict(os.environ))
        self._wait("redis", lambda: _tcp_open(self.ports.redis))

    def _base_env(self, component: str) -> dict[str, str]:
        tmp = self.workdir / component
        tmp.mkdir(exist_ok=True)
        # hack/build-argocd.sh puts kustomize and git-verify-wrapper.sh beside argocd.
        kustomize_dir = str(self.binary.parent)
        return {
            "PATH": f"{kustomize_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            "ARGOCD_BINARY_NAME": component,
            "ARGOCD_GPG_ENABLED": "false",
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "KUBECONFIG": str(self.plane.kubeconfig),
            # Resolve a branch to its newest commit every time (default: cached for 3 min).
            "ARGOCD_RECONCILIATION_TIMEOUT": "5s",
            "ARGOCD_ASK_PASS_SOCK": str(tmp / "asks.sock"),
            "ARGOCD_APP_CONF_PATH": str(tmp / "app-conf"),
            "ARGOCD_TLS_DATA_PATH": str(tmp / "tls"),
            "ARGOCD_SSH_DATA_PATH": str(tmp / "ssh"),
            "ARGOCD_GNUPGHOME": str(tmp / "gnupg"),
        }

    def _start_repo_server(self) -> None:
        p = self.ports
        argv = [str(self.binary), "--address", "127.0.0.1", "--port", str(p.repo_server)]
        argv += ["--metrics-address", "127.0.0.1", "--metrics-port", str(p.repo_server_metrics)]
        argv += ["--redis", f"127.0.0.1:{p.redis}", "--loglevel", "info"]
        self._launch("argocd-repo-server", argv, self._base_env("argocd-repo-server"))
        url = f"http://127.0.0.1:{p.repo_server_metrics}/healthz?full=true"
        self._wait("argocd-repo-server /healthz", lambda: _http_ok(url))

    def _start_controller(self) -> None:
        p = self.ports
        argv = [str(self.binary), "--namespace", NAMESPACE]
        argv += ["--repo-server", f"127.0.0.1:{p.repo_server}", "--redis", f"127.0.0.1:{p.redis}"]
        # Poll Git every 10 s (default 120 s), so a push is seen without a webhook.
        argv += ["--app-resync", "10", "--app-resync-jitter", "0"]
        # Its metrics server binds every interface (no flag for the address): a free port.
        argv += ["--metrics-port", str(p.controller_metrics), "--loglevel", "info"]
        argv += ["--status-processors", "4", "--operation-processors", "2"]
        # Write each resource's health into the Application's status.resources (since v3.0 only
        # redis holds it, for the UI's resource tree), so tests read it from the API server.
        argv += ["--persist-resource-health"]
        comp = "argocd-application-controller"
        self._launch(comp, argv, self._base_env(comp))
        url = f"http://127.0.0.1:{p.controller_metrics}/healthz"
        self._wait(f"{comp} /healthz", lambda: _http_ok(url))

    # ------------------------------------------------------------------------ objects

    def apply(self, docs: list[dict[str, Any]], manager: str = "modelops-tests") -> None:
        """Server-side apply of objects (as install.sh applies the shipped ones)."""
        body = "\n".join(json.dumps(d) for d in docs)
        self.plane.kubectl(
            "apply", "--server-side", "--force-conflicts", f"--field-manager={manager}",
            "-f", "-", input=body,
        )  # fmt: skip

    def apply_shipped(self, rendered: str, repo_url: str, revision: str) -> None:
        """Apply ``kubectl kustomize argocd`` output with the repository filled in (install.sh)."""
        text = rendered.replace(REPO_URL_PLACEHOLDER, repo_url)
        text = text.replace(REVISION_PLACEHOLDER, revision)
        self.plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=modelops-install",
            "-f", "-", input=text,
        )  # fmt: skip

    def application(self, name: str) -> dict[str, Any]:
        """The Application as the API server holds it ({} if it does not exist)."""
        status, body = self.plane.request(
            "GET", f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/applications/{name}"
        )
        return body if status == 200 and isinstance(body, dict) else {}

    def refresh(self, *names: str) -> None:
        """Ask the controller to compare with Git now (what a webhook or the UI's Refresh does)."""
        for name in names:
            self.plane.kubectl(
                "-n", NAMESPACE, "annotate", "--overwrite", f"application/{name}",
                "argocd.argoproj.io/refresh=normal",
            )  # fmt: skip

    def wait_app(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
    ) -> dict[str, Any]:
        """Poll the Application until ``predicate`` holds; on timeout say what it showed."""
        deadline = time.monotonic() + timeout
        app: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for comp in self.components.values():
                if not comp.running():
                    raise ComponentExited(comp)
            app = self.application(name)
            if app and predicate(app):
                return app
            time.sleep(0.5)
        raise TimeoutError(
            f"Application {name}: not {what} after {timeout:.0f} s; it shows "
            f"{summary(app)}\ncontroller log:\n"
            f"{self.components['argocd-application-controller'].log_tail(15)}"
        )

    def forget(self) -> None:
        """Delete the Applications and AppProjects without touching what they deployed (their
        finalizers would cascade; call after :meth:`stop`, then remove the resources yourself)."""
        for kind in ("applications", "appprojects"):
            listed = self.plane.kubectl("-n", NAMESPACE, "get", kind, "-o", "name", check=False)
            for ref in listed.stdout.split():
                self.plane.kubectl(
                    "-n", NAMESPACE, "patch", ref, "--type=merge",
                    "-p", '{"metadata": {"finalizers": null}}', check=False,
                )  # fmt: skip
                self.plane.kubectl("-n", NAMESPACE, "delete", ref, "--wait=false", check=False)

    def version(self) -> str:
        out = subprocess.run(
            [str(self.binary), "version", "--client", "--short"],
            env={"ARGOCD_BINARY_NAME": "argocd", "HOME": str(self.workdir)},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return out.strip()


@dataclass
class GitOps:
    """Argo CD, the Git repository it follows, and the cluster it syncs into."""

    argocd: ArgoCD
    repo: GitRepo
    plane: ControlPlane

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl(*args, input=input).stdout

    def get(self, path: str) -> dict[str, Any]:
        """An object as the API server holds it ({} if absent)."""
        status, body = self.plane.request("GET", path)
        return body if status == 200 and isinstance(body, dict) else {}

    def model(self, name: str, namespace: str = MODELS_NAMESPACE) -> dict[str, Any]:
        return self.get(
            f"/apis/modelops.dev/v1alpha1/namespaces/{namespace}/modeldeployments/{name}"
        )

    def edit_yaml(self, rel: str, change: Callable[[Any], None]) -> None:
        """Load a YAML file of the clone, let ``change`` mutate it in place, write it back."""
        path = self.repo.checkout / rel
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def push(self, message: str | None = None) -> str:
        """Commit the clone's changes (none: push what is committed already) and push; tell
        Argo CD (as a webhook would). The pushed commit's SHA."""
        sha = self.repo.commit_all(message) if message else self.repo.push()
        self.argocd.refresh(ROOT_APP, PLATFORM_APP, MODELS_APP)
        return sha


@contextlib.contextmanager
def gitops(
    plane: ControlPlane,
    workdir: Path,
    source: Path,
    prepare: Callable[[GitRepo], None] | None = None,
) -> Iterator[GitOps]:
    """Seed a repository with the GitOps trees of ``source`` (a clone of this project), let
    ``prepare`` commit to it, install Argo CD, apply what argocd/install.sh applies (argocd/
    rendered, the repository filled in), start Argo CD; stop it afterwards."""
    repo = GitRepo(workdir)
    repo.seed(source, GITOPS_TREES)
    if prepare is not None:
        prepare(repo)
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(repo.checkout / "argocd")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    argocd = ArgoCD(plane, workdir / "argocd")
    argocd.install()
    argocd.apply_shipped(rendered, repo.url, repo.branch)
    with argocd:
        yield GitOps(argocd=argocd, repo=repo, plane=plane)


class HealthCheckFailed(RuntimeError):
    """Argo CD could not evaluate the health check (the controller shows such a resource as
    Unknown with this error)."""


def evaluate_health(
    argocd_cm: dict[str, Any], obj: dict[str, Any], workdir: Path
) -> dict[str, str]:
    """``{status, message}`` Argo CD computes for ``obj`` under the settings ``argocd_cm``.

    Runs ``argocd admin settings resource-overrides health``: the controller's code path
    (gitops-engine's GetResourceHealth with the Lua overrides from argocd-cm), on one object.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cm_path, obj_path = workdir / "argocd-cm.json", workdir / f"obj-{uuid.uuid4().hex[:8]}.json"
    cm_path.write_text(json.dumps(argocd_cm))
    obj_path.write_text(json.dumps(obj))
    proc = subprocess.run(
        [str(find_argocd()), "admin", "settings", "resource-overrides", "health", str(obj_path),
         "--argocd-cm-path", str(cm_path)],
        env={"ARGOCD_BINARY_NAME": "argocd", "HOME": str(workdir), "PATH": os.defpath},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    obj_path.unlink()
    if proc.returncode != 0:
        raise HealthCheckFailed((proc.stderr or proc.stdout).strip())
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    if "STATUS" not in fields:
        raise HealthCheckFailed(f"no health status in argocd's output: {proc.stdout!r}")
    return {"status": fields["STATUS"], "message": fields.get("MESSAGE", "")}


def sync_status(app: dict[str, Any]) -> str:
    return str(app.get("status", {}).get("sync", {}).get("status", ""))


def health_status(app: dict[str, Any]) -> str:
    return str(app.get("status", {}).get("health", {}).get("status", ""))


def synced_revision(app: dict[str, Any]) -> str:
    return str(app.get("status", {}).get("sync", {}).get("revision", ""))


def resource_health(app: dict[str, Any], kind: str, name: str) -> dict[str, str]:
    """The health Argo CD computed for one of the Application's resources ({} if unknown)."""
    for res in app.get("status", {}).get("resources", []):
        if res.get("kind") == kind and res.get("name") == name:
            return dict(res.get("health") or {})
    return {}


def summary(app: dict[str, Any]) -> str:
    """One line: sync and health, the last operation's phase and message, conditions."""
    if not app:
        return "(no such Application)"
    status = app.get("status", {})
    op = status.get("operationState", {})
    conds = "; ".join(f"{c.get('type')}: {c.get('message')}" for c in status.get("conditions", []))
    resources = "; ".join(
        f"{r.get('kind')}/{r.get('name')} {r.get('status')} {r.get('health')}"
        for r in status.get("resources", [])
        if r.get("status") != "Synced"
        or (r.get("health") or {}).get("status") not in (None, "Healthy")
    )
    return (
        f"sync={sync_status(app)} health={health_status(app)} "
        f"operation={op.get('phase')} {op.get('message', '')!r} conditions=[{conds}] "
        f"resources not synced or healthy=[{resources}]"
    )


def new_workdir(parent: Path) -> Path:
    path = parent / f"argocd-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def _established(plane: ControlPlane, path: str) -> bool:
    status, body = plane.request("GET", path)
    conds = ((body.get("status") or {}).get("conditions") or []) if status == 200 else []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


def _tcp_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


__all__ = [
    "ARGOCD_VERSION",
    "IN_CLUSTER",
    "NAMESPACE",
    "ArgoCD",
    "GitOps",
    "GitRepo",
    "HealthCheckFailed",
    "evaluate_health",
    "gitops",
]
