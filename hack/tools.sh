#!/usr/bin/env bash
# Lint tools that have no binary wheel on PyPI, built from their Go modules (pinned) into
# ${MODELOPS_TOOLS_CACHE:-~/.cache/modelops/tools}/<tool>-<version>/. Prints the binary's path.
# Usage: hack/tools.sh actionlint
set -euo pipefail

ACTIONLINT_VERSION="v1.7.12"
CACHE="${MODELOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops/tools}"

case "${1:-}" in
  actionlint)
    dir="$CACHE/actionlint-$ACTIONLINT_VERSION"
    if [ ! -x "$dir/actionlint" ]; then
      command -v go >/dev/null || { echo "tools: go is not installed (needed to build actionlint)" >&2; exit 1; }
      echo "[tools] building actionlint $ACTIONLINT_VERSION (Go module, ~10 s)" >&2
      mkdir -p "$dir"
      (cd "$dir" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$dir" \
        go install -trimpath -ldflags "-s -w" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" >&2)
    fi
    echo "$dir/actionlint"
    ;;
  *) echo "usage: $0 actionlint" >&2; exit 2 ;;
esac
