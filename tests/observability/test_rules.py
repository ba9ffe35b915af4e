"""Recording and alert rules: promtool checks, promtool unit tests, and their completeness."""

from __future__ import annotations

import re

import yaml

SEVERITIES = {"critical", "warning", "info"}
# What the issue asks to alert on, each mapped to the alert that covers it.
REQUIRED_ALERTS = {
    "model server down": "ModelServerDown",
    "error ratio high": "ModelServerErrorRatioHigh",
    "p99 latency high": "ModelServerLatencyP99High",
    "no traffic": "ModelServerNoTraffic",
    "load generator behind its target rate": "LoadGeneratorBehind",
    "ModelDeployment Degraded": "ModelDeploymentDegraded",
    "ModelDeployment Failed": "ModelDeploymentFailed",
    "serving accuracy below its minimum": "ModelAccuracyBelowMinimum",
    "online accuracy dropping": "ModelOnlineAccuracyDropping",
}


def test_promtool_check_rules_accepts_every_rule_file(obs):
    result = obs.run(obs.tool("promtool"), "check", "rules", *map(str, obs.RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(obs.RULE_FILES) >= 2


def test_promtool_rule_unit_tests_pass(obs):
    result = obs.run(obs.tool("promtool"), "test", "rules", str(obs.RULES_TEST), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test(obs):
    cases = yaml.safe_load(obs.RULES_TEST.read_text())
    assert sorted(cases["rule_files"]) == sorted(
        f"../../config/prometheus/rules/{p.name}" for p in obs.RULE_FILES
    )
    firing: set[str] = set()
    silent: set[str] = set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {a["alert"] for a in obs.alerts()}
    assert names - firing == set(), "alerts without a test where they fire"
    assert names - silent == set(), "alerts without a test where they stay silent"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def test_the_alerts_the_issue_asks_for_exist(obs):
    names = {a["alert"] for a in obs.alerts()}
    missing = {what: name for what, name in REQUIRED_ALERTS.items() if name not in names}
    assert missing == {}


def test_alerts_carry_severity_for_and_actionable_annotations(obs):
    for alert in obs.alerts():
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        assert re.fullmatch(r"\d+[smh]", str(alert.get("for", ""))), f"{name}: no 'for'"
        annotations = alert.get("annotations", {})
        assert annotations.get("summary"), name
        assert len(annotations.get("description", "")) > 60, f"{name}: say what to do"


def test_rule_names_are_unique_and_follow_conventions(obs):
    rules = obs.load_rules()
    names = [r.get("record") or r.get("alert") for r in rules]
    assert len(names) == len(set(names))
    for r in rules:
        if "record" in r:
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", r["record"]), r["record"]
        else:
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", r["alert"]), r["alert"]


def test_both_configurations_load_the_same_rule_files(obs):
    cluster = yaml.safe_load(obs.CLUSTER_CONFIG.read_text())
    local = yaml.safe_load(obs.LOCAL_CONFIG.read_text())
    assert local["rule_files"] == ["@RULES_DIR@/*.yaml"]
    assert cluster["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    # The cluster's rules ConfigMap (mounted at /etc/prometheus/rules) holds every rule file.
    kustomization = yaml.safe_load((obs.PROM_DIR / "kustomization.yaml").read_text())
    (rules_cm,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "prometheus-rules"
    ]
    assert sorted(rules_cm["files"]) == sorted(
        str(p.relative_to(obs.PROM_DIR)) for p in obs.RULES_DIR.glob("*")
    )
