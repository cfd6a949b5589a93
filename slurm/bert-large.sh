#!/bin/bash
# Submit BERT-Large phase 1 (seq 128) and phase 2 (seq 512) as a chain: phase 2 starts once phase 1
# has finished (requeues included) and exported its weights, and is initialised from them.
#
#   NODES=64 GPUS_PER_NODE=8 slurm/bert-large.sh
#
# Environment (defaults): NODES (64), GPUS_PER_NODE (8; 0 for CPU nodes: one task per node),
# CPUS_PER_TASK (12), TIME (24:00:00), RUN_ROOT (runs), PHASE1_CONFIG (configs/bert-large-phase1.yaml),
# PHASE2_CONFIG (configs/bert-large-phase2.yaml), PHASE1_ARGS / PHASE2_ARGS (extra section.field=value),
# SBATCH_ARGS (extra sbatch options, e.g. --account=... --partition=...), PYTHON (python3). Prints the two job ids.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
NODES=${NODES:-64}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
RUN_ROOT=${RUN_ROOT:-runs}
if [ "$GPUS_PER_NODE" -gt 0 ]; then
    shape=(--nodes="$NODES" --ntasks-per-node="$GPUS_PER_NODE" --gpus-per-node="$GPUS_PER_NODE")
else
    shape=(--nodes="$NODES" --ntasks-per-node=1)
fi
shape+=(--cpus-per-task="${CPUS_PER_TASK:-12}" --time="${TIME:-24:00:00}")
mkdir -p logs
# shellcheck disable=SC2086
phase1_export=$("$PYTHON" -m pretrain path "$RUN_ROOT/phase1" export)
phase1=$(CONFIG=${PHASE1_CONFIG:-configs/bert-large-phase1.yaml} RUN_DIR="$RUN_ROOT/phase1" EXPORT=1 \
    sbatch --parsable --job-name=bert-phase1 "${shape[@]}" ${SBATCH_ARGS:-} slurm/pretrain.sbatch ${PHASE1_ARGS:-})
# shellcheck disable=SC2086
phase2=$(CONFIG=${PHASE2_CONFIG:-configs/bert-large-phase2.yaml} RUN_DIR="$RUN_ROOT/phase2" EXPORT=1 \
    sbatch --parsable --job-name=bert-phase2 --dependency=afterok:"$phase1" --kill-on-invalid-dep=yes \
    "${shape[@]}" ${SBATCH_ARGS:-} slurm/pretrain.sbatch model.init_from="$phase1_export" ${PHASE2_ARGS:-})
echo "$phase1 $phase2"
