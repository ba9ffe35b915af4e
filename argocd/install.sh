#!/usr/bin/env bash
# Install Argo CD (a pinned release) into the current kubectl context, add the ModelDeployment
# health check, and start the modelops app of apps from this repository. Prints the URL and
# the initial admin password. Undo with argocd/uninstall.sh.
#
# Usage: argocd/install.sh [--repo URL] [--revision REV] [--nodeport | --port-forward] [--render]
#   --repo URL      Git repository Argo CD syncs (default: this clone's "origin", as https)
#   --revision REV  branch, tag or commit to follow (default: main)
#   --nodeport      expose the Argo CD UI on NodePort 30080 (as the course project did)
#   --port-forward  forward https://localhost:8080 to the UI in the background
#   --render        print the manifests this script would add, with the repository filled in,
#                   and exit (no cluster needed)
set -euo pipefail
cd "$(dirname "$0")/.."

# The release whose CRDs tests/delivery validates our Applications against
# (see hack/testenv/src/modelops_testenv/data/third_party/README.md); bump both together.
ARGOCD_VERSION="v3.5.3"
ARGOCD_MANIFEST="https://raw.githubusercontent.com/argoproj/argo-cd/${ARGOCD_VERSION}/manifests/install.yaml"
NAMESPACE="argocd"
NODEPORT=30080
STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/modelops"
KUBECTL="${KUBECTL:-kubectl}"

log() { printf '[argocd] %s\n' "$*" >&2; }
die() { printf '[argocd] error: %s\n' "$*" >&2; exit 1; }

repo=""
revision="main"
expose="none"
render_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo="${2:?--repo needs a URL}"; shift 2 ;;
    --revision) revision="${2:?--revision needs a branch, tag or commit}"; shift 2 ;;
    --nodeport) expose="nodeport"; shift ;;
    --port-forward) expose="port-forward"; shift ;;
    --render) render_only=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# git@host:owner/repo.git and ssh://git@host/owner/repo.git -> https://host/owner/repo.git:
# Argo CD reads a public repository over https without credentials.
https_url() {
  local url="$1"
  case "$url" in
    git@*:*) url="${url#git@}"; url="https://${url/://}" ;;  # host:owner/repo -> host/owner/repo
    ssh://git@*) url="https://${url#ssh://git@}" ;;
  esac
  printf '%s\n' "$url"
}

if [ -z "$repo" ]; then
  origin="$(git remote get-url origin 2>/dev/null || true)"
  [ -n "$origin" ] || die "no --repo given and this clone has no 'origin' remote; pass --repo https://github.com/<you>/<fork>.git"
  repo="$origin"
fi
repo="$(https_url "$repo")"
case "$repo" in
  https://*|http://*) ;;
  *) die "--repo must be an http(s) URL Argo CD can clone, got: $repo" ;;
esac
case "$repo$revision" in
  *'|'*|*' '*) die "the repository URL and revision may not contain '|' or spaces" ;;
esac

render() {
  "$KUBECTL" kustomize argocd \
    | sed -e "s|REPO_URL_PLACEHOLDER|$repo|g" -e "s|REVISION_PLACEHOLDER|$revision|g"
}

if [ "$render_only" = 1 ]; then
  render
  exit 0
fi

command -v "$KUBECTL" >/dev/null || die "kubectl is not installed"
"$KUBECTL" version --request-timeout=10s >/dev/null 2>&1 \
  || die "no cluster answers for kubectl context '$("$KUBECTL" config current-context 2>/dev/null || echo none)'; start one (make up) or pick a context"

log "installing Argo CD $ARGOCD_VERSION into namespace $NAMESPACE"
"$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
# Server-side: the Application CRD is larger than client-side apply's annotation allows.
"$KUBECTL" apply -n "$NAMESPACE" --server-side --force-conflicts -f "$ARGOCD_MANIFEST" >/dev/null
"$KUBECTL" wait --for=condition=Established --timeout=120s \
  crd/applications.argoproj.io crd/appprojects.argoproj.io >/dev/null

log "adding the ModelDeployment health check and the app of apps (repo $repo @ $revision)"
render | "$KUBECTL" apply --server-side --field-manager=modelops-install -f - >/dev/null

# Grafana's admin password is never in Git: create its Secret before the platform syncs.
"$KUBECTL" create namespace modelops-system --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
KUBECTL="$KUBECTL" hack/grafana-admin-secret.sh modelops-system >&2

log "waiting for the Argo CD server (up to 5 min)"
"$KUBECTL" -n "$NAMESPACE" rollout status deploy/argocd-server --timeout=300s >&2
"$KUBECTL" -n "$NAMESPACE" rollout status deploy/argocd-repo-server --timeout=300s >&2
"$KUBECTL" -n "$NAMESPACE" rollout status statefulset/argocd-application-controller --timeout=300s >&2

# Restart the controller so it reads the health check now rather than at its next resync.
"$KUBECTL" -n "$NAMESPACE" rollout restart statefulset/argocd-application-controller >/dev/null

url="(run: $KUBECTL -n $NAMESPACE port-forward svc/argocd-server 8080:443, then https://localhost:8080)"
case "$expose" in
  nodeport)
    "$KUBECTL" -n "$NAMESPACE" patch svc argocd-server --type merge \
      -p "{\"spec\":{\"type\":\"NodePort\",\"ports\":[{\"name\":\"https\",\"port\":443,\"targetPort\":8080,\"nodePort\":$NODEPORT}]}}" >/dev/null
    url="https://<node-ip>:$NODEPORT"
    ;;
  port-forward)
    mkdir -p "$STATE_DIR"
    nohup "$KUBECTL" -n "$NAMESPACE" port-forward svc/argocd-server 8080:443 \
      >"$STATE_DIR/argocd-port-forward.log" 2>&1 &
    echo $! >"$STATE_DIR/argocd-port-forward.pid"
    url="https://localhost:8080 (port-forward pid $(cat "$STATE_DIR/argocd-port-forward.pid"); argocd/uninstall.sh --port-forward-only stops it)"
    ;;
esac

password=""
for _ in $(seq 60); do  # the secret appears once argocd-server has started: at most ~2 min
  password="$("$KUBECTL" -n "$NAMESPACE" get secret argocd-initial-admin-secret \
    -o jsonpath='{.data.password}' 2>/dev/null | base64 -d 2>/dev/null || true)"
  [ -n "$password" ] && break
  sleep 2
done
[ -n "$password" ] || die "argocd-initial-admin-secret did not appear; check: $KUBECTL -n $NAMESPACE get pods"

cat <<EOF

Argo CD $ARGOCD_VERSION is running.
  UI:        $url
  user:      admin
  password:  $password
             (change it after the first login; then delete the Secret argocd-initial-admin-secret)
  apps:      $KUBECTL -n $NAMESPACE get applications
             modelops (app of apps) -> modelops-platform (config/gitops/platform), modelops-models (config/gitops/models)
  model:     $KUBECTL -n mlops-puj get modeldeployments
EOF
