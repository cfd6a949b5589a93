#!/usr/bin/env bash
# The whole pipeline on CPU in a few minutes: install, preprocess, train, export, fill-mask.
#
#   ./demo.sh [OUTPUT]     (default OUTPUT: demo)
#
# Installs into the active virtual or conda environment, else into .venv in this checkout (made if
# missing), every package at the version the tests passed with (scripts/env.sh). ./test.sh then
# adds what the tests need to the same environment and runs them.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
install_project demo
exec "$py" -m pretrain.demo --output "${1:-demo}"
