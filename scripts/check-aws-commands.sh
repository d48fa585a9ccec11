#!/usr/bin/env bash
# CI check: every documented AWS CLI command, and the provisioning scripts in scripts/aws/, run
# without AWS. Installs the AWS CLI v1 (PyPI `awscli`) and moto's server (`moto[server]`) into a
# venv under target/, then runs scripts/check_aws_commands.py, which says what it checks. Every
# `aws` call gets dummy credentials and either 127.0.0.1:9 (nothing listens) or the local moto
# server on a free loopback port: nothing contacts AWS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=target/aws-check-venv
requirements="awscli moto[server]"
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/aws" ] \
    || [ "$(cat "$venv/installed" 2>/dev/null)" != "$requirements" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
  echo "$requirements" >"$venv/installed"
fi
export PATH="$PWD/$venv/bin:$PATH"
echo "AWS CLI: $(aws --version 2>&1) (v1; the docs say what differs in v2)"
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }
exec python3 scripts/check_aws_commands.py "$@"
