#!/usr/bin/env bash
# Validates Kubernetes manifests strictly (unknown fields rejected) against the schemas of one
# Kubernetes version, offline: kubernetes-validate ships them. Installs it once into a venv
# under build/ (from PyPI, pinned) and reuses it.
#   ops/scripts/k8s-validate.sh [-k VERSION] FILE...     (default VERSION 1.29.0)
# Custom resources (ServiceMonitor, ScaledObject) have no schema there: reported as WARN.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=$root/build/tools/kubernetes-validate
version=1.29.0
if [ "${1:-}" = -k ]; then version=$2; shift 2; fi
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 >&2
fi
exec "$venv/bin/kubernetes-validate" --strict -k "$version" --quiet "$@"
