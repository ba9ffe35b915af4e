"""Grafana: dashboards' structure, provisioning and manifests (no Grafana process needed)."""

from __future__ import annotations

import re

import pytest
import yaml

PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "bargauge", "state-timeline", "text"}


def datasource_uids(obs) -> set[str]:
    provisioned = yaml.safe_load(obs.DATASOURCES.read_text())["datasources"]
    return {d["uid"] for d in provisioned if d["type"] == "prometheus"}


def kustomize(obs, path) -> list[dict]:
    result = obs.run(obs.tool("kubectl"), "kustomize", str(path))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(params=["model-serving.json", "operator.json"])
def dashboard(request, obs):
    path = obs.GRAFANA_DIR / "dashboards" / request.param
    assert path in obs.DASHBOARDS
    return obs.load_dashboard(path)


def test_dashboard_structure(obs, dashboard):
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = obs.iter_panels(dashboard)
    assert len(panels) >= 8
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        assert p["type"] in PANEL_TYPES | {"row"}, p["title"]
        grid = p["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, p["title"]
        assert p.get("title"), p["id"]
        assert p.get("description"), f"{p['title']}: say what the panel shows"


def test_every_panel_has_a_query(obs, dashboard):
    for p in obs.iter_panels(dashboard):
        if p["type"] in {"row", "text"}:
            continue
        targets = p.get("targets", [])
        assert targets, f"{p['title']} has no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in targets:
            assert t.get("expr", "").strip(), f"{p['title']} {t['refId']}: empty query"
            assert t["expr"].count("(") == t["expr"].count(")"), p["title"]


def test_every_datasource_reference_resolves(obs, dashboard):
    uids = datasource_uids(obs)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    refs = []
    for p in obs.iter_panels(dashboard):
        refs.append(p.get("datasource"))
        refs.extend(t.get("datasource") for t in p.get("targets", []))
    refs.extend(v.get("datasource") for v in dashboard["templating"]["list"])
    assert refs
    for ref in refs:
        assert isinstance(ref, dict), f"datasource by name or missing: {ref!r}"
        uid = ref["uid"]
        m = re.fullmatch(r"\$\{?(\w+)\}?", uid)
        assert (m and m.group(1) in variables) or uid in uids, f"unknown datasource {uid}"
        assert ref["type"] == "prometheus"


def test_every_variable_used_is_defined(obs, dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
    texts = [t["expr"] for *_, t in [(p, t) for p in obs.iter_panels(dashboard)
                                     for t in p.get("targets", [])]]  # fmt: skip
    texts += [v["definition"] for v in dashboard["templating"]["list"]]
    for text in texts:
        for name in re.findall(r"\$\{?(\w+)", text):
            assert name in defined | builtin, f"undefined variable ${name} in {text}"


def test_model_serving_picks_the_modeldeployment(obs):
    dashboard = obs.load_dashboard(obs.GRAFANA_DIR / "dashboards" / "model-serving.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "modeldeployment" in variables and "namespace" in variables
    assert "$namespace" in variables["modeldeployment"]["definition"]
    for p in obs.iter_panels(dashboard):
        for t in p.get("targets", []):
            assert 'modeldeployment="$modeldeployment"' in t["expr"], p["title"]


def test_the_issue_panels_exist(obs):
    titles = {}
    for name in ("model-serving.json", "operator.json"):
        dashboard = obs.load_dashboard(obs.GRAFANA_DIR / "dashboards" / name)
        titles[name] = {p["title"] for p in obs.iter_panels(dashboard)}
    for needle in ("species and version", "p50 / p95 / p99", "Error ratio", "Ready replicas",
                   "Accuracy per version", "Online accuracy", "target vs achieved"):  # fmt: skip
        assert any(needle in t for t in titles["model-serving.json"]), needle
    for needle in ("Reconciles", "errors", "duration", "Phase"):
        assert any(needle in t for t in titles["operator.json"]), needle


def test_grafana_manifests_provision_the_repository_files(obs):
    docs = kustomize(obs, obs.GRAFANA_DIR)
    assert [d for d in docs if d["kind"] == "Secret"] == [], "no Secret may be committed"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["name"] == "grafana-service"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env, "the password comes from a Secret file"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["admin"]["secret"]["secretName"] == "grafana-admin"
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == mounts["admin"] + "/password"
    config_maps = {cm["metadata"]["name"]: cm["data"] for cm in docs if cm["kind"] == "ConfigMap"}
    dashboards = config_maps[volumes["dashboards"]["configMap"]["name"]]
    assert dashboards == {p.name: p.read_text() for p in obs.DASHBOARDS}
    providers = yaml.safe_load(
        config_maps[volumes["dashboard-providers"]["configMap"]["name"]]["dashboards.yaml"]
    )
    assert providers["providers"][0]["options"]["path"] == mounts["dashboards"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounts["dashboards"] + "/")
    assert home.rsplit("/", 1)[1] in dashboards
    datasources = config_maps[volumes["datasources"]["configMap"]["name"]]["datasources.yaml"]
    assert datasources == obs.DATASOURCES.read_text()


def test_datasource_points_at_the_shipped_prometheus_service(obs):
    (source,) = yaml.safe_load(obs.DATASOURCES.read_text())["datasources"]
    service = yaml.safe_load((obs.PROM_DIR / "service.yaml").read_text())
    assert source["url"] == (
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    )
    grafana = yaml.safe_load((obs.GRAFANA_DIR / "kustomization.yaml").read_text())
    prometheus = yaml.safe_load((obs.PROM_DIR / "kustomization.yaml").read_text())
    assert grafana["namespace"] == prometheus["namespace"], (
        "the short Service name needs one namespace"
    )
