"""Pure functions that render the children of a ModelDeployment.

No I/O here: every function takes the custom resource (a dict as the API server returns it),
the typed spec and the operator settings, and returns plain manifests. Tests call them directly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from modelops_contract.artifact import METADATA_FILE, accuracy_of, metadata_text, model_file

from ..names import (
    ANNOTATION_ACCURACY,
    ANNOTATION_SHA256,
    ANNOTATION_TRAINED_AT,
    API_VERSION,
    COMPONENT_LOADGEN,
    COMPONENT_MODEL,
    COMPONENT_SERVER,
    COMPONENT_SHADOW,
    COMPONENT_TRAINER,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_SCRAPE,
    LABEL_TRACK,
    LABEL_VERSION,
    MANAGED_BY,
    TRACK_CANDIDATE,
    TRACK_STABLE,
)
from ..settings import Settings
from ..spec import ModelDeploymentSpec

Manifest = dict[str, Any]

MODELS_MOUNT = "/models"
WORK_MOUNT = "/work"
DATA_MOUNT = "/data"
# The server's OIP gRPC port in the cluster (HTTP is spec.serving.port).
GRPC_PORT = 8001
RUN_AS = 65532  # the conventional "nonroot" uid/gid of distroless-style images

# A server pod that is being removed keeps serving this long before it is told to stop: the
# time for every node's Service rules to drop it, so that no new request is sent to a process
# that has stopped listening (a rollout or a scale-down loses no request).
DRAIN_SECONDS = 5
# After the drain, SIGTERM: the server finishes what is in flight and closes its connections.
SHUTDOWN_SECONDS = 25

LOADGEN_RESOURCES = {
    "requests": {"cpu": "20m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}


# Names --------------------------------------------------------------------------------------


def job_name(name: str, version: str) -> str:
    return f"{name}-train-{version}"


def artifact_name(name: str, version: str) -> str:
    return f"{name}-model-{version}"


def server_name(name: str) -> str:
    return f"{name}-server"


def service_name(name: str) -> str:
    return name


def candidate_name(name: str) -> str:
    """The candidate Deployment of a Shadow or Canary rollout (and a Shadow's Service)."""
    return f"{name}-candidate"


def loadgen_name(name: str) -> str:
    return f"{name}-loadgen"


def monitor_name(name: str) -> str:
    return name


def server_selector(name: str) -> dict[str, str]:
    """The Service's selector: every pod that answers clients (stable, and a Canary's)."""
    return {LABEL_NAME: name, LABEL_COMPONENT: COMPONENT_SERVER}


def stable_selector(name: str) -> dict[str, str]:
    """The stable Deployment's selector: its pods only, never a candidate's."""
    return {**server_selector(name), LABEL_TRACK: TRACK_STABLE}


def candidate_selector(name: str) -> dict[str, str]:
    """The candidate Deployment's selector: its pods only, never the stable ones."""
    return {LABEL_NAME: name, LABEL_TRACK: TRACK_CANDIDATE}


def kept_selector(name: str, existing: Mapping[str, Any] | None) -> dict[str, str]:
    """The selector of the stable Deployment to render: a Deployment's selector is
    immutable, so one created before the track label existed keeps the one it has (its pods
    stay as they are: no restart when the operator is upgraded). Any other: stable_selector."""
    if existing is not None:
        have = (existing.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
        if have == server_selector(name):
            return server_selector(name)
    return stable_selector(name)


def selector_string(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def endpoint(name: str, namespace: str, port: int) -> str:
    return f"http://{service_name(name)}.{namespace}.svc:{port}"


# Metadata -----------------------------------------------------------------------------------


def labels(name: str, component: str, version: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": f"modelops-{component}",
        "app.kubernetes.io/instance": name,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/part-of": "modelops",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: name,
    }
    if version is not None:
        out[LABEL_VERSION] = version
        out["app.kubernetes.io/version"] = version
    return out


def owner_reference(cr: Mapping[str, Any]) -> dict[str, Any]:
    meta = cr["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    cr: Mapping[str, Any],
    name: str,
    component: str,
    version: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cr["metadata"]["namespace"],
        "labels": labels(cr["metadata"]["name"], component, version),
        "ownerReferences": [owner_reference(cr)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# Pods ---------------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    # Read-only root FS: Python and joblib still need a writable /tmp.
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "tmp", "mountPath": "/tmp"},
    )


def _pod_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        # None of the workloads talks to the API server.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes,
    }


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


# Trainer Job --------------------------------------------------------------------------------


def trainer_args(cr: Mapping[str, Any], spec: ModelDeploymentSpec, settings: Settings) -> list[str]:
    training = spec.training
    dataset = training.dataset
    download: list[str] = []
    if dataset.url:
        source = dataset.url
        # The admin's download policy again inside the trainer: it also covers redirects.
        download = [
            "--allowed-url-schemes",
            ",".join(settings.dataset_url_schemes),
            "--allowed-url-hosts",
            ",".join(settings.dataset_url_hosts),
            "--max-download-bytes",
            str(settings.dataset_max_bytes),
            "--download-timeout",
            repr(settings.dataset_timeout_seconds),
        ]
    elif dataset.config_map:
        source = f"{DATA_MOUNT}/{dataset.config_map_key}"
    else:
        source = f"builtin:{dataset.builtin or 'iris'}"
    return [
        "train",
        "--version",
        spec.model_version,
        "--name",
        cr["metadata"]["name"],
        "--output-dir",
        f"{WORK_MOUNT}/models",
        "--algorithm",
        training.algorithm,
        "--params-json",
        json.dumps(training.hyperparameters, sort_keys=True, separators=(",", ":")),
        "--dataset",
        source,
        "--test-size",
        repr(training.test_size),
        "--seed",
        str(training.seed),
        *download,
        "--result-file",
        "/dev/termination-log",
        "--emit-artifact",
    ]


# The trainer's exit code when it is asked to stop (SIGTERM: its pod was deleted).
TRAINER_EXIT_TERMINATED = 143
# Deleted trainer pods the Job replaces before it gives up (evictions are not counted).
TRAINER_DISRUPTION_RETRIES = 3
# Trainer Jobs per version when a run's result is lost to a disruption the Job cannot retry
# (a pod deleted after it succeeded, or killed before its trainer could stop by itself).
TRAINER_RUNS = 3
TRAINER_FAILURE_POLICY: dict[str, Any] = {
    "rules": [
        {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        },
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": "trainer",
                "operator": "NotIn",
                "values": [0, TRAINER_EXIT_TERMINATED],
            },
        },
    ]
}


def trainer_job(cr: Mapping[str, Any], spec: ModelDeploymentSpec, settings: Settings) -> Manifest:
    """The Job that trains ``spec.model_version`` (immutable: one per version, never retried)."""
    name = cr["metadata"]["name"]
    version = spec.model_version
    tmp_volume, tmp_mount = _tmp_volume()
    volumes = [tmp_volume, {"name": "work", "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts = [tmp_mount, {"name": "work", "mountPath": WORK_MOUNT}]
    if spec.training.dataset.config_map:
        volumes.append(
            {
                "name": "dataset",
                "configMap": {
                    "name": spec.training.dataset.config_map,
                    "items": [
                        {
                            "key": spec.training.dataset.config_map_key,
                            "path": spec.training.dataset.config_map_key,
                        }
                    ],
                },
            }
        )
        mounts.append({"name": "dataset", "mountPath": DATA_MOUNT, "readOnly": True})
    container = {
        "name": "trainer",
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelops-trainer"],
        "args": trainer_args(cr, spec, settings),
        "env": _env({"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}),
        # The summary (and the artifact when it fits) is the termination message; when the
        # trainer dies before writing it (OOM, crash) the log tail explains why.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": spec.training.resources.to_dict(),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    pod_labels = labels(name, COMPONENT_TRAINER, version)
    pod_spec = _pod_spec([container], volumes)
    pod_spec["restartPolicy"] = "Never"
    # The pause process is PID 1, not the trainer: a SIGTERM that comes before the trainer
    # handles it (a pod deleted as it starts) ends it (143, run again) instead of being
    # ignored, as PID 1 ignores it, until the grace period's SIGKILL (137, a failure).
    pod_spec["shareProcessNamespace"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(cr, job_name(name, version), COMPONENT_TRAINER, version),
        "spec": {
            # A failed training is reported, not retried: the user fixes the spec and names a
            # new version. A disrupted pod (evicted, preempted, node drained: DisruptionTarget;
            # deleted: the trainer exits 143 on SIGTERM) is the cluster's doing, not the
            # version's: the Job runs it again.
            "backoffLimit": TRAINER_DISRUPTION_RETRIES,
            "podFailurePolicy": TRAINER_FAILURE_POLICY,
            "activeDeadlineSeconds": spec.training.timeout_seconds,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


# Model artifact -----------------------------------------------------------------------------

# What the API server lets a ConfigMap hold: its data and binaryData values (bytes, before
# base64) together (Kubernetes' validation uses the Secret limit, 1 MiB, for both).
CONFIGMAP_MAX_BYTES = 1024 * 1024


def artifact_bytes(metadata: Mapping[str, Any], model: bytes) -> int:
    """How much of a ConfigMap's limit the artifact of ``metadata`` and ``model`` takes."""
    return len(metadata_text(metadata).encode()) + len(model)


def artifact_configmap(
    cr: Mapping[str, Any], version: str, metadata: Mapping[str, Any], model: bytes
) -> Manifest:
    """One immutable ConfigMap per version: the exact files the server loads."""
    name = cr["metadata"]["name"]
    annotations = {
        ANNOTATION_ACCURACY: repr(accuracy_of(metadata)),
        ANNOTATION_SHA256: str(metadata["model_sha256"]),
        ANNOTATION_TRAINED_AT: str(metadata.get("created_at", "")),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            cr, artifact_name(name, version), COMPONENT_MODEL, version, annotations
        ),
        "immutable": True,
        "data": {METADATA_FILE: metadata_text(metadata)},
        "binaryData": {model_file(metadata): base64.b64encode(model).decode()},
    }


# Server -------------------------------------------------------------------------------------


def _scrape_annotations(port: int) -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def server_env(
    name: str,
    spec: ModelDeploymentSpec,
    artifact_dir: str,
    port: int,
    host: str | None = None,
    home: str = "/tmp",
    model_sha256: str = "",
    grpc_port: int = GRPC_PORT,
    shadow_url: str = "",
) -> dict[str, str]:
    """The model server's environment (its settings contract); local mode starts its
    processes with the same, pointed at loopback and the state directory."""
    env = {
        "MODELOPS_SERVER_ARTIFACT_DIR": artifact_dir,
        "MODELOPS_SERVER_MODEL_NAME": name,
        "MODELOPS_SERVER_PORT": str(port),
        # The Open Inference Protocol over gRPC (inference.GRPCInferenceService).
        "MODELOPS_SERVER_GRPC_PORT": str(grpc_port),
        "MODELOPS_SERVER_MAX_BATCH_SIZE": str(spec.serving.max_batch_size),
        # Clients that keep connections open reconnect now and then, so the Service spreads
        # them over replicas added since (a Canary step's, a scale-up's).
        "MODELOPS_SERVER_MAX_CONNECTION_AGE": str(spec.serving.max_connection_age_seconds),
    }
    if model_sha256:
        # The server refuses a model whose bytes do not have the digest the operator recorded.
        env["MODELOPS_SERVER_MODEL_SHA256"] = model_sha256
    if host is not None:
        env["MODELOPS_SERVER_HOST"] = host
    if shadow_url:
        # Shadow rollout: every prediction request is copied there after it is answered.
        env["MODELOPS_SERVER_SHADOW_URL"] = shadow_url
    return {**env, "HOME": home, "PYTHONDONTWRITEBYTECODE": "1"}


def _server_container(
    spec: ModelDeploymentSpec,
    settings: Settings,
    version: str,
    env: Mapping[str, str],
    tmp_mount: dict[str, Any],
) -> dict[str, Any]:
    port = spec.serving.port
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5}
    return {
        "name": "server",
        "image": spec.serving.image or settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelops-server"],
        "env": _env(env),
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        # A probe may wait behind a burst of queued requests (the server refuses those beyond
        # its concurrency limit, never a probe): seconds, not the 1 s default.
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {**probe, "timeoutSeconds": 2, "failureThreshold": 2},
        # The kubelet's own sleep (no binary in the image needed; Kubernetes 1.30+).
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "resources": spec.serving.resources.to_dict(),
        "securityContext": container_security_context(),
        "volumeMounts": [
            tmp_mount,
            {"name": "model", "mountPath": f"{MODELS_MOUNT}/{version}", "readOnly": True},
        ],
    }


def server_deployment(
    cr: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    settings: Settings,
    version: str,
    model_sha256: str,
    replicas: int | None = None,
    shadow_url: str = "",
    selector: Mapping[str, str] | None = None,
) -> Manifest:
    """Model-server Deployment running ``version`` (surge rollout: no downtime); a rollout
    may hold fewer ``replicas`` (Canary) or copy requests to ``shadow_url`` (Shadow).
    ``selector``: the Deployment's (kept_selector; stable_selector when None); its pods carry
    it."""
    name = cr["metadata"]["name"]
    port = spec.serving.port
    tmp_volume, tmp_mount = _tmp_volume()
    env = server_env(
        name, spec, f"{MODELS_MOUNT}/{version}", port, model_sha256=model_sha256,
        shadow_url=shadow_url,
    )  # fmt: skip
    container = _server_container(spec, settings, version, env, tmp_mount)
    volumes = [
        tmp_volume,
        {
            "name": "model",
            "configMap": {"name": artifact_name(name, version), "defaultMode": 0o444},
        },
    ]
    selector = dict(selector or stable_selector(name))
    pod_labels = {**labels(name, COMPONENT_SERVER, version), LABEL_SCRAPE: "true", **selector}
    pod_annotations = {**_scrape_annotations(port), ANNOTATION_SHA256: model_sha256}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cr, server_name(name), COMPONENT_SERVER, version),
        "spec": {
            "replicas": spec.replicas if replicas is None else replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                # New pods must be ready (model loaded and warmed) before an old one goes.
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            # A rollout that stalls (crash loop, image that cannot be pulled, failing
            # readiness) is marked ProgressDeadlineExceeded; the status reports it Degraded.
            "progressDeadlineSeconds": spec.serving.progress_deadline_seconds,
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": {
                    **_pod_spec([container], volumes),
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + SHUTDOWN_SECONDS,
                },
            },
        },
    }


def candidate_deployment(
    cr: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    settings: Settings,
    version: str,
    model_sha256: str,
    replicas: int,
    shadow: bool,
) -> Manifest:
    """The candidate's servers. Canary: component "server" like the stable pods, so the one
    Service sends them their share of connections. Shadow: component "shadow", so the Service
    does not select them; they get copies from the stable servers through the candidate
    Service. Selected on track=candidate, which the stable pods never carry."""
    name = cr["metadata"]["name"]
    selector = candidate_selector(name)
    deployment = server_deployment(
        cr, spec, settings, version, model_sha256, replicas, selector=selector
    )
    component = COMPONENT_SHADOW if shadow else COMPONENT_SERVER
    deployment["metadata"] = _metadata(cr, candidate_name(name), component, version)
    deployment["metadata"]["labels"].update(selector)
    template = deployment["spec"]["template"]["metadata"]
    template["labels"] = {**labels(name, component, version), LABEL_SCRAPE: "true", **selector}
    if shadow:
        # Its clients are the stable servers, whose relayed feedback must reach the pod that
        # answered the copy: their connections are kept.
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for var in container["env"]:
            if var["name"] == "MODELOPS_SERVER_MAX_CONNECTION_AGE":
                var["value"] = "0"
    return deployment


def candidate_service(cr: Mapping[str, Any], spec: ModelDeploymentSpec) -> Manifest:
    """Shadow: where the stable servers send their copies (the candidate's pods only)."""
    name = cr["metadata"]["name"]
    manifest = service(cr, spec)
    manifest["metadata"] = _metadata(cr, candidate_name(name), COMPONENT_SHADOW)
    manifest["spec"]["selector"] = candidate_selector(name)
    return manifest


def service(cr: Mapping[str, Any], spec: ModelDeploymentSpec) -> Manifest:
    name = cr["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cr, service_name(name), COMPONENT_SERVER),
        "spec": {
            "type": "ClusterIP",
            "selector": server_selector(name),
            "ports": [
                {
                    "name": "http",
                    "port": spec.serving.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


# Load generator -----------------------------------------------------------------------------


def loadgen_env(
    spec: ModelDeploymentSpec,
    metrics_port: int,
    service: tuple[str, int] | None = None,
    targets_file: str | None = None,
    metrics_host: str | None = None,
    home: str = "/tmp",
) -> dict[str, str]:
    """The load generator's environment (its settings contract): it sends to the Service
    (in a cluster) or to the replicas listed in ``targets_file`` (local mode)."""
    env: dict[str, str] = {}
    if service is not None:
        env |= {"API_HOST": service[0], "API_PORT": str(service[1])}
    if targets_file is not None:
        env["MODELOPS_LOADGEN_TARGETS_FILE"] = targets_file
    env |= {
        "MODELOPS_LOADGEN_RATE": f"{spec.load_rate:g}",
        "MODELOPS_LOADGEN_METRICS_PORT": str(metrics_port),
        "MODELOPS_LOADGEN_PAYLOAD": spec.load_generator.payload,
        "MODELOPS_LOADGEN_ENDPOINT": spec.load_generator.endpoint,
    }
    if metrics_host is not None:
        env["MODELOPS_LOADGEN_METRICS_HOST"] = metrics_host
    return {**env, "HOME": home, "PYTHONDONTWRITEBYTECODE": "1"}


def loadgen_deployment(
    cr: Mapping[str, Any], spec: ModelDeploymentSpec, settings: Settings
) -> Manifest | None:
    """The load generator at ``spec.loadRate``; None at rate 0 (no Deployment at all)."""
    if spec.load_rate <= 0:
        return None
    name = cr["metadata"]["name"]
    metrics_port = settings.loadgen_metrics_port
    tmp_volume, tmp_mount = _tmp_volume()
    container = {
        "name": "loadgen",
        "image": settings.loadgen_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelops-loadgen"],
        "env": _env(
            loadgen_env(spec, metrics_port, service=(service_name(name), spec.serving.port))
        ),
        "ports": [{"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}],
        "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 10},
        "resources": LOADGEN_RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount],
    }
    selector = {LABEL_NAME: name, LABEL_COMPONENT: COMPONENT_LOADGEN}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cr, loadgen_name(name), COMPONENT_LOADGEN),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            # One generator at a time, or the configured rate doubles during a rollout.
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            # A rollout that stalls (crash loop, image that cannot be pulled, failing
            # readiness) is marked ProgressDeadlineExceeded; the status reports it Degraded.
            "progressDeadlineSeconds": spec.serving.progress_deadline_seconds,
            "template": {
                "metadata": {
                    "labels": {**labels(name, COMPONENT_LOADGEN), LABEL_SCRAPE: "true"},
                    "annotations": _scrape_annotations(metrics_port),
                },
                "spec": _pod_spec([container], [tmp_volume]),
            },
        },
    }


# Scrape config (prometheus-operator) --------------------------------------------------------


def service_monitor(cr: Mapping[str, Any], spec: ModelDeploymentSpec) -> Manifest:
    """ServiceMonitor for every server pod behind the Service (only when the CRD exists)."""
    name = cr["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(cr, monitor_name(name), COMPONENT_SERVER),
        "spec": {
            # The server Service, and a Shadow candidate's (Canary pods are behind the first).
            "selector": {
                "matchLabels": {LABEL_NAME: name},
                "matchExpressions": [
                    {
                        "key": LABEL_COMPONENT,
                        "operator": "In",
                        "values": [COMPONENT_SERVER, COMPONENT_SHADOW],
                    }
                ],
            },
            "endpoints": [{"port": "http", "path": "/metrics", "interval": spec.scrape_interval}],
        },
    }


def pod_monitor(cr: Mapping[str, Any], spec: ModelDeploymentSpec, settings: Settings) -> Manifest:
    """PodMonitor for the load generator (it has no Service)."""
    name = cr["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(cr, loadgen_name(name), COMPONENT_LOADGEN),
        "spec": {
            "selector": {"matchLabels": {LABEL_NAME: name, LABEL_COMPONENT: COMPONENT_LOADGEN}},
            "podMetricsEndpoints": [
                {"port": "metrics", "path": "/metrics", "interval": spec.scrape_interval}
            ],
        },
    }
