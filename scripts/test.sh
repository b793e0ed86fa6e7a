#!/usr/bin/env bash
# Set up (CPU torch from the local wheel, the package with its test extra) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
exec python3 -m pytest -q "$@"
