#!/usr/bin/env bash
# Build (or reuse) the container images the real-node tests import into containerd, as OCI
# archives, without a Docker engine, a registry, or network inside the build:
#   operator trainer server loadgen
#       hack/images/Dockerfile itself (buildah, --target <component>) on a stand-in for
#       python:3.11-slim made from Debian's packages (mmdebstrap: python3 3.11, python3-venv,
#       ca-certificates), installing the wheels uv.lock pins, downloaded once on the host
#       (pip download --require-hashes) into a wheelhouse.
#   pause       the kubelet's sandbox: pause.c of the pinned k8s.io/kubernetes module, gcc -static.
#   prometheus  Prometheus at the manifests' prom/prometheus version, built from Go modules
#               (hack/build-promtool.sh: Debian's lacks Kubernetes discovery), on an empty root.
# Output: ${MODELOPS_IMAGES_CACHE:-~/.cache/modelops/images}/<image>.json (name, archive, key;
# read by modelops_testenv.images) and the archives beside it. Every image is keyed by a hash of
# its inputs (Dockerfile, install.sh, the exported lock, sources, base packages) and rebuilt
# only when they change; buildah's storage lives under the same folder (vfs, chroot isolation).
# Needs root (chroot builds), buildah, mmdebstrap, gcc, go and the workspace venv (make install).
# Usage: hack/build-images.sh [IMAGE...]   (default: all of them)
#        hack/build-images.sh --wheelhouse   only fill the wheelhouse; print its folder
#        hack/build-images.sh --print-dir    print the output folder
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

COMPONENTS=(operator trainer server loadgen)
ALL_IMAGES=(pause "${COMPONENTS[@]}" prometheus)
CACHE="${MODELOPS_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops/images}"
SUITE="bookworm"
BASE_PACKAGES="python3,python3-venv,ca-certificates"
# python:3.11-slim's PATH (its duplicate /usr/local/bin included) and LANG; its other variables
# (PYTHON_VERSION, GPG_KEY) describe its own CPython build, not Debian's.
BASE_ENV=("PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  "LANG=C.UTF-8")
# Slim like the python slim image: no manuals, docs (copyright kept) or translations.
DPKG_OPTS=(
  "--dpkgopt=path-exclude=/usr/share/man/*" "--dpkgopt=path-exclude=/usr/share/info/*"
  "--dpkgopt=path-exclude=/usr/share/doc/*" "--dpkgopt=path-include=/usr/share/doc/*/copyright"
  "--dpkgopt=path-exclude=/usr/share/locale/*"
)
START=$SECONDS

log() { printf '[build-images %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

WHEELHOUSE_ONLY=0
case "${1:-}" in
  --print-dir) echo "$CACHE"; exit 0 ;;
  --wheelhouse) WHEELHOUSE_ONLY=1; shift ;;
esac
WANTED=("$@")
[ ${#WANTED[@]} -gt 0 ] || WANTED=("${ALL_IMAGES[@]}")
for image in "${WANTED[@]}"; do
  [[ " ${ALL_IMAGES[*]} " = *" $image "* ]] || die "unknown image '$image' (known: ${ALL_IMAGES[*]})"
done
wanted() { [[ " ${WANTED[*]} " = *" $1 "* ]]; }

[ "$(id -u)" -eq 0 ] || die "needs root (buildah --isolation chroot, mmdebstrap --mode=root)"
for tool in buildah mmdebstrap gcc go; do
  command -v "$tool" >/dev/null || die "$tool is not installed (make install installs the Debian packages)"
done

# One build at a time per cache and per checkout (its .image-build/ is the build context):
# make test-tools and a test session may race.
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
exec 8<"$0"
flock 8

# Short names never resolve to a registry: only localhost/... images exist here.
printf 'unqualified-search-registries = []\n' >"$CACHE/registries.conf"
export CONTAINERS_REGISTRIES_CONF="$CACHE/registries.conf"
BUILDAH=(buildah --root "$CACHE/storage/root" --runroot "$CACHE/storage/run" --storage-driver vfs)
bah() { "${BUILDAH[@]}" "$@"; }

# A 16-hex digest of text and of files (names and contents).
hash_text() { sha256sum <<<"$1" | cut -c1-16; }
hash_files() {
  local f
  for f in "$@"; do printf '%s\n' "$f"; sha256sum <"$f"; done | sha256sum | cut -c1-16
}

# The Debian images install from the machine's own Debian sources (its mirror or proxy) when it
# has some for $SUITE; elsewhere (e.g. an Ubuntu CI runner) from mmdebstrap's default mirror.
apt_sources() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$f" ] && grep -qE "^[^#]*\b$SUITE\b" "$f"; then echo "$f"; return; fi
  done
}
SOURCES="$(apt_sources)"
SOURCES_TEXT="$( [ -z "$SOURCES" ] || cat "$SOURCES")"

# The image record modelops_testenv.images reads; written last, so it only names a full archive.
record() {
  local image="$1" name="$2" archive="$3" key="$4" old
  for old in "$CACHE/$image"-*.oci.tar; do
    [ "$old" = "$archive" ] || rm -f "$old"
  done
  printf '{"image": "%s", "name": "%s", "archive": "%s", "key": "%s"}\n' \
    "$image" "$name" "$(basename "$archive")" "$key" >"$CACHE/$image.json.tmp"
  mv -f "$CACHE/$image.json.tmp" "$CACHE/$image.json"
}
up_to_date() {  # IMAGE KEY: its record names this key and the archive exists
  [ -f "$CACHE/$1.json" ] && grep -q "\"key\": \"$2\"" "$CACHE/$1.json" \
    && [ -f "$CACHE/$1-$2.oci.tar" ]
}
export_archive() {  # NAME ARCHIVE: push to an OCI archive whose index names the image
  bah push --quiet "$1" "oci-archive:$2.tmp:$1" >/dev/null
  mv -f "$2.tmp" "$2"
  bah rmi "$1" >/dev/null
  log "  $1 -> $2 ($(du -m "$2" | cut -f1) MB)"
}

# Root file systems from Debian packages (mmdebstrap --variant=minbase), made in the background:
# their downloads and dpkg runs overlap the wheelhouse download and the CPU-bound image builds.
declare -A ROOTFS_PID=()
start_rootfs() {  # TAR PACKAGES HOOK (HOOK: a shell command on the rootfs "$1", after install)
  local tar="$1" packages="$2" hook="$3"
  log "  mmdebstrap $SUITE minbase + $packages, in the background (the machine's apt sources)"
  rm -f "$tar"
  mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" "${DPKG_OPTS[@]}" \
    --customize-hook="$hook" "$SUITE" "$tar" ${SOURCES:+"$SOURCES"} >"$tar.log" 2>&1 &
  ROOTFS_PID[$tar]=$!
}
stop_rootfs() {  # on exit: a failed build leaves no mmdebstrap running (by PID, ours only)
  local pid
  for pid in "${ROOTFS_PID[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_rootfs EXIT
wait_rootfs() {  # TAR (in the main shell: only it can wait for its children)
  local tar="$1" pid="${ROOTFS_PID[$1]}"
  unset "ROOTFS_PID[$tar]"
  wait "$pid" || { cat "$tar.log" >&2; die "mmdebstrap failed (network to the Debian mirror?)"; }
}
image_from_rootfs() {  # TAR ENV...: a one-layer working container of TAR
  local tar="$1" ctr env
  shift
  ctr="$(bah from --pull=never scratch)"
  bah add --quiet "$ctr" "$tar" / >/dev/null
  rm -f "$tar" "$tar.log"
  for env in "$@"; do bah config --env "$env" "$ctr"; done
  bah config --label org.opencontainers.image.source=modelops "$ctr"
  echo "$ctr"
}

build_pause() {
  local src tag key name archive bin ctr
  src="$(cd hack/k8s && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause"
  [ -f "$src/linux/pause.c" ] || die "$src/linux/pause.c missing (run hack/build-k8s.sh first)"
  tag="$(awk '$1 == "TAG" { print $3; exit }' "$src/Makefile")"
  key="$(hash_text "$(sha256sum <"$src/linux/pause.c") $tag $(gcc --version | head -1)")"
  name="localhost/modelops-pause:$tag"
  archive="$CACHE/pause-$key.oci.tar"
  up_to_date pause "$key" && { log "pause: up to date ($name)"; return; }
  log "pause: gcc -static $src/linux/pause.c"
  mkdir -p "$CACHE/pause"
  bin="$CACHE/pause/pause"
  gcc -Os -Wall -Werror -static "-DVERSION=v$tag-modelops" -o "$bin.tmp" "$src/linux/pause.c"
  mv -f "$bin.tmp" "$bin"
  # As upstream's image (build/pause/Dockerfile): /pause only, uid 65535.
  ctr="$(bah from --pull=never scratch)"
  bah copy --quiet --chown 0:0 --chmod 0755 "$ctr" "$bin" /pause >/dev/null
  bah config --user 65535:65535 --entrypoint '["/pause"]' \
    --label org.opencontainers.image.source=modelops "$ctr"
  bah commit --quiet --rm "$ctr" "$name" >/dev/null
  export_archive "$name" "$archive"
  record pause "$name" "$archive" "$key"
}

# Prometheus at the version config/prometheus ships, built from Go modules by
# hack/build-promtool.sh (Debian's 2.42 is built without Kubernetes discovery, which the shipped
# prometheus.yml uses), laid out as upstream's prom/prometheus image: /bin/prometheus, /prometheus
# and /etc/prometheus owned by nobody, the same user, working folder, entrypoint and command.
PROMETHEUS_LAYOUT="bin/prometheus prometheus:65534 etc/prometheus:65534 user=65534 workdir=/prometheus"
build_prometheus() {
  local dir bin release key name archive stage ctr
  hack/build-promtool.sh || die "hack/build-promtool.sh failed"
  dir="$(hack/build-promtool.sh --print-dir)"
  bin="$dir/prometheus"
  release="2.$(basename "$dir" | cut -d. -f2-)"  # module v0.53.3 is Prometheus 2.53.3
  key="$(hash_text "$(sha256sum <"$bin") $PROMETHEUS_LAYOUT")"
  name="localhost/modelops-prometheus:v$release-$key"
  archive="$CACHE/prometheus-$key.oci.tar"
  up_to_date prometheus "$key" && { log "prometheus: up to date ($name)"; return; }
  log "prometheus: $bin (Prometheus $release from Go modules)"
  stage="$(mktemp -d "$CACHE/.prometheus.XXXXXX")"
  mkdir -p "$stage/root/bin" "$stage/root/prometheus" "$stage/root/etc/prometheus"
  install -m 0755 "$bin" "$stage/root/bin/prometheus"
  chown 65534:65534 "$stage/root/prometheus" "$stage/root/etc/prometheus"
  # A tar keeps the owners (buildah add of a folder would make them root's).
  tar -C "$stage/root" --numeric-owner -cf "$stage/root.tar" .
  ctr="$(bah from --pull=never scratch)"
  bah add --quiet "$ctr" "$stage/root.tar" / >/dev/null
  rm -rf "$stage"
  bah config --user 65534:65534 --workingdir /prometheus --port 9090 \
    --entrypoint '["/bin/prometheus"]' \
    --cmd '["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
    --label org.opencontainers.image.source=modelops "$ctr"
  bah commit --quiet --rm "$ctr" "$name" >/dev/null
  log "prometheus: built $name"
  export_archive "$name" "$archive"
  record prometheus "$name" "$archive" "$key"
}

# The base standing in for python:3.11-slim; kept in buildah's storage (input of every build).
BASE_KEY="$(hash_text "$SUITE $BASE_PACKAGES ${DPKG_OPTS[*]} ${BASE_ENV[*]} $SOURCES_TEXT")"
BASE_IMAGE="localhost/modelops-python-base:$BASE_KEY"
BASE_ROOTFS="$CACHE/.base-rootfs.tar"
start_base() {
  if bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base: up to date ($BASE_IMAGE)"
    return 1
  fi
  log "base: building $BASE_IMAGE"
  start_rootfs "$BASE_ROOTFS" "$BASE_PACKAGES" true
}
finish_base() {
  local ctr old
  wait_rootfs "$BASE_ROOTFS"
  ctr="$(image_from_rootfs "$BASE_ROOTFS" "${BASE_ENV[@]}")"
  bah config --cmd '["python3"]' "$ctr"
  bah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
  log "base: built $BASE_IMAGE"
  # Bases of earlier keys are never used again.
  while read -r old; do
    [ "$old" = "$BASE_IMAGE" ] || bah rmi "$old" >/dev/null
  done < <(bah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/modelops-python-base:' || true)
}

# The locked wheels of every component, downloaded once on the host; kept to what the lock names.
ensure_wheelhouse() {
  local reqs key wheelhouse="$CACHE/wheelhouse" pip="$ROOT/.tools/bin/python" f
  reqs=(.image-build/build-requirements.txt)
  for c in "${COMPONENTS[@]}"; do reqs+=(".image-build/$c/requirements.txt"); done
  key="$(hash_files "${reqs[@]}")"
  if [ "$(cat "$wheelhouse/.key" 2>/dev/null)" != "$key" ]; then
    [ -x "$pip" ] || die "$pip missing: run make install"
    log "wheelhouse: pip download --require-hashes (${#reqs[@]} requirement files)"
    mkdir -p "$wheelhouse"
    for f in "${reqs[@]}"; do
      "$pip" -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
        --only-binary=:all: -d "$wheelhouse" -r "$f" || die "pip download -r $f failed"
    done
    # Wheels of earlier locks: drop those whose hash no requirement file names.
    for f in "$wheelhouse"/*; do
      grep -qhF "sha256:$(sha256sum <"$f" | cut -d' ' -f1)" "${reqs[@]}" || rm -f "$f"
    done
    echo "$key" >"$wheelhouse/.key"
  else
    log "wheelhouse: up to date ($(find "$wheelhouse" -name '*.whl' | wc -l) wheels)"
  fi
  # Into the build context (hard links: no copy); the Dockerfile's WHEELHOUSE build-arg names it.
  rm -rf .image-build/wheelhouse
  cp -al "$wheelhouse" .image-build/wheelhouse 2>/dev/null || cp -a "$wheelhouse" .image-build/wheelhouse
}

component_key() {
  local c="$1" files=() dirs=()
  mapfile -t dirs <".image-build/$c/local.txt"
  files=(hack/images/Dockerfile hack/images/Dockerfile.dockerignore hack/images/install.sh
    .image-build/build-requirements.txt ".image-build/$c/requirements.txt" ".image-build/$c/local.txt")
  # The package sources as the working tree has them (tracked and new files, not ignored ones).
  while read -r f; do [ -f "$f" ] && files+=("$f"); done \
    < <(git ls-files -co --exclude-standard -- "${dirs[@]}" | LC_ALL=C sort)
  hash_text "$BASE_IMAGE $(hash_files "${files[@]}")"
}

build_component() {
  local c="$1" key name archive
  key="$(component_key "$c")"
  name="localhost/modelops-$c:$key"
  archive="$CACHE/$c-$key.oci.tar"
  up_to_date "$c" "$key" && { log "$c: up to date ($name)"; return; }
  log "$c: buildah build --target $c -f hack/images/Dockerfile (no network)"
  # In a network namespace of its own (chroot isolation shares buildah's): nothing to reach.
  unshare --net -- "${BUILDAH[@]}" build --quiet --isolation chroot --pull=never \
    -f hack/images/Dockerfile --ignorefile hack/images/Dockerfile.dockerignore --target "$c" \
    --build-arg "PYTHON_BASE=$BASE_IMAGE" --build-arg WHEELHOUSE=.image-build/wheelhouse \
    -t "$name" . >/dev/null || die "buildah build --target $c failed"
  export_archive "$name" "$archive"
  record "$c" "$name" "$archive" "$key"
}

build_components() {  # after start_base; the base is finished here when it was started
  local c todo=() base_started="$1"
  for c in "${COMPONENTS[@]}"; do wanted "$c" && todo+=("$c"); done
  ensure_wheelhouse
  [ "$base_started" = 0 ] || finish_base
  for c in "${todo[@]}"; do build_component "$c"; done
  # Intermediate stages (build, build-<component>) left untagged in the storage.
  bah rmi --prune >/dev/null 2>&1 || true
}

export_requirements() {
  log "exporting the locked requirements (hack/images/install.sh export .image-build)"
  rm -rf .image-build
  hack/images/install.sh export .image-build
}

if [ "$WHEELHOUSE_ONLY" = 1 ]; then
  export_requirements
  ensure_wheelhouse
  echo "$CACHE/wheelhouse"
  exit 0
fi
wanted pause && build_pause
components=0
for c in "${COMPONENTS[@]}"; do wanted "$c" && components=1; done
if [ "$components" = 1 ]; then
  export_requirements
  base=0
  if start_base; then base=1; fi
  build_components "$base"
fi
wanted prometheus && build_prometheus
log "done: $CACHE ($(du -sm "$CACHE" | cut -f1) MB with buildah's storage)"
