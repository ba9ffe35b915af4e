#!/usr/bin/env bash
# make down: remove what `make up` created. A kind cluster it created is deleted; on a cluster
# it only used (an existing kind cluster, minikube, microk8s) the sample and the platform are
# deleted and the cluster stays.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/modelops"
state="$STATE_DIR/up.env"
log() { printf '[down] %s\n' "$*" >&2; }

if [ ! -f "$state" ]; then
  log "nothing to remove: no record of make up ($state)"
  exit 0
fi
PLATFORM="" CLUSTER_NAME="" CONTEXT="" CREATED_CLUSTER=0
while IFS='=' read -r key value; do
  case "$key" in
    PLATFORM) PLATFORM="$value" ;;
    CLUSTER_NAME) CLUSTER_NAME="$value" ;;
    CONTEXT) CONTEXT="$value" ;;
    CREATED_CLUSTER) CREATED_CLUSTER="$value" ;;
  esac
done <"$state"

if [ "$PLATFORM" = kind ] && [ "$CREATED_CLUSTER" = 1 ]; then
  command -v kind >/dev/null 2>&1 || { log "kind is not installed: cannot delete cluster $CLUSTER_NAME"; exit 1; }
  log "deleting kind cluster $CLUSTER_NAME (created by make up)"
  kind delete cluster --name "$CLUSTER_NAME"
else
  command -v kubectl >/dev/null 2>&1 || { log "kubectl is not installed"; exit 1; }
  overlay="config/overlays/$PLATFORM"
  log "deleting the sample, then the platform ($overlay) from context $CONTEXT"
  # The sample first, while the operator still runs; its children go with it (owner references).
  kubectl --context "$CONTEXT" delete -k "$overlay" -l 'modelops.dev/part=models' \
    --ignore-not-found --wait=true --timeout=180s
  kubectl --context "$CONTEXT" delete -k "$overlay" --ignore-not-found --wait=true --timeout=180s
fi
rm -f "$state"
log "done"
