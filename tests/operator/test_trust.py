"""Only what the operator trained and gated serves: artifact trust and the admin's rules (pure)."""

from __future__ import annotations

import copy

import pytest

from modelops import names
from modelops.core import render
from modelops.core.plan import harvest_needed, plan
from modelops.core.state import Observed
from modelops.settings import Settings, SettingsError

from .test_reconcile import SETTINGS, T0, T1, T2, _serving_state, cr, job, results, succeeded

pytestmark = pytest.mark.unit
__all__ = ["results"]  # the module fixture, shared

FORGED_SHA = "f" * 64


def forged(version: str, sha: str = FORGED_SHA, owned: bool = True) -> dict:
    """A ConfigMap as someone who can create ConfigMaps could make it: the artifact's name and
    labels, an owner reference copied from the resource, an accuracy of their choosing."""
    metadata = {
        "format": "modelops.dev/model-artifact/v2",
        "model_sha256": sha,
        "metrics": {"test_accuracy": 0.999},
        "created_at": T0,
    }
    cm = render.artifact_configmap(cr(version), version, metadata, b"anything")
    if not owned:
        cm["metadata"].pop("ownerReferences")
    return cm


def degraded(p) -> dict:
    return next(c for c in p.status["conditions"] if c["type"] == "Degraded")


def test_a_precreated_artifact_is_neither_trained_over_nor_served_nor_gated():
    p = plan(cr("v1"), Observed(artifacts={"v1": forged("v1")}), {}, SETTINGS, T0)
    assert not p.create and [m["kind"] for m in p.apply] == ["Service"]  # no Job, no servers
    assert not p.delete  # it is reported, never deleted
    assert p.status["phase"] == "Failed" and p.status["history"] == []
    assert p.status["gate"]["result"] == "Pending"
    assert p.status["gate"]["reason"] == names.REASON_ARTIFACT_NOT_TRUSTED
    cond = degraded(p)
    assert cond["status"] == "True" and cond["reason"] == names.REASON_ARTIFACT_NOT_TRUSTED
    assert "ConfigMap iris-model-v1 exists but was not stored by the operator" in cond["message"]
    assert "kubectl delete configmap iris-model-v1 -n ml" in cond["message"]
    assert [(e.type, e.reason) for e in p.events] == [
        ("Warning", names.REASON_ARTIFACT_NOT_TRUSTED)
    ]
    # Level-based: the next pass says the same and writes nothing.
    observed = Observed(artifacts={"v1": forged("v1")}, service=p.apply[0])
    again = plan(cr("v1", status=p.status), observed, {}, SETTINGS, T1)
    assert again.writes == 0


def test_without_an_owner_reference_even_the_right_digest_is_not_trusted(results):
    outcome = succeeded(results)
    cm = forged("v1", outcome.metadata["model_sha256"], owned=False)
    observed = Observed(jobs={"v1": job()}, artifacts={"v1": cm})
    assert harvest_needed(cr(), observed) == ["v1"]
    p = plan(cr(), observed, {"v1": outcome}, SETTINGS, T0)
    assert p.status["history"] == [] and degraded(p)["reason"] == names.REASON_ARTIFACT_NOT_TRUSTED


def test_a_foreign_artifact_does_not_replace_what_the_job_produced(results):
    # The operator's own Job finished; someone's ConfigMap holds the name first.
    observed = Observed(jobs={"v1": job()}, artifacts={"v1": forged("v1")})
    assert harvest_needed(cr(), observed) == ["v1"]
    p = plan(cr(), observed, {"v1": succeeded(results)}, SETTINGS, T0)
    assert not p.create  # nothing stored over it, no gate verdict from either copy
    assert p.status["history"] == [] and p.status["phase"] == "Failed"
    # Once it is deleted, the Job's result is stored and gated as usual.
    cleared = plan(
        cr(status=p.status), Observed(jobs={"v1": job()}), {"v1": succeeded(results)}, SETTINGS, T1
    )
    assert [m["kind"] for m in cleared.create] == ["ConfigMap"]
    assert cleared.status["history"][0]["outcome"] == "Accepted"
    assert degraded(cleared)["status"] == "False"


def test_the_next_version_preseeded_keeps_the_last_good_one_serving(results):
    status, observed = _serving_state(results)
    obs = Observed(**{**observed.__dict__, "artifacts": {**observed.artifacts, "v2": forged("v2")}})
    p = plan(cr("v2", status=status, generation=2), obs, {}, SETTINGS, T2)
    assert not p.create and not p.apply  # no Job for v2, the servers stay at v1
    assert p.status["servingVersion"] == "v1" and p.status["phase"] == "Degraded"
    assert "still serving v1" in degraded(p)["message"]


def test_servers_are_pinned_to_the_recorded_digest(results):
    running = {"v1": job()}
    outcome = succeeded(results)
    p = plan(cr(), Observed(jobs=running), {"v1": outcome}, SETTINGS, T0)
    server = next(m for m in p.apply if m["metadata"]["name"] == "iris-server")
    env = {
        e["name"]: e["value"] for e in server["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELOPS_SERVER_MODEL_SHA256"] == outcome.metadata["model_sha256"]
    assert p.status["history"][0]["modelSha256"] == outcome.metadata["model_sha256"]


def test_an_image_the_admin_did_not_allow_is_not_rolled_out(results):
    status, observed = _serving_state(results)
    p = plan(cr(status=status, serving={"image": "evil.example/srv:1"}), observed, {}, SETTINGS, T2)
    assert not p.apply  # the running Deployment is left as it is
    assert p.status["phase"] == "Degraded" and p.status["servingVersion"] == "v1"
    cond = degraded(p)
    assert cond["reason"] == names.REASON_IMAGE_NOT_ALLOWED
    assert "spec.serving.image evil.example/srv:1 is not allowed" in cond["message"]
    assert "MODELOPS_ALLOWED_IMAGE_PREFIXES" in cond["message"]
    # Another tag of the configured server image is fine, and so is an allowed prefix.
    same_repo = plan(
        cr(status=status, serving={"image": "modelops-server:next"}), observed, {}, SETTINGS, T2
    )
    assert degraded(same_repo)["status"] == "False"
    allowed = Settings(allowed_image_prefixes=("evil.example/",))
    ok = plan(cr(status=status, serving={"image": "evil.example/srv:1"}), observed, {}, allowed, T2)
    server = next(m for m in ok.apply if m["metadata"]["name"] == "iris-server")
    assert server["spec"]["template"]["spec"]["containers"][0]["image"] == "evil.example/srv:1"


@pytest.mark.parametrize(
    ("settings", "url", "problem"),
    [
        (
            Settings(dataset_url_schemes=("https",)),
            "http://data.example.org/d.csv",
            "scheme 'http'",
        ),
        (
            Settings(dataset_url_hosts=(".example.org",)),
            "https://files.invalid/d.csv",
            "host 'files.invalid'",
        ),
    ],
)
def test_a_dataset_url_the_admin_did_not_allow_starts_no_job(settings, url, problem):
    p = plan(cr(training={"dataset": {"url": url}}), Observed(), {}, settings, T0)
    assert not p.create
    cond = degraded(p)
    assert cond["reason"] == names.REASON_DATASET_URL_NOT_ALLOWED and problem in cond["message"]
    allowed = plan(
        cr(training={"dataset": {"url": "https://data.example.org/d.csv"}}),
        Observed(),
        {},
        settings,
        T0,
    )
    job_ = allowed.create[0]
    args = job_["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--allowed-url-schemes") + 1] == ",".join(settings.dataset_url_schemes)
    assert args[args.index("--allowed-url-hosts") + 1] == ",".join(settings.dataset_url_hosts)


def test_admin_settings_from_the_environment():
    s = Settings.from_env(
        {
            "MODELOPS_ALLOWED_IMAGE_PREFIXES": "ghcr.io/acme/, registry.acme/ml/",
            "MODELOPS_DATASET_URL_SCHEMES": "HTTPS",
            "MODELOPS_DATASET_URL_HOSTS": ".acme.example",
            "MODELOPS_DATASET_MAX_BYTES": "1048576",
            "MODELOPS_DATASET_TIMEOUT_SECONDS": "10",
        }
    )
    assert s.allowed_image_prefixes == ("ghcr.io/acme/", "registry.acme/ml/")
    assert s.dataset_url_schemes == ("https",) and s.dataset_url_hosts == (".acme.example",)
    assert (s.dataset_max_bytes, s.dataset_timeout_seconds) == (1048576, 10.0)
    assert s.image_allowed("ghcr.io/acme/server:1") and not s.image_allowed("ghcr.io/other/x:1")
    with pytest.raises(SettingsError, match="MODELOPS_DATASET_MAX_BYTES"):
        Settings.from_env({"MODELOPS_DATASET_MAX_BYTES": "10"})


def test_default_image_rule_is_the_configured_server_repository():
    s = Settings(server_image="registry.local:5000/team/modelops-server:1.2")
    assert s.image_allowed("registry.local:5000/team/modelops-server:1.3")
    assert s.image_allowed("registry.local:5000/team/modelops-server@sha256:" + "a" * 64)
    assert not s.image_allowed("registry.local:5000/team/modelops-server-evil:1")
    assert not s.image_allowed("registry.local:5000/other:1")
    assert copy.copy(s).image_rule.startswith("only registry.local:5000/team/modelops-server")
