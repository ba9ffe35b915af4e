#!/usr/bin/env bash
# Create the Secret grafana-admin (key "password") with a random password, once.
# config/grafana's Deployment reads it through GF_SECURITY_ADMIN_PASSWORD__FILE; no password is
# ever committed. Idempotent: an existing Secret is kept (the password does not change).
# Usage: hack/grafana-admin-secret.sh [NAMESPACE]   (default modelops-system; KUBECTL=kubectl)
set -euo pipefail

namespace="${1:-modelops-system}"
kubectl="${KUBECTL:-kubectl}"
name="grafana-admin"
show="$kubectl -n $namespace get secret $name -o jsonpath='{.data.password}' | base64 -d"

if $kubectl -n "$namespace" get secret "$name" >/dev/null 2>&1; then
  echo "Secret $namespace/$name exists; the Grafana admin password is unchanged. Read it with:"
  echo "  $show"
  exit 0
fi

# 32 characters from [A-Za-z0-9] (~190 bits); 48 random bytes give 64 base64 characters.
password="$(head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' | cut -c1-32)"
if [ "${#password}" -ne 32 ]; then
  echo "error: could not generate a password from /dev/urandom" >&2
  exit 1
fi

# Sent on stdin, so the password never appears on a command line (ps) or in a file.
if ! out="$(printf '{"apiVersion":"v1","kind":"Secret","type":"Opaque","metadata":{"name":"%s","namespace":"%s","labels":{"app.kubernetes.io/name":"grafana","app.kubernetes.io/part-of":"modelops"}},"stringData":{"password":"%s"}}' \
    "$name" "$namespace" "$password" | $kubectl create -f - 2>&1)"; then
  if grep -q AlreadyExists <<<"$out"; then  # created concurrently: keep that one
    echo "Secret $namespace/$name was created meanwhile; read the password with:"
    echo "  $show"
    exit 0
  fi
  echo "error: creating Secret $namespace/$name failed: $out" >&2
  echo "Does the namespace exist, and may you create Secrets in it?" >&2
  exit 1
fi
echo "Created Secret $namespace/$name with a random Grafana admin password (user admin). Read it with:"
echo "  $show"
