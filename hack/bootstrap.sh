#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: uv, the workspace venv, Debian packages.
# Usage: hack/bootstrap.sh [python|apt|k8s|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.8"
UV=".tools/bin/uv"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

ensure_uv() {
  if [ -x "$UV" ] && "$UV" --version 2>/dev/null | grep -q " $UV_VERSION"; then
    return
  fi
  log "installing uv $UV_VERSION into .tools/"
  python3 -m venv .tools
  .tools/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
}

ensure_python() {
  ensure_uv
  # --frozen: install exactly what uv.lock says; never re-resolve on a CI machine.
  "$UV" sync --quiet --frozen --all-packages --group dev --python python3.11
}

ensure_apt() {
  local missing=()
  while read -r pkg; do
    pkg="${pkg%%#*}"; pkg="${pkg// /}"
    [ -z "$pkg" ] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < hack/apt-packages.txt
  [ ${#missing[@]} -eq 0 ] && return
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

case "${1:-all}" in
  python) ensure_python ;;
  apt) ensure_apt ;;
  k8s) hack/build-k8s.sh ;;  # control-plane binaries for the tests (cached by version)
  all) ensure_apt; ensure_python ;;  # the k8s binaries are the `k8s` step (tests only)
  *) echo "usage: $0 [python|apt|k8s|all]" >&2; exit 2 ;;
esac
