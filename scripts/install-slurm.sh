#!/usr/bin/env bash
# Install what the Slurm tests (tests/integration/test_slurm.py) need: Debian's slurm-wlm and munge.
# The tests start their own throwaway cluster (munged, slurmctld, two slurmd) and stop it after.
# Needs root, or sudo, and apt (Debian or Ubuntu). Without these packages the Slurm tests are skipped,
# and pytest's summary says why.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    echo "slurm-wlm and munge are installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to apt-get install slurm-wlm munge" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q slurm-wlm munge >/dev/null; }
echo "installed slurm-wlm and munge"
