"""Kustomize overlays, the GitOps directory and the Argo CD manifests.

Unit: every kustomization builds offline and holds what the seed and the design ask for.
Integration: every rendered object passes a server-side dry run against the test control plane
(a real kube-apiserver) with our CRDs and the third-party CRDs (Argo CD, prometheus-operator)
installed, so schema, CEL rules and defaults are checked by the API server itself.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops_testenv import images as images_
from modelops_testenv import product, thirdparty

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["kind", "minikube", "microk8s"]
REPO = "https://github.com/someone/modelops.git"
KUSTOMIZATIONS = [
    "config/default",
    *(f"config/overlays/{o}" for o in OVERLAYS),
    "config/overlays/e2e",
    "config/samples",
    "config/gitops/platform",
    "config/gitops/models",
    "argocd/apps",
]


def _rendered(command: list[str]) -> tuple[dict[str, Any], ...]:
    """The YAML documents a command prints."""
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


@cache
def build(path: str) -> tuple[dict[str, Any], ...]:
    return _rendered(["kubectl", "kustomize", str(ROOT / path)])


@cache
def argocd_bootstrap() -> tuple[dict[str, Any], ...]:
    return _rendered(
        [str(ROOT / "argocd/install.sh"), "--render", "--repo", REPO, "--revision", "main"]
    )


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_builds(path: str):
    assert build(path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_the_seed_layout(overlay: str):
    docs = build(f"config/overlays/{overlay}")
    sample = find(docs, "ModelDeployment", "iris")
    assert sample["metadata"]["namespace"] == "mlops-puj"
    assert sample["spec"]["replicas"] == 2
    assert sample["spec"]["minAccuracy"] == 0.85
    assert sample["spec"]["loadRate"] == 1
    ports = {
        d["metadata"]["name"]: (d["metadata"]["namespace"], d["spec"]["ports"][0].get("nodePort"))
        for d in docs
        if d["kind"] == "Service"
    }
    assert ports["ml-api-service"] == ("mlops-puj", 32675)
    assert ports["prometheus-service"] == ("modelops-system", 30623)
    assert ports["grafana-service"] == ("modelops-system", 32618)
    api = find(docs, "Service", "ml-api-service")
    assert api["spec"]["type"] == "NodePort"
    assert api["spec"]["selector"] == {
        "modelops.dev/name": "iris",
        "app.kubernetes.io/component": "server",
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_uses_local_images_only(overlay: str):
    manager = find(build(f"config/overlays/{overlay}"), "Deployment", "modelops-operator")
    container = manager["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "modelops-operator:dev"
    assert container["imagePullPolicy"] == "Never"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELOPS_TRAINER_IMAGE"] == "modelops-trainer:dev"
    assert env["MODELOPS_SERVER_IMAGE"] == "modelops-server:dev"
    assert env["MODELOPS_LOADGEN_IMAGE"] == "modelops-loadgen:dev"
    assert env["MODELOPS_IMAGE_PULL_POLICY"] == "Never"


def test_e2e_overlay_is_the_default_without_grafana():
    """What tests/e2e deploy is what users deploy, less Grafana (no image on the test node)."""

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    shipped = [d for d in build("config/default") if "grafana" not in key(d)[1]]
    assert sorted(build("config/overlays/e2e"), key=key) == sorted(shipped, key=key)


def test_e2e_kustomization_changes_only_image_names(tmp_path: Path):
    images = {
        "operator": "localhost/modelops-operator:abc",
        "trainer": "localhost/modelops-trainer:def",
        "server": "registry.example:5000/modelops-server@sha256:" + "0" * 64,
        "loadgen": "modelops-loadgen:ci-1234567",
        "prometheus": "localhost/modelops-prometheus:v2.53.3-0123",
    }
    docs = product.render_overlay(ROOT, images)
    shipped = build("config/overlays/e2e")
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        (d["kind"], d["metadata"]["name"]) for d in shipped
    ]
    manager = find(tuple(docs), "Deployment", "modelops-operator")
    container = manager["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == images["operator"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELOPS_TRAINER_IMAGE"] == images["trainer"]
    assert env["MODELOPS_SERVER_IMAGE"] == images["server"]
    assert env["MODELOPS_LOADGEN_IMAGE"] == images["loadgen"]
    prometheus = find(tuple(docs), "Deployment", "prometheus")
    assert prometheus["spec"]["template"]["spec"]["containers"][0]["image"] == images["prometheus"]

    # Everything else as shipped: blank out the image names on both sides and compare.
    def blank(doc: dict[str, Any]) -> str:
        text = yaml.safe_dump(doc)
        for name in [*images.values(), "modelops-operator:0.1.0", "prom/prometheus:v2.53.3"]:
            text = text.replace(name, "IMAGE")
        return re.sub(r"modelops-(trainer|server|loadgen):0\.1\.0", "IMAGE", text)

    assert [blank(d) for d in docs] == [blank(d) for d in shipped]


def test_e2e_existing_cluster_needs_every_image():
    assert product.ExistingCluster.from_env({}) is None
    with pytest.raises(ValueError, match="MODELOPS_E2E_SERVER_IMAGE"):
        product.ExistingCluster.from_env(
            {
                "MODELOPS_E2E_KUBECONFIG": "/k",
                "MODELOPS_E2E_OPERATOR_IMAGE": "o:1",
                "MODELOPS_E2E_TRAINER_IMAGE": "t:1",
                "MODELOPS_E2E_LOADGEN_IMAGE": "l:1",
            }
        )
    found = product.ExistingCluster.from_env(
        {
            "MODELOPS_E2E_KUBECONFIG": "/k",
            "MODELOPS_E2E_CONTEXT": "kind-modelops",
            **{f"MODELOPS_E2E_{c.upper()}_IMAGE": f"modelops-{c}:ci" for c in images_.COMPONENTS},
        }
    )
    assert found is not None
    assert found.kubectl.argv("get", "md")[:5] == [
        "kubectl", "--kubeconfig", "/k", "--context", "kind-modelops",
    ]  # fmt: skip
    assert "prometheus" not in found.images  # the shipped prom/prometheus then


def test_up_applies_the_platform_before_the_sample():
    """hack/up.sh splits the overlay by the modelops.dev/part label: check the split."""
    docs = build("config/overlays/kind")
    models = [
        d for d in docs if d["metadata"].get("labels", {}).get("modelops.dev/part") == "models"
    ]
    assert {(d["kind"], d["metadata"]["name"]) for d in models} == {
        ("Namespace", "mlops-puj"),
        ("ModelDeployment", "iris"),
        ("Service", "ml-api-service"),
    }
    platform = [d for d in docs if d not in models]
    assert {"CustomResourceDefinition", "Deployment", "ClusterKopfPeering"} <= {
        d["kind"] for d in platform
    }


def test_manager_is_locked_down():
    manager = find(build("config/default"), "Deployment", "modelops-operator")
    spec = manager["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(container["resources"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELOPS_PEERING_NAME"] == "modelops"
    find(build("config/default"), "ClusterKopfPeering", env["MODELOPS_PEERING_NAME"])
    assert pod["serviceAccountName"] == "modelops-operator"


def test_gitops_models_dir_matches_the_release_record():
    cr = find(build("config/gitops/models"), "ModelDeployment", "iris")
    record = yaml.safe_load((ROOT / "config/gitops/models/iris.release.json").read_text())
    assert record["modelVersion"] == cr["spec"]["modelVersion"]
    training = yaml.safe_load((ROOT / "config/gitops/training/iris.yaml").read_text())
    assert cr["spec"]["training"] == training["training"]
    assert cr["spec"]["minAccuracy"] == training["minAccuracy"]


def test_argocd_syncs_the_gitops_dirs_but_not_the_training_config():
    """The release pipeline's input (config/gitops/training) is no manifest: nothing syncs it."""
    apps = build("argocd/apps")
    paths = {
        find(apps, "Application", name)["spec"]["source"]["path"]
        for name in ("modelops-platform", "modelops-models")
    }
    assert paths == {"config/gitops/platform", "config/gitops/models"}
    training = ROOT / "config/gitops/training"
    assert (training / "iris.yaml").is_file()
    for path in paths:
        assert (ROOT / path / "kustomization.yaml").is_file()  # kustomize: listed files only
        assert not training.is_relative_to(ROOT / path), f"{path} would sync {training}"
        assert not (ROOT / path).is_relative_to(training)


def test_project_allows_exactly_what_the_applications_deploy():
    apps = build("argocd/apps")
    project = find(apps, "AppProject", "modelops")["spec"]
    cluster_ok = {(r["group"], r["kind"]) for r in project["clusterResourceWhitelist"]}
    ns_ok = {(r["group"], r["kind"]) for r in project["namespaceResourceWhitelist"]}
    namespaces = {d["namespace"] for d in project["destinations"]}
    crds = {
        d["spec"]["names"]["kind"]: d["spec"]["scope"]
        for d in build("config/gitops/platform")
        if d["kind"] == "CustomResourceDefinition"
    }
    used: set[tuple[str, str]] = set()
    for app in ("modelops-platform", "modelops-models"):
        spec = find(apps, "Application", app)["spec"]
        assert spec["project"] == "modelops"
        assert spec["destination"]["namespace"] in namespaces
        assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        for doc in build(spec["source"]["path"]):
            group = doc["apiVersion"].rpartition("/")[0]
            key = (group, doc["kind"])
            used.add(key)
            cluster_scoped = (
                doc["kind"]
                in {
                    "Namespace",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "CustomResourceDefinition",
                }
                or crds.get(doc["kind"]) == "Cluster"
            )
            if cluster_scoped:
                assert key in cluster_ok, f"{app}: cluster kind {key} not allowed by the project"
            else:
                assert key in ns_ok, f"{app}: kind {key} not allowed by the project"
                ns = doc["metadata"].get("namespace", spec["destination"]["namespace"])
                assert ns in namespaces, f"{app}: {doc['kind']} in namespace {ns}"
    # Nothing allowed that Git does not hold (the operator's children are not synced by Argo CD).
    assert (cluster_ok | ns_ok) - used == set()


def test_models_app_ignores_hpa_replicas():
    spec = find(build("argocd/apps"), "Application", "modelops-models")["spec"]
    assert spec["ignoreDifferences"] == [
        {"group": "modelops.dev", "kind": "ModelDeployment", "jsonPointers": ["/spec/replicas"]}
    ]
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]


def test_install_render_fills_in_the_repository():
    docs = argocd_bootstrap()
    text = yaml.safe_dump_all(docs)
    assert "PLACEHOLDER" not in text
    root = find(docs, "Application", "modelops")
    assert root["spec"]["source"]["repoURL"] == REPO
    assert root["spec"]["source"]["path"] == "argocd/apps"
    assert find(docs, "AppProject", "modelops-bootstrap")["spec"]["sourceRepos"] == [REPO]
    # The children get the same repository through the root's kustomize patches.
    patches = root["spec"]["source"]["kustomize"]["patches"]
    assert any(REPO in p["patch"] for p in patches)
    assert {p["target"]["kind"] for p in patches} == {"Application", "AppProject"}


def test_install_render_converts_ssh_remotes():
    out = subprocess.run(
        [str(ROOT / "argocd/install.sh"), "--render", "--repo", "git@github.com:me/fork.git"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "repoURL: https://github.com/me/fork.git" in out


# Server-side dry runs against a real kube-apiserver ----------------------------------------


@pytest.fixture(scope="module")
def crds_installed(control_plane: Any) -> None:
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(thirdparty.crds_dir())
    )
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "config/crd")
    )
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    for ns in ("modelops-system", "mlops-puj", "argocd"):
        if control_plane.kubectl("get", "namespace", ns, check=False).returncode != 0:
            control_plane.kubectl("create", "namespace", ns)


def dry_run(control_plane: Any, docs: tuple[dict[str, Any], ...]) -> str:
    proc = control_plane.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=delivery-test",
        "--force-conflicts",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_object_passes_a_server_side_dry_run(control_plane: Any, crds_installed: None, path):
    docs = build(path)
    if path == "config/samples":  # namespace-less sample: as a user applies it, into mlops-puj
        docs = tuple({**d, "metadata": {**d["metadata"], "namespace": "mlops-puj"}} for d in docs)
    out = dry_run(control_plane, docs)
    assert out.count("(server dry run)") == len(docs)


@pytest.mark.integration
def test_argocd_bootstrap_passes_a_server_side_dry_run(control_plane: Any, crds_installed: None):
    docs = argocd_bootstrap()
    out = dry_run(control_plane, docs)
    assert out.count("(server dry run)") == len(docs)
    assert {d["kind"] for d in docs} == {"ConfigMap", "AppProject", "Application"}


@pytest.mark.integration
def test_api_server_rejects_a_broken_application(control_plane: Any, crds_installed: None):
    """The dry runs above can fail: an Application without a destination is refused."""
    app = dict(find(build("argocd/apps"), "Application", "modelops-models"))
    app["spec"] = {k: v for k, v in app["spec"].items() if k != "destination"}
    proc = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-",
        input=yaml.safe_dump(app), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "destination" in proc.stderr
