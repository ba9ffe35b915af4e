"""The shipped Prometheus configurations and manifests (promtool, kustomize, no cluster)."""

from __future__ import annotations

import pytest
import yaml


def kustomize(obs, path) -> list[dict]:
    result = obs.run(obs.tool("kubectl"), "kustomize", str(path))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_promtool_accepts_the_local_config(obs, tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(obs.render_local_config(tmp_path / "file_sd"))
    result = obs.run(obs.tool("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool also loaded every rule file through the rendered @RULES_DIR@ glob.
    for rule_file in obs.RULE_FILES:
        assert rule_file.name in result.stdout


def test_local_config_has_no_placeholder_left_after_rendering(obs, tmp_path):
    text = obs.render_local_config(tmp_path)
    assert "@" not in text.replace(str(tmp_path), "")


@pytest.mark.timeout(1800)  # a cold build of promtool on a busy 2-core machine
def test_promtool_accepts_the_cluster_config(obs, tmp_path):
    """Checked with a promtool that knows kubernetes_sd (Debian's is built without it)."""
    promtool = obs.kubernetes_promtool()
    config = tmp_path / "prometheus.yml"
    # The config names the rules by their in-pod path; point it at the repository's.
    config.write_text(
        obs.CLUSTER_CONFIG.read_text().replace("/etc/prometheus/rules", str(obs.RULES_DIR))
    )
    result = obs.run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    result = obs.run(promtool, "test", "rules", str(obs.RULES_TEST), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_configs_scrape_the_same_job_with_the_same_target_labels(obs):
    cluster = yaml.safe_load(obs.CLUSTER_CONFIG.read_text())
    local = yaml.safe_load(obs.LOCAL_CONFIG.read_text())
    (cluster_job,) = [j for j in cluster["scrape_configs"] if j["job_name"] == "modelops"]
    (local_job,) = [j for j in local["scrape_configs"] if j["job_name"] == "modelops"]
    assert cluster_job["kubernetes_sd_configs"][0]["role"] == "pod"
    assert local_job["file_sd_configs"][0]["files"] == ["@FILE_SD_DIR@/*.json"]
    targets = {r.get("target_label") for r in cluster_job["relabel_configs"]}
    assert {"namespace", "pod", "modeldeployment", "version", "component"} <= targets
    sources = {s for r in cluster_job["relabel_configs"] for s in r.get("source_labels", [])}
    # The scrape contract: the label and annotations the operator puts on its pods.
    assert {
        "__meta_kubernetes_pod_label_modelops_dev_scrape",
        "__meta_kubernetes_pod_annotation_prometheus_io_port",
        "__meta_kubernetes_pod_annotation_prometheus_io_path",
        "__meta_kubernetes_pod_label_modelops_dev_name",
        "__meta_kubernetes_pod_label_modelops_dev_version",
    } <= sources


def test_prometheus_manifests(obs):
    docs = kustomize(obs, obs.PROM_DIR)
    (deployment,) = by_kind(docs, "Deployment")
    (service,) = by_kind(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["name"] == "prometheus-service"
    assert service["spec"]["ports"][0]["port"] == 9090
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert any(a.startswith("--storage.tsdb.retention.time=") for a in args)
    assert any(a.startswith("--storage.tsdb.retention.size=") for a in args)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The generated ConfigMaps hold exactly the repository's files, under hashed names the
    # Deployment refers to (an edit rolls the pod).
    config_maps = {cm["metadata"]["name"]: cm for cm in by_kind(docs, "ConfigMap")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = config_maps[volumes["config"]["configMap"]["name"]]
    assert config["data"]["prometheus.yml"] == obs.CLUSTER_CONFIG.read_text()
    rules = config_maps[volumes["rules"]["configMap"]["name"]]
    assert rules["data"] == {p.name: p.read_text() for p in obs.RULE_FILES}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["rules"] == "/etc/prometheus/rules"


def test_prometheus_rbac_is_least_privilege(obs):
    docs = kustomize(obs, obs.PROM_DIR)
    (role,) = by_kind(docs, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    assert by_kind(docs, "Role") == []
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    (deployment,) = by_kind(docs, "Deployment")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
         "namespace": sa["metadata"]["namespace"]}
    ]  # fmt: skip
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_an_overlay_namespace_moves_the_binding_subject_too(obs, tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    rel = "../" * len(overlay.parts[1:]) + str(obs.PROM_DIR).lstrip("/")
    (overlay / "kustomization.yaml").write_text(f"namespace: mlops-puj\nresources:\n  - {rel}\n")
    docs = kustomize(obs, overlay)
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "mlops-puj"
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "ClusterRole"} - {
        None
    } == {"mlops-puj"}


def test_checking_promtool_matches_the_shipped_image(obs):
    deployment = yaml.safe_load((obs.PROM_DIR / "deployment.yaml").read_text())
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    go_mod = (obs.REPO / "hack" / "promtool" / "go.mod").read_text()
    (module_version,) = [
        line.split()[1]
        for line in go_mod.splitlines()
        if line.strip().startswith("github.com/prometheus/prometheus ")
    ]
    # Prometheus 2.X.Y is Go module v0.X.Y.
    assert image == "prom/prometheus:v2." + module_version.removeprefix("v0.")
