#!/usr/bin/env bash
# The whole pipeline on CPU in a few minutes: install, preprocess, train, export, fill-mask.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q torch==2.13.0          # CPU build; first, so pip never resolves a CUDA torch
python3 -m pip install -q -e '.[demo]'
python3 -m pretrain.demo --output "${1:-demo}"
