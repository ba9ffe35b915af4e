#!/usr/bin/env bash
# Build the four modelops images from hack/images/Dockerfile (needs a running Docker engine).
# The context is the repository root, limited by hack/images/Dockerfile.dockerignore.
# Usage: hack/images.sh [--prefix REGISTRY/NAMESPACE] [--tag TAG] [--push]
#   default: local names modelops-<component>:dev (what the kind/minikube/microk8s overlays use)
set -euo pipefail
# BuildKit: only it reads the Dockerfile's own .dockerignore (the legacy builder would send
# the whole tree, venvs included).
export DOCKER_BUILDKIT=1
cd "$(dirname "$0")/.."

prefix=""
tag="dev"
push=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs REGISTRY/NAMESPACE}/"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --push) push=1; shift ;;
    *) echo "usage: $0 [--prefix REGISTRY/NAMESPACE] [--tag TAG] [--push]" >&2; exit 2 ;;
  esac
done

docker info >/dev/null 2>&1 || { echo "images: no Docker engine answers (docker info failed)" >&2; exit 1; }
rm -rf .image-build
hack/images/install.sh export .image-build
for component in operator trainer server loadgen; do
  image="${prefix}modelops-${component}:${tag}"
  echo "[images] building $image" >&2
  docker build --target "$component" -f hack/images/Dockerfile -t "$image" .
  if [ "$push" = 1 ]; then
    docker push "$image"
  fi
done
