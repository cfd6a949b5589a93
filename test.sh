#!/usr/bin/env bash
# Every test, as CI runs them: install what the tests need, then the linter and the whole suite.
#
#   ./test.sh [PYTEST ARGS]     e.g. ./test.sh -m "not integration" (the fast subset)
#
# Installs into the same environment as ./demo.sh: the active virtual or conda environment, else
# .venv in this checkout (made if missing), every package at the version in constraints.txt.
# Slurm's tests run where slurm-wlm and munge are installed (scripts/install-slurm.sh), and are
# skipped, saying why, elsewhere.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
install_project dev
step "checking the installed packages' requirements" "$py" -m pip check
echo "ruff check ."
"$py" -m ruff check .
exec "$py" -m pytest -q "$@"
