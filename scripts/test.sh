#!/usr/bin/env bash
# Set up the development environment (app + training + tests) in .venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[train,test]"
exec .venv/bin/python -m pytest "$@"
