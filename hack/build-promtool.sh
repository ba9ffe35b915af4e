#!/usr/bin/env bash
# Build (or reuse) promtool at the version of the Prometheus image config/prometheus ships,
# from the wrapper module hack/promtool (pinned in its go.mod/go.sum). Debian's promtool lacks
# Kubernetes service discovery, so only this one can `check config` the in-cluster config.
# Output: ${MODELOPS_PROMTOOL_CACHE:-~/.cache/modelops/promtool}/<version>/promtool.
# Idempotent: does nothing when that binary exists for the pinned go.sum.
# Usage: hack/build-promtool.sh [--print-path]
set -euo pipefail
cd "$(dirname "$0")/promtool"

MODULE="github.com/prometheus/prometheus"
VERSION="$(awk -v m="$MODULE" '$1 == m && $2 ~ /^v/ { print $2; exit }' go.mod)"
CACHE_ROOT="${MODELOPS_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops/promtool}"
OUT="$CACHE_ROOT/$VERSION"
log() { printf '[build-promtool] %s\n' "$*" >&2; }

if [ "${1:-}" = "--print-path" ]; then
  echo "$OUT/promtool"
  exit 0
fi

stamp="prometheus=$VERSION gosum=$(sha256sum go.sum | cut -c1-16)"
if [ -x "$OUT/promtool" ] && [ "$(cat "$OUT/.versions" 2>/dev/null)" = "$stamp" ]; then
  log "up to date: $OUT/promtool ($stamp)"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (Go >= 1.24 is needed)"; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
log "building promtool $VERSION into $OUT (cold: a few minutes on 2 cores)"
mkdir -p "$CACHE_ROOT"
tmp="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# Prometheus module v0.X.Y is Prometheus 2.X.Y.
release="2.$(cut -d. -f2- <<<"${VERSION#v}")"
go build -trimpath -o "$tmp/promtool" \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  "$MODULE/cmd/promtool"
"$tmp/promtool" --version | grep -qF "$release" || { log "promtool: wrong version"; exit 1; }
mkdir -p "$OUT"
mv -f "$tmp/promtool" "$OUT/promtool"
echo "$stamp" >"$OUT/.versions"
log "done: $OUT/promtool"
