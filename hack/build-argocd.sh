#!/usr/bin/env bash
# Build (or reuse) the Argo CD the tests run: the multi-call `argocd` binary (application
# controller, repo server, CLI) from the wrapper module hack/argocd (version pinned in its
# go.mod/go.sum; argocd/install.sh installs the same release for users), the kustomize the
# repo server runs from PATH, and the two helper scripts Argo CD's image puts on PATH (from
# the same module: the repo server runs git-verify-wrapper.sh on every commit it renders).
# Output: ${MODELOPS_ARGOCD_CACHE:-~/.cache/modelops/argocd}/<argo-cd version>/, outside the repository.
# Idempotent: does nothing when that folder already holds the pinned versions.
# Usage: hack/build-argocd.sh [--print-dir]   (--print-dir: only print the output folder)
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/argocd"

KUSTOMIZE_VERSION="v5.8.0"
ARGOCD_VERSION="$(awk '$1 == "github.com/argoproj/argo-cd/v3" && $2 ~ /^v/ { print $2; exit }' go.mod)"
CACHE_ROOT="${MODELOPS_ARGOCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops/argocd}"
OUT="$CACHE_ROOT/$ARGOCD_VERSION"
BINARIES=(argocd kustomize git-verify-wrapper.sh gpg-wrapper.sh)

log() { printf '[build-argocd] %s\n' "$*" >&2; }

if [ "${1:-}" = "--print-dir" ]; then
  echo "$OUT"
  exit 0
fi
[ -n "$ARGOCD_VERSION" ] || { log "hack/argocd/go.mod does not require github.com/argoproj/argo-cd/v3"; exit 1; }

# The stamp names every pinned version plus a hash of go.mod, go.sum and this script: any
# change rebuilds.
inputs="$(cat go.mod go.sum "$SELF" | sha256sum | cut -c1-16)"
stamp="argocd=$ARGOCD_VERSION kustomize=$KUSTOMIZE_VERSION inputs=$inputs"
complete() {
  [ -f "$OUT/.versions" ] && [ "$(cat "$OUT/.versions")" = "$stamp" ] || return 1
  local b
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if complete; then
  log "up to date: $OUT ($stamp)"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (Go >= 1.26.3 is needed)"; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
log "building $stamp into $OUT (cold: ~10-15 min on 2 cores, ~0.3 GB of module downloads, a few GB of Go caches)"

mkdir -p "$CACHE_ROOT"
tmp="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# timed WHAT COMMAND...: run a build step, printing how long it took (the cold build is long).
timed() {
  local what="$1" start
  shift
  start="$(date +%s)"
  log "building $what ..."
  "$@"
  log "built $what in $(($(date +%s) - start)) s"
}
# Argo CD's Makefile stamps the version this way (else `argocd version` says v99.99.99+unknown).
# The release tag's commit is the one the gitops-engine pseudo-version names.
commit="$(sed -n 's|^replace github.com/argoproj/argo-cd/gitops-engine => .* v0\.0\.0-[0-9]*-\([0-9a-f]*\)$|\1|p' go.mod)"
[ -n "$commit" ] || { log "hack/argocd/go.mod: no gitops-engine pseudo-version replace line"; exit 1; }
ldflags="-s -w"
for var in "version=${ARGOCD_VERSION#v}" "gitTag=$ARGOCD_VERSION" "gitCommit=$commit" gitTreeState=clean; do
  ldflags+=" -X github.com/argoproj/argo-cd/v3/common.$var"
done
timed "argocd $ARGOCD_VERSION" go build -trimpath -ldflags "$ldflags" -o "$tmp/argocd" \
  github.com/argoproj/argo-cd/v3/cmd
# kustomize has no replace lines of its own, so the ordinary `go install` works (outside this module).
build_kustomize() {
  (cd "$tmp" && GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION")
}
timed "kustomize $KUSTOMIZE_VERSION" build_kustomize

# As Argo CD's Dockerfile copies them next to its binaries.
module_dir="$(go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
install -m 0755 "$module_dir/hack/git-verify-wrapper.sh" "$module_dir/hack/gpg-wrapper.sh" "$tmp/"

"$tmp/argocd" version --client --short 2>/dev/null | grep -qx "argocd: ${ARGOCD_VERSION}" \
  || { log "argocd: wrong version: $("$tmp/argocd" version --client --short 2>&1 | head -1)"; exit 1; }
"$tmp/kustomize" version | grep -qF "$KUSTOMIZE_VERSION" || { log "kustomize: wrong version"; exit 1; }

mkdir -p "$OUT"
for b in "${BINARIES[@]}"; do mv -f "$tmp/$b" "$OUT/$b"; done
echo "$stamp" >"$OUT/.versions"
log "done: $OUT"
