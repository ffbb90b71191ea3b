#!/usr/bin/env bash
# Creates .venv with the end-to-end test clients (OpenTelemetry SDK exporters, pytest), once per
# change of tests/e2e/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && cmp -s tests/e2e/requirements.txt "$stamp"; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
cp tests/e2e/requirements.txt "$stamp"
