#!/usr/bin/env bash
# Set up (CPU torch from the local wheel, the package) and run an online run on built-in data.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e .
exec lifelong run examples/quickstart.yaml --out runs/quickstart "$@"
