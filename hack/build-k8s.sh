#!/usr/bin/env bash
# Build (or reuse) the Kubernetes binaries the tests run: kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd, the real node's kubelet and kube-proxy, and a
# kubectl at the API server's version, from the wrapper module hack/k8s (versions pinned in its
# go.mod/go.sum), and kwok for fake nodes.
# Output: ${MODELOPS_K8S_CACHE:-~/.cache/modelops/k8s}/<k8s version>/, outside the repository.
# Idempotent: does nothing when that folder already holds the pinned versions.
# Usage: hack/build-k8s.sh [--print-dir]   (--print-dir: only print the output folder)
set -euo pipefail
cd "$(dirname "$0")/k8s"

KWOK_VERSION="v0.8.0"
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' go.mod)"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ { print $2; exit }' go.mod)"
CACHE_ROOT="${MODELOPS_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops/k8s}"
OUT="$CACHE_ROOT/$K8S_VERSION"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok kubelet kube-proxy kubectl)

log() { printf '[build-k8s] %s\n' "$*" >&2; }

if [ "${1:-}" = "--print-dir" ]; then
  echo "$OUT"
  exit 0
fi

# The stamp names every pinned version plus a hash of go.sum: any change rebuilds.
stamp="k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION gosum=$(sha256sum go.sum | cut -c1-16)"
complete() {
  [ -f "$OUT/.versions" ] && [ "$(cat "$OUT/.versions")" = "$stamp" ] || return 1
  local b
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if complete; then
  log "up to date: $OUT ($stamp)"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (Go >= 1.26 is needed)"; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
log "building $stamp into $OUT (cold: ~11-14 min on 2 cores, ~0.9 GB of module downloads, ~5.5 GB of Go caches)"

mkdir -p "$CACHE_ROOT"
tmp="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# The version stamps k8s's own build (hack/lib/version.sh) sets; without them /version
# reports v0.0.0-master.
minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

# timed GROUP COMMAND...: run a build step, printing how long it took (the cold build is long).
timed() {
  local what="$1" start
  shift
  start="$(date +%s)"
  log "building $what ..."
  "$@"
  log "built $what in $(($(date +%s) - start)) s"
}
timed "control plane" go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler
timed "kubelet, kube-proxy, kubectl" go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl
# etcd's main package is its module root: name the binary explicitly (else "server").
timed etcd go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
# kwok has no replace lines of its own, so the ordinary `go install` works (outside this module).
build_kwok() {
  (cd "$tmp" && GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
}
timed kwok build_kwok

"$tmp/kube-apiserver" --version | grep -qF "$K8S_VERSION" || { log "kube-apiserver: wrong version"; exit 1; }
"$tmp/etcd" --version | grep -qF "${ETCD_VERSION#v}" || { log "etcd: wrong version"; exit 1; }
for b in kubelet kube-proxy; do
  "$tmp/$b" --version | grep -qF "$K8S_VERSION" || { log "$b: wrong version"; exit 1; }
done
"$tmp/kubectl" version --client | grep -qF "$K8S_VERSION" || { log "kubectl: wrong version"; exit 1; }

mkdir -p "$OUT"
for b in "${BINARIES[@]}"; do mv -f "$tmp/$b" "$OUT/$b"; done
echo "$stamp" >"$OUT/.versions"
log "done: $OUT"
