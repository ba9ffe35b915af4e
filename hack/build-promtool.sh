#!/usr/bin/env bash
# Build (or reuse) promtool and prometheus at the version of the Prometheus image
# config/prometheus ships, from the wrapper module hack/promtool (pinned in its go.mod/go.sum).
# Debian's builds lack Kubernetes service discovery, so only these can `check config` and run the
# in-cluster config (the e2e tests' Prometheus image: hack/build-images.sh prometheus).
# Output: ${MODELOPS_PROMTOOL_CACHE:-~/.cache/modelops/promtool}/<version>/{promtool,prometheus}.
# Idempotent: does nothing when both binaries exist for the pinned go.sum.
# Usage: hack/build-promtool.sh [--print-path | --print-dir]
set -euo pipefail
cd "$(dirname "$0")/promtool"

MODULE="github.com/prometheus/prometheus"
VERSION="$(awk -v m="$MODULE" '$1 == m && $2 ~ /^v/ { print $2; exit }' go.mod)"
CACHE_ROOT="${MODELOPS_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops/promtool}"
OUT="$CACHE_ROOT/$VERSION"
log() { printf '[build-promtool] %s\n' "$*" >&2; }

BINARIES=(promtool prometheus)
case "${1:-}" in
  --print-path) echo "$OUT/promtool"; exit 0 ;;
  --print-dir) echo "$OUT"; exit 0 ;;
esac

stamp="prometheus=$VERSION gosum=$(sha256sum go.sum | cut -c1-16) binaries=${BINARIES[*]}"
if [ -x "$OUT/promtool" ] && [ -x "$OUT/prometheus" ] \
  && [ "$(cat "$OUT/.versions" 2>/dev/null)" = "$stamp" ]; then
  log "up to date: $OUT ($stamp)"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (Go >= 1.24 is needed)"; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
log "building ${BINARIES[*]} $VERSION into $OUT (cold: a few minutes on 2 cores)"
mkdir -p "$CACHE_ROOT"
tmp="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# Prometheus module v0.X.Y is Prometheus 2.X.Y.
release="2.$(cut -d. -f2- <<<"${VERSION#v}")"
mkdir -p "$OUT"
for binary in "${BINARIES[@]}"; do
  # Static (CGO off): the Prometheus image is this one file on an empty root.
  go build -trimpath -o "$tmp/$binary" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    "$MODULE/cmd/$binary"
  "$tmp/$binary" --version | grep -qF "$release" || { log "$binary: wrong version"; exit 1; }
  mv -f "$tmp/$binary" "$OUT/$binary"
done
echo "$stamp" >"$OUT/.versions"
log "done: ${BINARIES[*]} in $OUT"
