#!/usr/bin/env bash
# Undo argocd/install.sh: stop its port-forward, delete the modelops Applications and
# projects, then Argo CD itself (the pinned release's manifests and the argocd namespace).
#
# Usage: argocd/uninstall.sh [--keep-workloads] [--port-forward-only]
#   --keep-workloads     leave what Argo CD deployed (operator, monitoring, models) running;
#                        by default deleting the Applications deletes their resources too
#   --port-forward-only  only stop the port-forward that install.sh --port-forward started
set -euo pipefail
cd "$(dirname "$0")/.."

ARGOCD_VERSION="v3.5.3"  # keep equal to install.sh
ARGOCD_MANIFEST="https://raw.githubusercontent.com/argoproj/argo-cd/${ARGOCD_VERSION}/manifests/install.yaml"
NAMESPACE="argocd"
STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/modelops"
KUBECTL="${KUBECTL:-kubectl}"
APPS=(modelops modelops-platform modelops-models)

log() { printf '[argocd] %s\n' "$*" >&2; }

keep=0
pf_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep-workloads) keep=1; shift ;;
    --port-forward-only) pf_only=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done

pidfile="$STATE_DIR/argocd-port-forward.pid"
if [ -f "$pidfile" ]; then
  pid="$(cat "$pidfile")"
  # Only our own port-forward: the pid must still be a kubectl port-forward.
  if grep -qa "port-forward" "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" && log "stopped the port-forward (pid $pid)"
  fi
  rm -f "$pidfile"
fi
[ "$pf_only" = 1 ] && exit 0

if ! "$KUBECTL" get namespace "$NAMESPACE" >/dev/null 2>&1; then
  log "namespace $NAMESPACE does not exist: nothing to remove"
  exit 0
fi

if [ "$keep" = 1 ]; then
  # Without the finalizer, deleting an Application leaves its resources in place.
  for app in "${APPS[@]}"; do
    "$KUBECTL" -n "$NAMESPACE" patch application "$app" --type json \
      -p '[{"op":"remove","path":"/metadata/finalizers"}]' >/dev/null 2>&1 || true
  done
fi
# Root first: Argo CD then prunes the children, whose finalizers delete their resources.
for app in "${APPS[@]}"; do
  "$KUBECTL" -n "$NAMESPACE" delete application "$app" --ignore-not-found --wait=false >/dev/null
done
log "waiting for the Applications to be deleted (up to 5 min)"
for app in "${APPS[@]}"; do
  "$KUBECTL" -n "$NAMESPACE" wait --for=delete "application/$app" --timeout=300s >/dev/null 2>&1 || {
    log "application $app is still being deleted; see: $KUBECTL -n $NAMESPACE describe application $app"
    exit 1
  }
done
"$KUBECTL" -n "$NAMESPACE" delete appproject modelops modelops-bootstrap --ignore-not-found >/dev/null

log "removing Argo CD $ARGOCD_VERSION"
"$KUBECTL" delete -n "$NAMESPACE" -f "$ARGOCD_MANIFEST" --ignore-not-found >/dev/null
"$KUBECTL" delete namespace "$NAMESPACE" --ignore-not-found >/dev/null
log "done"
