#!/usr/bin/env bash
# Installs the project's local tooling into project-local folders (nothing global):
#   .venv/      moto server (emulator), boto3, reference peers for tests, cargo-lambda + zig
#   .venv-sam/  aws-sam-cli and cfn-lint (their pins clash with moto's)
#   .venv-ministack/  ministack + aws-sam-translator: the emulated CloudFormation scripts/deploy-local.sh
#               deploys into (ministack pins botocore exactly, clashing with both venvs above)
#   bench/.venv aws-lambda-powertools + boto3, for the Python comparison in bench/ (bench only)
# Idempotent: a venv whose requirements file has not changed is left alone.
# Usage: scripts/bootstrap.sh [dev|sam|ministack|bench|all]   (default: dev; all = dev + sam + ministack)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
want=${1:-dev}
py=${PYTHON:-python3}

install_venv() { # dir requirements
  local dir=$1 req=$2 stamp="$1/.requirements.sha256"
  local sum; sum=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
    return 0
  fi
  echo "bootstrap: installing $(basename "$req") into ${dir#"$root"/}" >&2
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip >&2
  "$dir/bin/python" -m pip install --quiet -r "$req" >&2
  echo "$sum" >"$stamp"
}

case "$want" in
  dev) install_venv "$root/.venv" "$root/scripts/requirements-dev.txt" ;;
  sam) install_venv "$root/.venv-sam" "$root/scripts/requirements-sam.txt" ;;
  ministack) install_venv "$root/.venv-ministack" "$root/scripts/requirements-ministack.txt" ;;
  bench) install_venv "$root/bench/.venv" "$root/bench/requirements.txt" ;;
  all)
    install_venv "$root/.venv" "$root/scripts/requirements-dev.txt"
    install_venv "$root/.venv-sam" "$root/scripts/requirements-sam.txt"
    install_venv "$root/.venv-ministack" "$root/scripts/requirements-ministack.txt"
    ;;
  *) echo "usage: $0 [dev|sam|ministack|bench|all]" >&2; exit 2 ;;
esac
