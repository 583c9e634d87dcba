#!/usr/bin/env bash
# Set up the development environment in .venv: the app, training and quantization (tensorflow), and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[train,test]"
