"""Pure rendering of the children (no cluster)."""

import base64
import json

import pytest

from modelops.core import render
from modelops.settings import Settings
from modelops.spec import ModelDeploymentSpec

CR = {
    "apiVersion": "modelops.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 1},
    "spec": {"modelVersion": "v2"},
}
SETTINGS = Settings()


def spec(**extra):
    return ModelDeploymentSpec.from_dict({**CR["spec"], **extra})


def _assert_locked_down(pod_spec):
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod_spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["requests"] and c["resources"]["limits"]


def _assert_owned(manifest, component):
    meta = manifest["metadata"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "iris",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelops"
    assert meta["labels"]["app.kubernetes.io/component"] == component
    assert meta["labels"]["modelops.dev/name"] == "iris"
    assert meta["namespace"] == "ml"


def test_trainer_job():
    job = render.trainer_job(CR, spec(training={"hyperparameters": {"n_neighbors": 7}}), SETTINGS)
    assert job["metadata"]["name"] == "iris-train-v2"
    assert job["metadata"]["labels"]["modelops.dev/version"] == "v2"
    _assert_owned(job, "trainer")
    assert job["spec"]["activeDeadlineSeconds"] == 600
    # Real failures end the Job at once; only disruptions are run again.
    assert job["spec"]["backoffLimit"] == render.TRAINER_DISRUPTION_RETRIES
    ignore, fail = job["spec"]["podFailurePolicy"]["rules"]
    assert ignore == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "NotIn",
        "values": [0, 143],
    }
    pod = job["spec"]["template"]["spec"]
    _assert_locked_down(pod)
    assert pod["restartPolicy"] == "Never"
    # SIGTERM reaches a trainer that is not PID 1 even before it installs its handler.
    assert pod["shareProcessNamespace"] is True
    c = pod["containers"][0]
    assert c["image"] == SETTINGS.trainer_image
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    args = c["args"]
    assert args[args.index("--params-json") + 1] == '{"n_neighbors":7}'
    assert args[args.index("--dataset") + 1] == "builtin:iris"
    assert args[args.index("--output-dir") + 1] == "/work/models"
    assert {"name": "work", "mountPath": "/work"} in c["volumeMounts"]


def test_trainer_args_parse_with_the_real_cli():
    from modelops_trainer.cli import build_parser

    s = spec(training={"testSize": 0.25, "seed": 7, "dataset": {"url": "https://h/d.csv"}})
    args = build_parser().parse_args(render.trainer_args(CR, s, SETTINGS))
    assert args.version == "v2" and args.test_size == 0.25 and args.seed == 7
    assert args.dataset == "https://h/d.csv" and args.emit_artifact
    assert str(args.result_file) == "/dev/termination-log"
    # The admin's download policy travels with a URL dataset.
    assert args.allowed_url_schemes == SETTINGS.dataset_url_schemes
    assert args.allowed_url_hosts == ()
    assert args.max_download_bytes == SETTINGS.dataset_max_bytes
    assert args.download_timeout == SETTINGS.dataset_timeout_seconds


def test_trainer_job_mounts_a_configmap_dataset():
    s = spec(training={"dataset": {"configMap": {"name": "flowers", "key": "f.csv"}}})
    job = render.trainer_job(CR, s, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--dataset") + 1] == "/data/f.csv"
    volume = next(v for v in pod["volumes"] if v["name"] == "dataset")
    assert volume["configMap"]["name"] == "flowers"


def test_artifact_configmap_is_immutable_and_exact():
    metadata = {"metrics": {"test_accuracy": 0.9}, "model_sha256": "ab", "created_at": "t"}
    cm = render.artifact_configmap(CR, "v2", metadata, b"\x00model")
    assert cm["metadata"]["name"] == "iris-model-v2" and cm["immutable"] is True
    _assert_owned(cm, "model")
    assert base64.b64decode(cm["binaryData"]["model.params"]) == b"\x00model"
    assert json.loads(cm["data"]["metadata.json"]) == metadata
    assert cm["metadata"]["annotations"]["modelops.dev/accuracy"] == "0.9"


def test_server_deployment():
    d = render.server_deployment(CR, spec(replicas=3), SETTINGS, "v1", "sha")
    assert d["metadata"]["name"] == "iris-server" and d["spec"]["replicas"] == 3
    _assert_owned(d, "server")
    assert d["spec"]["selector"]["matchLabels"] == {
        "modelops.dev/name": "iris",
        "app.kubernetes.io/component": "server",
        "modelops.dev/track": "stable",
    }
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert d["spec"]["progressDeadlineSeconds"] == 300  # the CRD's default
    stricter = render.server_deployment(
        CR, spec(serving={"progressDeadlineSeconds": 30}), SETTINGS, "v1", "sha"
    )
    assert stricter["spec"]["progressDeadlineSeconds"] == 30
    template = d["spec"]["template"]
    assert template["metadata"]["labels"]["modelops.dev/version"] == "v1"
    assert template["metadata"]["labels"]["modelops.dev/scrape"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    pod = template["spec"]
    _assert_locked_down(pod)
    c = pod["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MODELOPS_SERVER_ARTIFACT_DIR"] == "/models/v1"
    assert env["MODELOPS_SERVER_PORT"] == "8000"
    assert env["MODELOPS_SERVER_MAX_CONNECTION_AGE"] == "10"  # the CRD's default
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    model = next(v for v in pod["volumes"] if v["name"] == "model")
    assert model["configMap"]["name"] == "iris-model-v1"
    assert {"name": "model", "mountPath": "/models/v1", "readOnly": True} in c["volumeMounts"]


def test_server_pods_drain_before_they_stop():
    """A server pod being removed keeps serving while the Service rules drop it (the kubelet's
    preStop sleep), then has time to finish what is in flight before the kubelet kills it."""
    pod = render.server_deployment(CR, spec(), SETTINGS, "v1", "sha")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": render.DRAIN_SECONDS}}}
    assert render.DRAIN_SECONDS >= 5
    assert pod["terminationGracePeriodSeconds"] >= render.DRAIN_SECONDS + 10


def test_image_override():
    d = render.server_deployment(CR, spec(serving={"image": "mine:1"}), SETTINGS, "v1", "")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:1"


def test_service_selects_every_server_pod():
    svc = render.service(CR, spec(serving={"port": 9000}))
    assert svc["metadata"]["name"] == "iris"
    assert svc["spec"]["selector"] == render.server_selector("iris")
    assert svc["spec"]["ports"][0]["port"] == 9000
    assert render.endpoint("iris", "ml", 9000) == "http://iris.ml.svc:9000"


def test_loadgen():
    assert render.loadgen_deployment(CR, spec(loadRate=0), SETTINGS) is None
    d = render.loadgen_deployment(
        CR, spec(loadRate=2.5, loadGenerator={"payload": "iris"}), SETTINGS
    )
    assert d is not None
    _assert_owned(d, "loadgen")
    pod = d["spec"]["template"]["spec"]
    _assert_locked_down(pod)
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env == {
        "API_HOST": "iris",
        "API_PORT": "8000",
        "MODELOPS_LOADGEN_RATE": "2.5",
        "MODELOPS_LOADGEN_METRICS_PORT": "9100",
        "MODELOPS_LOADGEN_PAYLOAD": "iris",
        "MODELOPS_LOADGEN_ENDPOINT": "predict",
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    assert d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9100"
    assert d["spec"]["strategy"] == {"type": "Recreate"}


def test_monitors():
    sm = render.service_monitor(CR, spec(monitoring={"scrapeInterval": "30s"}))
    assert sm["kind"] == "ServiceMonitor"
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    selector = sm["spec"]["selector"]

    def selects(labels: dict[str, str]) -> bool:
        return selector["matchLabels"].items() <= labels.items() and all(
            labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"]
        )

    # The server Service and a Shadow candidate's; not the trainer's or load generator's pods.
    assert selects(render.service(CR, spec())["metadata"]["labels"])
    assert selects(render.candidate_service(CR, spec())["metadata"]["labels"])
    assert not selects(render.labels("iris", "loadgen"))
    pm = render.pod_monitor(CR, spec(), SETTINGS)
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("version", ["v1", "2024-06-01", "v1.2.3"])
def test_names_are_valid(version):
    import re

    for name in (render.job_name("iris", version), render.artifact_name("iris", version)):
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 63


def test_server_exposes_oip_grpc_and_lenient_probes():
    d = render.server_deployment(CR, spec(), SETTINGS, "v1", "ab" * 32)
    container = d["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELOPS_SERVER_GRPC_PORT"] == str(render.GRPC_PORT) == "8001"
    assert env["MODELOPS_SERVER_MODEL_SHA256"] == "ab" * 32
    assert {"name": "grpc", "containerPort": 8001, "protocol": "TCP"} in container["ports"]
    # Liveness never fails just because the server is busy: seconds to answer, not 1 s.
    assert container["livenessProbe"]["timeoutSeconds"] == 5
    assert container["readinessProbe"]["timeoutSeconds"] == 2
    ports = {p["name"]: p for p in render.service(CR, spec())["spec"]["ports"]}
    assert ports["grpc"] == {
        "name": "grpc",
        "port": 8001,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }


def _selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return selector.items() <= pod_labels.items()


@pytest.mark.parametrize("shadow", [False, True], ids=["canary", "shadow"])
def test_stable_and_candidate_selectors_never_overlap(shadow):
    """Each Deployment selects its own pods only; the one Service selects the stable pods and
    a Canary's (traffic by replica weight), never a Shadow's (they get copies only)."""
    s = spec()
    stable = render.server_deployment(CR, s, SETTINGS, "v1", "sha")
    candidate = render.candidate_deployment(CR, s, SETTINGS, "v2", "sha2", 1, shadow=shadow)
    service = render.service(CR, s)["spec"]["selector"]
    stable_pods = stable["spec"]["template"]["metadata"]["labels"]
    candidate_pods = candidate["spec"]["template"]["metadata"]["labels"]
    stable_sel = stable["spec"]["selector"]["matchLabels"]
    candidate_sel = candidate["spec"]["selector"]["matchLabels"]
    assert _selects(stable_sel, stable_pods) and _selects(candidate_sel, candidate_pods)
    assert not _selects(stable_sel, candidate_pods)
    assert not _selects(candidate_sel, stable_pods)
    assert _selects(service, stable_pods)
    assert _selects(service, candidate_pods) is not shadow
    (container,) = candidate["spec"]["template"]["spec"]["containers"]
    age = {e["name"]: e["value"] for e in container["env"]}["MODELOPS_SERVER_MAX_CONNECTION_AGE"]
    assert age == ("0" if shadow else "10")  # a Shadow's clients are the stable servers
    if shadow:  # the copies' Service: the candidate's pods only
        copies = render.candidate_service(CR, s)["spec"]["selector"]
        assert _selects(copies, candidate_pods) and not _selects(copies, stable_pods)


def test_a_stable_deployment_made_before_the_track_label_keeps_its_selector():
    """A Deployment's selector is immutable: one an older operator made keeps it, and its pod
    template stays as it was (no rolling restart on upgrade); any other gets the track."""
    s = spec()
    legacy = {"spec": {"selector": {"matchLabels": render.server_selector("iris")}}}
    kept = render.kept_selector("iris", legacy)
    assert kept == render.server_selector("iris")
    d = render.server_deployment(CR, s, SETTINGS, "v1", "sha", selector=kept)
    assert d["spec"]["selector"]["matchLabels"] == render.server_selector("iris")
    assert "modelops.dev/track" not in d["spec"]["template"]["metadata"]["labels"]
    new = render.server_deployment(CR, s, SETTINGS, "v1", "sha")
    assert render.kept_selector("iris", None) == render.stable_selector("iris")
    assert render.kept_selector("iris", new) == render.stable_selector("iris")
