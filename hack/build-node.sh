#!/usr/bin/env bash
# Build (or reuse) the binaries of the test harness's real node besides the kubelet (which
# hack/build-k8s.sh builds from the hack/k8s module): containerd with its runc shim and ctr,
# runc with seccomp, CoreDNS (from the wrapper module hack/coredns: only the plugins the node's
# Corefile uses), and the CNI plugins (Debian's containernetworking-plugins, copied).
# Sources: the Go module proxy and Debian packages. (The pause image is hack/build-images.sh's.)
# Output: ${MODELOPS_NODE_CACHE:-~/.cache/modelops/node}/, outside the repository. Each part
# has a stamp of its versions and is rebuilt only when that stamp changes.
# Usage: hack/build-node.sh [--print-dir]   (--print-dir: only print the output folder)
set -euo pipefail
cd "$(dirname "$0")"

CONTAINERD_VERSION="v2.3.7"
RUNC_VERSION="v1.5.2"
COREDNS_VERSION="$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' coredns/go.mod)"
CNI_PLUGINS=(bridge host-local loopback portmap)
OUT="${MODELOPS_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops/node}"

log() { printf '[build-node] %s\n' "$*" >&2; }

if [ "${1:-}" = "--print-dir" ]; then
  echo "$OUT"
  exit 0
fi

export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false"
mkdir -p "$OUT/bin" "$OUT/cni"
tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# up_to_date PART STAMP FILE...: the part's stamp matches and every file is executable.
up_to_date() {
  local part="$1" stamp="$2" f
  shift 2
  [ "$(cat "$OUT/.stamp-$part" 2>/dev/null)" = "$stamp" ] || return 1
  for f in "$@"; do [ -x "$f" ] || return 1; done
}

# build PART STAMP HINT FUNCTION: run FUNCTION (which fills $tmp/PART) unless up to date, then
# move what it made into place and write the stamp last.
build() {
  local part="$1" stamp="$2" hint="$3" fn="$4" start
  start="$(date +%s)"
  log "building $part ($stamp) into $OUT ($hint)"
  mkdir -p "$tmp/$part"
  "$fn" "$tmp/$part"
  local f
  for f in "$tmp/$part"/*; do
    if [ "$part" = cni ]; then mv -f "$f" "$OUT/cni/"; else mv -f "$f" "$OUT/bin/"; fi
  done
  echo "$stamp" >"$OUT/.stamp-$part"
  log "built $part in $(($(date +%s) - start)) s"
}

need_go() { command -v go >/dev/null || { log "go is not installed (Go >= 1.26 is needed)"; exit 1; }; }

build_containerd() {
  need_go
  local pkg="github.com/containerd/containerd/v2"
  local ldflags="-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"
  local cmd
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    (cd "$1" && GOBIN="$1" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
      -tags "no_btrfs no_zfs no_devmapper" "$pkg/cmd/$cmd@$CONTAINERD_VERSION")
  done
  "$1/containerd" --version | grep -qF "$CONTAINERD_VERSION" || { log "containerd: wrong version"; exit 1; }
}

build_runc() {
  need_go
  # cgo + seccomp: the product's pods use seccompProfile RuntimeDefault (libseccomp-dev).
  [ -f /usr/include/seccomp.h ] || { log "runc needs libseccomp-dev (hack/apt-packages.txt; make install)"; exit 1; }
  (cd "$1" && GOBIN="$1" CGO_ENABLED=1 go install -trimpath -ldflags "-s -w" -tags seccomp \
    "github.com/opencontainers/runc@$RUNC_VERSION")
  "$1/runc" --version | grep -q "seccomp" || { log "runc: built without seccomp"; exit 1; }
  "$1/runc" --version | grep -qF "${RUNC_VERSION#v}" || { log "runc: wrong version"; exit 1; }
}

build_coredns() {
  need_go
  (cd coredns && CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=readonly" go build -trimpath \
    -ldflags "-s -w" -o "$1/coredns" .)
  "$1/coredns" -version | grep -qF "${COREDNS_VERSION#v}" || { log "coredns: wrong version"; exit 1; }
  "$1/coredns" -plugins | grep -qx "kubernetes" || { log "coredns: no kubernetes plugin"; exit 1; }
}

cni_version() { dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || true; }

build_cni() {
  local p
  for p in "${CNI_PLUGINS[@]}"; do
    [ -x "/usr/lib/cni/$p" ] || {
      log "CNI plugin $p missing: install Debian's containernetworking-plugins (make install)"
      exit 1
    }
    cp "/usr/lib/cni/$p" "$1/$p"
  done
}

bins() { local b; for b in "$@"; do printf '%s\n' "$OUT/bin/$b"; done; }
cni_files() { local p; for p in "${CNI_PLUGINS[@]}"; do printf '%s\n' "$OUT/cni/$p"; done; }
go_tag="go=$(go env GOVERSION 2>/dev/null || echo none)"

step() {
  local part="$1" stamp="$2" hint="$3" fn="$4"
  shift 4
  local files
  mapfile -t files < <("$@")
  if up_to_date "$part" "$stamp" "${files[@]}"; then
    log "up to date: $part ($stamp)"
  else
    build "$part" "$stamp" "$hint" "$fn"
  fi
}

step containerd "containerd=$CONTAINERD_VERSION $go_tag" "cold: ~3-5 min" build_containerd \
  bins containerd containerd-shim-runc-v2 ctr
step runc "runc=$RUNC_VERSION seccomp $go_tag" "cold: ~1 min" build_runc bins runc
coredns_sum="$(cat coredns/go.sum coredns/main.go | sha256sum | cut -c1-16)"
step coredns "coredns=$COREDNS_VERSION inputs=$coredns_sum $go_tag" "cold: ~2 min" build_coredns bins coredns
step cni "containernetworking-plugins=$(cni_version)" "a copy" build_cni cni_files
