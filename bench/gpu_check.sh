#!/usr/bin/env bash
# The GPU check, in one call on a GPU machine without network (see scripts/gpu-bundle.sh, run
# beforehand where the package index is reachable, for the .wheels/ and .gpu-data/ it expects):
#   1. installs what the image lacks from .wheels/ into .gpu-env/ (no index, no dependencies pulled);
#   2. runs the GPU tests (tests/gpu: bf16, ZeRO-1/2, LAMB/AdamW, evaluation, checkpoint, resume,
#      export; the host synchronisations left in the step, CUDA's sync-debug warnings included; the
#      varlen FlashAttention kernel against block-diagonal SDPA, with and without dropout; packed rows;
#      the optimizer-step timer and host-sync counter; micro_batch_size auto; the recipes under 80 GB,
#      their measured peak against python -m pretrain plan's prediction);
#   3. measures: bench.host_syncs on the GPU, bench.model_speed --gpu (our model against
#      transformers', eager and compiled), then bench.trainer_speed --gpu (the trainer itself:
#      padded and packed, eager and compiled, seq 128 and 512).
# Reports go to $OUT (default gpu-check/). PART=tests runs 1-2 and the host synchronisations, PART=bench
# the speed measurements, each meant to finish in under 10 minutes on one H100/H200 (default: both).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --find-links .wheels --target .gpu-env .wheels/*.whl \
    2>&1 | tail -n 3
export PYTHONPATH="$PWD/.gpu-env:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PRETRAIN_GPU_DATA="$PWD/.gpu-data/data"
export PRETRAIN_GPU_DATA512="$PWD/.gpu-data/data512"
python3 -c 'import torch, deepspeed, pydantic; print("torch", torch.__version__, "cuda", torch.version.cuda,
"deepspeed", deepspeed.__version__, "pydantic", pydantic.__version__)' | tee "$OUT/versions.txt"
status=0
PART=${PART:-all}
if [ "$PART" != bench ]; then
# addopts cleared: the image has no pytest-xdist
timeout 420 python3 -m pytest -o addopts="" -rs -s -q -m gpu tests/gpu 2>&1 | tee "$OUT/pytest.txt" | tail -n 40
status=${PIPESTATUS[0]}
timeout 120 python3 -m bench.host_syncs --config configs/tiny-cpu.yaml data.path="$PRETRAIN_GPU_DATA" \
    run_dir="$OUT/host-syncs-run" model.size=mini deepspeed.precision=bf16 deepspeed.zero_stage=1 \
    data.micro_batch_size=32 deepspeed.global_batch_size=64 optim.total_steps=20 optim.warmup_steps=4 \
    logging.every_steps=10 logging.wandb=disabled eval.every_steps=0 checkpoint.every_steps=100 \
    > "$OUT/host_syncs.json" 2> "$OUT/host_syncs.log"
tail -n 30 "$OUT/host_syncs.json"
fi
if [ "$PART" != tests ]; then
timeout 240 python3 -m bench.model_speed --gpu 2>&1 | tee "$OUT/model_speed.txt" | tail -n 20
# the trainer: padded vs packed, eager vs compiled, at seq 128 and 512 (BERT-Large, bf16); RUNS selects
timeout "${TRAINER_SPEED_S:-300}" python3 -m bench.trainer_speed --gpu --data128 .gpu-data/data \
    --data512 .gpu-data/data512 --json "$OUT/trainer_speed.json" ${RUNS:+--runs $RUNS} 2>&1 \
    | tee "$OUT/trainer_speed.txt" | tail -n 20
fi
rm -rf "$OUT/host-syncs-run"
exit "$status"
