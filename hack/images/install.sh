#!/usr/bin/env bash
# Install one modelops component into a venv exactly as uv.lock pins it. The Dockerfile runs the
# "install" step in its build stage; tests/delivery/test_images.py runs the same steps on this
# machine. Two steps, because the image build has pip but not uv:
#
#   hack/images/install.sh export OUT_DIR
#       (host, needs uv) for each component: OUT_DIR/<component>/requirements.txt (third-party
#       packages with hashes, from `uv export --frozen`) and OUT_DIR/<component>/local.txt (the
#       workspace packages it needs); OUT_DIR/build-requirements.txt (hatchling, with hashes).
#   hack/images/install.sh install COMPONENT CONTEXT_DIR VENV
#       build the workspace packages' wheels with the locked hatchling in a throw-away venv,
#       then python3 -m venv --without-pip VENV and pip install --require-hashes --no-deps the
#       requirements and the wheels into it (pip runs from the throw-away venv).
#       With MODELOPS_WHEELHOUSE=DIR (absolute, or relative to CONTEXT_DIR; the Dockerfile's
#       WHEELHOUSE build-arg) pip reads only DIR (--no-index --find-links): no network.
#
# Components: operator trainer server loadgen.
set -euo pipefail

package_of() {
  case "$1" in
    operator) echo modelops ;;
    trainer) echo modelops-trainer ;;
    server) echo modelops-model-server ;;
    loadgen) echo modelops-loadgen ;;
    *) echo "unknown component '$1' (use operator, trainer, server or loadgen)" >&2; return 2 ;;
  esac
}
COMPONENTS=(operator trainer server loadgen)

export_all() {
  local out="$1" root uv c pkg
  root="$(cd "$(dirname "$0")/../.." && pwd)"
  uv="${UV:-$root/.tools/bin/uv}"
  [ -x "$uv" ] || uv="$(command -v uv)" || { echo "uv not found: run make install" >&2; exit 1; }
  mkdir -p "$out"
  (cd "$root" && "$uv" export --quiet --frozen --only-group image-build --no-emit-workspace \
    --no-header -o "$out/build-requirements.txt")
  for c in "${COMPONENTS[@]}"; do
    pkg="$(package_of "$c")"
    mkdir -p "$out/$c"
    (cd "$root" && "$uv" export --quiet --frozen --no-dev --package "$pkg" --no-emit-workspace \
      --no-header -o "$out/$c/requirements.txt")
    # Workspace members appear as "-e ./dir" lines; install them from source, without deps.
    (cd "$root" && "$uv" export --quiet --frozen --no-dev --package "$pkg" --no-hashes --no-header) \
      | sed -n 's|^-e \./||p' >"$out/$c/local.txt"
  done
}

install_one() {
  local component="$1" ctx="$2" venv="$3" reqs build wheels
  package_of "$component" >/dev/null
  reqs="$ctx/.image-build/$component"
  [ -f "$reqs/requirements.txt" ] || {
    echo "$reqs/requirements.txt missing: run 'hack/images/install.sh export .image-build' (make images does)" >&2
    exit 1
  }
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  local source=() wheelhouse="${MODELOPS_WHEELHOUSE:-}"
  if [ -n "$wheelhouse" ]; then
    [[ "$wheelhouse" = /* ]] || wheelhouse="$ctx/$wheelhouse"
    [ -d "$wheelhouse" ] || {
      echo "wheelhouse $wheelhouse missing (WHEELHOUSE must name a folder in the build context)" >&2
      exit 1
    }
    source=(--no-index --find-links "$wheelhouse")
  fi
  # A throw-away build venv holds pip and the locked hatchling; the image's venv gets neither
  # (created --without-pip, filled through `pip --python`): no build tools at run time.
  build="$(mktemp -d)"
  wheels="$build/wheels"
  python3 -m venv "$build/venv"
  "$build/venv/bin/pip" install --quiet --require-hashes --no-deps "${source[@]}" \
    -r "$ctx/.image-build/build-requirements.txt"
  local dirs=()
  while read -r dir; do [ -n "$dir" ] && dirs+=("$ctx/$dir"); done <"$reqs/local.txt"
  "$build/venv/bin/pip" wheel --quiet --no-deps --no-build-isolation "${source[@]}" -w "$wheels" "${dirs[@]}"

  python3 -m venv --without-pip "$venv"
  "$build/venv/bin/pip" --python "$venv/bin/python" install --quiet --require-hashes --no-deps \
    "${source[@]}" -r "$reqs/requirements.txt"
  "$build/venv/bin/pip" --python "$venv/bin/python" install --quiet --no-deps --no-index \
    "$wheels"/*.whl
  rm -rf "$build"
}

case "${1:-}" in
  export) export_all "${2:?usage: $0 export OUT_DIR}" ;;
  install) install_one "${2:?component}" "${3:?context dir}" "${4:?venv dir}" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
