#!/usr/bin/env bash
# make up: modelops on a local Kubernetes cluster, from images built on this machine.
#   PLATFORM=kind (default): create or reuse the kind cluster "$CLUSTER_NAME" (default modelops)
#   PLATFORM=minikube | microk8s: use that running cluster (its kubectl context)
# Builds and loads the images, applies config/overlays/$PLATFORM (platform first, then the Iris
# sample once the operator runs), waits until the sample is Serving, and prints the URLs, the
# Grafana credentials and a curl example. `make down` removes what this created.
# Needs Docker with a running engine, kubectl, and kind/minikube/microk8s; without them it says
# so and points to `make demo`, which runs the same ModelDeployment without a cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

PLATFORM="${PLATFORM:-kind}"
CLUSTER_NAME="${CLUSTER_NAME:-modelops}"
TIMEOUT="${UP_TIMEOUT:-900}"  # seconds to wait for the sample to serve
STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/modelops"
SAMPLE_NS="mlops-puj"
SAMPLE="iris"
COMPONENTS=(operator trainer server loadgen)

log() { printf '[up] %s\n' "$*" >&2; }
die() { printf '[up] error: %s\n' "$*" >&2; exit 1; }
unavailable() {
  cat >&2 <<MSG
[up] make up needs a container engine and a local Kubernetes here, and: $1
[up] Install Docker and kind (or set PLATFORM=minikube / PLATFORM=microk8s with that cluster
[up] running), then run make up again. Without them, run the same ModelDeployment on this
[up] machine (trainer, gate, model servers, load generator and Prometheus as processes):
[up]     make demo
MSG
  exit 3
}

case "$PLATFORM" in
  kind|minikube|microk8s) ;;
  *) die "PLATFORM=$PLATFORM: use kind, minikube or microk8s" ;;
esac

command -v docker >/dev/null 2>&1 || unavailable "docker is not installed."
docker info >/dev/null 2>&1 || unavailable "no Docker engine answers ('docker info' failed: is the daemon running, may you use it?)."
command -v kubectl >/dev/null 2>&1 || unavailable "kubectl is not installed."
case "$PLATFORM" in
  kind)
    command -v kind >/dev/null 2>&1 || unavailable "kind is not installed."
    context="kind-$CLUSTER_NAME"
    ;;
  minikube)
    command -v minikube >/dev/null 2>&1 || unavailable "minikube is not installed."
    minikube status >/dev/null 2>&1 || unavailable "minikube is not running (minikube start)."
    context="minikube"
    ;;
  microk8s)
    command -v microk8s >/dev/null 2>&1 || unavailable "microk8s is not installed."
    microk8s status --wait-ready --timeout 30 >/dev/null 2>&1 || unavailable "microk8s is not running (microk8s start)."
    context="microk8s"
    ;;
esac
k() { kubectl --context "$context" "$@"; }

mkdir -p "$STATE_DIR"
created=0
if [ "$PLATFORM" = kind ]; then
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    log "reusing kind cluster $CLUSTER_NAME"
    # Keep the record of who created it (an earlier make up, or someone else).
    [ -f "$STATE_DIR/up.env" ] && grep -q '^CREATED_CLUSTER=1$' "$STATE_DIR/up.env" && created=1
  else
    log "creating kind cluster $CLUSTER_NAME (NodePorts on localhost: hack/kind-config.yaml)"
    kind create cluster --name "$CLUSTER_NAME" --config hack/kind-config.yaml --wait 180s
    created=1
  fi
fi
printf 'PLATFORM=%s\nCLUSTER_NAME=%s\nCONTEXT=%s\nCREATED_CLUSTER=%s\n' \
  "$PLATFORM" "$CLUSTER_NAME" "$context" "$created" >"$STATE_DIR/up.env"

log "building the images (modelops-<component>:dev)"
hack/images.sh --tag dev
for c in "${COMPONENTS[@]}"; do
  image="modelops-$c:dev"
  log "loading $image into $PLATFORM"
  case "$PLATFORM" in
    kind) kind load docker-image "$image" --name "$CLUSTER_NAME" >/dev/null ;;
    minikube) minikube image load "$image" ;;
    microk8s) docker save "$image" | microk8s images import >/dev/null ;;
  esac
done

overlay="config/overlays/$PLATFORM"
log "installing the CRDs"
k apply --server-side -k config/crd >/dev/null
k wait --for=condition=Established --timeout=60s crd/modeldeployments.modelops.dev >/dev/null
k apply --server-side -f config/manager/namespace.yaml >/dev/null
KUBECTL="kubectl --context $context" hack/grafana-admin-secret.sh modelops-system >&2

log "applying $overlay (platform)"
k apply --server-side -k "$overlay" -l 'modelops.dev/part!=models' >/dev/null
log "waiting for the operator"
k -n modelops-system rollout status deploy/modelops-operator --timeout=300s >&2
log "applying the $SAMPLE sample in $SAMPLE_NS"
k apply --server-side -k "$overlay" -l 'modelops.dev/part=models' >/dev/null

log "waiting until $SAMPLE_NS/$SAMPLE is Serving (up to ${TIMEOUT}s)"
deadline=$((SECONDS + TIMEOUT))
last=""
while :; do
  line="$(k -n "$SAMPLE_NS" get modeldeployment "$SAMPLE" -o \
    jsonpath='{.spec.modelVersion}|{.status.phase}|{.status.servingVersion}|{.status.ready}|{.status.gate.message}' 2>/dev/null || true)"
  IFS='|' read -r want phase serving ready message <<<"$line"
  now="phase=${phase:-?} serving=${serving:--} ready=${ready:--}${message:+ gate: $message}"
  [ "$now" != "$last" ] && log "  $now"
  last="$now"
  if [ "$phase" = Serving ] && [ "$serving" = "$want" ]; then
    break
  fi
  if [ "$phase" = Failed ] || [ "$phase" = Degraded ]; then
    die "$SAMPLE is $phase: ${message:-see kubectl -n $SAMPLE_NS describe modeldeployment $SAMPLE}"
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "$SAMPLE not Serving after ${TIMEOUT}s; see kubectl --context $context -n $SAMPLE_NS describe modeldeployment $SAMPLE"
  sleep 3
done

case "$PLATFORM" in
  kind) host="localhost" ;;
  minikube) host="$(minikube ip)" ;;
  microk8s) host="$(k get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')" ;;
esac
password="$(k -n modelops-system get secret grafana-admin -o jsonpath='{.data.password}' | base64 -d)"
if k get namespace argocd >/dev/null 2>&1; then
  argocd="https://$host:30080 (if installed with argocd/install.sh --nodeport)"
else
  argocd="not installed: argocd/install.sh --nodeport, then https://$host:30080"
fi
cat <<MSG

modelops is up ($PLATFORM, context $context): $SAMPLE_NS/$SAMPLE serves $serving.
  Predict API  http://$host:32675/predict
  Prometheus   http://$host:30623
  Grafana      http://$host:32618   user admin, password $password
  Argo CD      $argocd
  Status       kubectl --context $context -n $SAMPLE_NS get modeldeployments

  curl -s -X POST http://$host:32675/predict -H 'Content-Type: application/json' \\
    -d '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'

make down removes it.
MSG
