#!/usr/bin/env bash
# Turn a finished training run into a shipped default, then evaluate it on Kodak beside the other
# shipped defaults and the classical codecs, in one run:
#
#   bash scripts/ship_default.sh dlf ~/.cache/latentcodec/runs/dlf-small-pixel
#   bash scripts/ship_default.sh percov2 ~/.cache/latentcodec/runs/percov2-small-flow
#
# 1. export-weights: the run's best validated weights (best.pt, else its last checkpoint), float16;
# 2. fit-token-prior --save-model: the learned token prior fitted to the frozen export (1024 training
#    crops, 1000 steps, the weights that code 64 crops of withheld training images best), written with
#    it into latentcodec/zoo/weights/MODEL-default (the folder `latentcodec.load(MODEL)` reads), in
#    shards of at most 45 MiB (git hosts refuse files over 100 MB);
# 3. latentcodec eval on all 24 Kodak images: the new default, --compare glc-image, every classical
#    baseline, into docs/results/kodak-MODEL-default.
# Work files go to ~/.cache/latentcodec/ship/MODEL. PRIOR_ARGS and EVAL_ARGS add options to steps 2
# and 3 (e.g. PRIOR_ARGS="--crops 64 --steps 400" for a quick prior); SHIP_TO and RESULTS_TO move
# the two output folders (a dry run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ] || { [ "$1" != dlf ] && [ "$1" != percov2 ]; }; then
    echo "usage: bash scripts/ship_default.sh dlf|percov2 RUN_DIR" >&2
    exit 2
fi
model=$1
run=$2
if [ -f "$run/best.pt" ]; then source_file=$run/best.pt; else source_file=$run/checkpoint.pt; fi
if [ ! -f "$source_file" ]; then
    echo "ship_default: no best.pt or checkpoint.pt in $run" >&2
    exit 1
fi
work=${HOME}/.cache/latentcodec/ship/$model
shipped=${SHIP_TO:-latentcodec/zoo/weights/$model-default}
results=${RESULTS_TO:-docs/results/kodak-$model-default}
mkdir -p "$work"

echo "[1/3] exporting $source_file"
rm -rf "$work/export"
latentcodec export-weights --dtype float16 "$source_file" "$work/export"

echo "[2/3] fitting the token prior -> $shipped"
if [ "$model" = percov2 ]; then model_args=(--model percov2 --crop-size 512); else model_args=(--model dlf); fi
# A rerun after an interruption resumes the fit; weights from another checkpoint, or another recipe,
# start it over.
prior_recipe="--crops 1024 --steps 1000 ${PRIOR_ARGS:-}"
stamp="$source_file $(stat -c %Y "$source_file") $prior_recipe"
restart=()
if [ "$(cat "$work/prior-source" 2>/dev/null)" != "$stamp" ]; then
    restart=(--restart)
    rm -rf "$results"  # an evaluation of other weights would be resumed, not redone
fi
echo "$stamp" > "$work/prior-source"
# shellcheck disable=SC2086  # prior_recipe is a list of options
# 256 crops and 2000 steps (the fit's defaults) memorised the crops: 0.28 bits per token on them, more
# than the fixed length on Kodak. Four times the crops, and the held-out choice of weights, generalise.
latentcodec fit-token-prior "$work/prior" "${model_args[@]}" --weights "$work/export" --run-dir "$work/prior-run" \
    "${restart[@]}" --save-model "$shipped" --dtype float16 --max-shard-size 45MiB --force $prior_recipe

echo "[3/3] Kodak evaluation -> $results"
# shellcheck disable=SC2086  # EVAL_ARGS is a list of options
latentcodec eval --model "$model" --weights "$shipped" --compare glc-image --baselines all \
    --metrics psnr,thumbnail_psnr,ms_ssim,ssimulacra2,butteraugli \
    --data ../shared/data/kodak --out "$results" ${EVAL_ARGS:-}
echo "shipped $shipped (from $source_file); results in $results"
