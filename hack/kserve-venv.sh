#!/usr/bin/env bash
# Build (or reuse) the KServe SDK's venv for the OIP interop test and print its path.
# kserve pins python-dateutil<3, which would move the workspace lock's python-dateutil (4.0.0)
# and with it kubernetes (37.0.2, the operator's client) if it shared uv.lock; so it has a
# project and lock of its own (tests/model_server/kserve_client/), installed --frozen into
# ~/.cache/modelops/kserve-venv/<hash of that lock>. Idempotent; make test-tools runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
project=tests/model_server/kserve_client
key="$(cat "$project/uv.lock" "$project/pyproject.toml" | sha256sum | cut -c1-16)"
venv="$HOME/.cache/modelops/kserve-venv/$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  uv="${UV:-.tools/bin/uv}"
  [ -x "$uv" ] || { echo "uv not found at $uv: run make install" >&2; exit 1; }
  rm -rf "$venv"
  echo "[kserve-venv] installing the KServe SDK from $project/uv.lock into $venv" >&2
  UV_PROJECT_ENVIRONMENT="$venv" "$uv" sync --quiet --frozen --project "$project" \
    --python python3.11 >&2
  touch "$venv/.complete"
fi
echo "$venv"
