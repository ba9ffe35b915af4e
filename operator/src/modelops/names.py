"""The operator's vocabulary, in one place: the API names, labels and annotations it writes,
phases, condition types, reasons and event reasons.

Everything else (the pure core, the engine, both drivers, metrics) imports these names; the
CRD's printer columns, the Argo CD health check, dashboards, alerts and docs spell the same
values (tests/operator/test_names.py checks the CRD and the health check against this file).
"""

from __future__ import annotations

from typing import Final

# The custom resource ------------------------------------------------------------------------
GROUP: Final = "modelops.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "modeldeployments"
KIND: Final = "ModelDeployment"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Labels and annotations on every child ------------------------------------------------------
MANAGED_BY: Final = "modelops"
LABEL_NAME: Final = "modelops.dev/name"
LABEL_VERSION: Final = "modelops.dev/version"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
# The bundled Prometheus keeps targets with this pod label (docs/scrape-contract.md).
LABEL_SCRAPE: Final = "modelops.dev/scrape"
ANNOTATION_ACCURACY: Final = "modelops.dev/accuracy"
ANNOTATION_SHA256: Final = "modelops.dev/model-sha256"
ANNOTATION_TRAINED_AT: Final = "modelops.dev/trained-at"

COMPONENT_TRAINER: Final = "trainer"
COMPONENT_MODEL: Final = "model"
COMPONENT_SERVER: Final = "server"
COMPONENT_LOADGEN: Final = "loadgen"
# A Shadow candidate's pods: servers that get copies of live requests, never clients' requests
# (the Service selects component=server only; dashboards of served traffic leave them out).
COMPONENT_SHADOW: Final = "shadow"
# Which Deployment a server pod belongs to: the stable one's or the candidate's (Shadow and
# Canary). Each Deployment selects on it, so neither selects the other's pods; the Service does
# not (it sends clients to both in a Canary). A stable Deployment made before this label keeps
# its selector and pods without it (render.kept_selector).
LABEL_TRACK: Final = "modelops.dev/track"
TRACK_STABLE: Final = "stable"
TRACK_CANDIDATE: Final = "candidate"

# The label every scrape target carries for the ModelDeployment it belongs to (and the
# operator's own per-resource metrics use the same name).
METRIC_LABEL: Final = "modeldeployment"

# status.phase -------------------------------------------------------------------------------
PENDING: Final = "Pending"
TRAINING: Final = "Training"
ROLLING_OUT: Final = "RollingOut"
SERVING: Final = "Serving"
DEGRADED: Final = "Degraded"
FAILED: Final = "Failed"
PHASES: Final = (PENDING, TRAINING, ROLLING_OUT, SERVING, DEGRADED, FAILED)
PROGRESSING_PHASES: Final = (PENDING, TRAINING, ROLLING_OUT)

# Verdicts: status.history[].outcome and status.gate.result ----------------------------------
ACCEPTED: Final = "Accepted"
REJECTED: Final = "Rejected"
# history[].outcome only (training failed, no gate ran) / gate.result only (not decided yet)
OUTCOME_FAILED: Final = "Failed"
GATE_PENDING: Final = "Pending"

# history[].outcome only: accepted by the gate, then rolled back by the live analysis.
OUTCOME_ROLLED_BACK: Final = "RolledBack"

# spec.rollout.strategy, status.rollout.state and status.rollout.lastAnalysis.result ---------
STRATEGY_DIRECT: Final = "Direct"
STRATEGY_SHADOW: Final = "Shadow"
STRATEGY_CANARY: Final = "Canary"
STRATEGIES: Final = (STRATEGY_DIRECT, STRATEGY_SHADOW, STRATEGY_CANARY)
ROLLOUT_PROGRESSING: Final = "Progressing"  # a step runs (replicas coming up, or its pause)
ROLLOUT_PAUSED: Final = "Paused"  # the analysis could not run (Prometheus unreachable)
ROLLOUT_PROMOTING: Final = "Promoting"  # every step passed: the stable servers take it over
ROLLOUT_PROMOTED: Final = "Promoted"
ROLLOUT_ROLLED_BACK: Final = "RolledBack"
ROLLOUT_STATES: Final = (
    ROLLOUT_PROGRESSING,
    ROLLOUT_PAUSED,
    ROLLOUT_PROMOTING,
    ROLLOUT_PROMOTED,
    ROLLOUT_ROLLED_BACK,
)
ANALYSIS_PASSED: Final = "Passed"
ANALYSIS_FAILED: Final = "Failed"
ANALYSIS_INCONCLUSIVE: Final = "Inconclusive"  # too few samples yet: the step goes on
ANALYSIS_UNAVAILABLE: Final = "Unavailable"  # Prometheus could not be queried
ANALYSIS_RESULTS: Final = (
    ANALYSIS_PASSED,
    ANALYSIS_FAILED,
    ANALYSIS_INCONCLUSIVE,
    ANALYSIS_UNAVAILABLE,
)

# status.conditions[].type -------------------------------------------------------------------
CONDITION_TRAINED: Final = "Trained"
CONDITION_ACCEPTED: Final = "Accepted"
CONDITION_AVAILABLE: Final = "Available"
CONDITION_PROGRESSING: Final = "Progressing"
CONDITION_DEGRADED: Final = "Degraded"
CONDITION_TYPES: Final = (
    CONDITION_TRAINED,
    CONDITION_ACCEPTED,
    CONDITION_AVAILABLE,
    CONDITION_PROGRESSING,
    CONDITION_DEGRADED,
)

# Condition reasons the operator sets itself (the gate's own are modelops_contract.gate.Reason;
# a failed training's come from the trainer) --------------------------------------------------
REASON_TRAINING: Final = "Training"
REASON_PENDING: Final = "Pending"
REASON_SUCCEEDED: Final = "Succeeded"
REASON_TRAINING_FAILED: Final = "TrainingFailed"
REASON_SETTLED: Final = "Settled"
REASON_AS_EXPECTED: Final = "AsExpected"
REASON_ARTIFACT_MISSING: Final = "ArtifactMissing"
# A ConfigMap under the artifact's name that the operator did not store for this resource.
REASON_ARTIFACT_NOT_TRUSTED: Final = "ArtifactNotTrusted"
# The spec asks for what the operator's admin settings do not allow (docs/security.md).
REASON_IMAGE_NOT_ALLOWED: Final = "ImageNotAllowed"
REASON_DATASET_URL_NOT_ALLOWED: Final = "DatasetURLNotAllowed"
REASON_NO_MODEL: Final = "NoModel"
# The new servers did not become ready within spec.serving.progressDeadlineSeconds (the
# Deployment controller's reason, kept as is).
REASON_PROGRESS_DEADLINE: Final = "ProgressDeadlineExceeded"
# The API server refused to take a child as rendered (invalid, forbidden, too large).
REASON_CHILD_REJECTED: Final = "ChildRejected"
# Why a trainer pod waits for good (image, config): the Trained condition's reason, as kubelet says.
TRAINER_WAITING_REASONS: Final = (
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
)
# Why the live analysis rolled a candidate back, or cannot run.
REASON_LIVE_ACCURACY: Final = "LiveAccuracyBelowStable"
REASON_ERROR_RATIO: Final = "ErrorRatioAboveThreshold"
REASON_LATENCY: Final = "LatencyAboveThreshold"
REASON_AGREEMENT: Final = "AgreementBelowThreshold"
REASON_PROMETHEUS_UNAVAILABLE: Final = "PrometheusUnavailable"
REASON_FEW_SAMPLES: Final = "TooFewSamples"
REASON_WITHIN_THRESHOLDS: Final = "WithinThresholds"
REASON_UNKNOWN: Final = "Unknown"

# Event reasons ------------------------------------------------------------------------------
EVENT_TRAINING_STARTED: Final = "TrainingStarted"
EVENT_TRAINING_FAILED: Final = "TrainingFailed"
EVENT_ARTIFACT_STORED: Final = "ArtifactStored"
EVENT_GATE_ACCEPTED: Final = "GateAccepted"
EVENT_GATE_REJECTED: Final = "GateRejected"
EVENT_ROLLED_OUT: Final = "RolledOut"
EVENT_ROLLOUT_STALLED: Final = "RolloutStalled"
EVENT_CHILD_REJECTED: Final = REASON_CHILD_REJECTED
EVENT_ROLLOUT_STARTED: Final = "RolloutStarted"
EVENT_ANALYSIS_PASSED: Final = "AnalysisPassed"
EVENT_ROLLOUT_PAUSED: Final = "RolloutPaused"
EVENT_PROMOTED: Final = "Promoted"
EVENT_ROLLED_BACK: Final = "RolledBack"
# Local mode only: what a kubelet or controller would report in a cluster.
EVENT_SERVER_EXITED: Final = "ServerExited"
EVENT_SERVER_NOT_READY: Final = "ServerNotReady"
EVENT_LOADGEN_EXITED: Final = "LoadgenExited"
EVENT_SPEC_CHANGED: Final = "SpecChanged"
EVENT_INVALID_SPEC: Final = "InvalidSpec"
EVENT_RECONCILE_ERROR: Final = "ReconcileError"
NORMAL: Final = "Normal"
WARNING: Final = "Warning"
