#!/usr/bin/env bash
# Issue 10's ablation on the light16 grid at N >= 3, prepared for one short GPU run:
# five variants (full MOGeo, Gaussian click map, square click map, without CVMF, without
# L_s) trained from scratch side by side on one GPU, same data, seed, steps and schedule;
# their last.pt slimmed to fp16 into OUT_DIR, with the runs' logs and metrics (runs.tgz).
#
#   bash scripts/gpu_ablation.sh OUT_DIR          # on a machine with a CUDA GPU
#
# Needs only python3 with torch, numpy, scipy, Pillow, tqdm, click, threadpoolctl, shapely and
# pyproj (no rasterio: the tiles travel as the scene cache SCENES, made here beforehand with
# `python scripts/train_default.py --out /tmp/x --scenes SCENES --data-only --n-train 1 --n-val 1`).
# Environment: SCENES (default .cache/scenes), N_TRAIN (6000), EPOCHS (8), BATCH (32),
# END_S (seconds from start by which training must stop, default 540), DEVICE (cuda),
# WORKERS (CPU count). Then evaluate here, on a fresh render of the validation tile:
#   geomogeo synth out/abl_val --n 150 --split val --targets 3,6 --min-object 60 \
#       --parallax --holdout las_vegas --seed 23
#   python scripts/ablation_se.py out/abl_val/manifest.jsonl OUT_DIR/{full,no_mope,...}.pt
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: gpu_ablation.sh OUT_DIR}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
N=${N_TRAIN:-6000} EPOCHS=${EPOCHS:-8} BATCH=${BATCH:-32}
STEPS=$(( EPOCHS * ( (N + BATCH - 1) / BATCH ) ))
VARIANTS=full,no_mope,no_mope_square,no_cvmf,no_ls
WORK=${WORK:-/tmp/geomogeo_ablation}
COMMON=(--scenes "${SCENES:-.cache/scenes}" --work "$WORK/packed" --n-train "$N" --n-val 200
        --parallax --holdout las_vegas --targets 3,6 --min-object 60 --query-stride 16
        --rotations 8 --seed 0 --quiet --workers "${WORKERS:-$(nproc)}")
el "data: $N training photos"
python3 scripts/train_default.py --out "$WORK/runs" "${COMMON[@]}" --data-only || exit 1
LEFT=$(( ${END_S:-540} - ( $(date +%s) - T0 ) ))
MAX_MIN=$(python3 -c "print(round(max(0.5, ($LEFT - 60) / 60), 2))")
el "training: $STEPS steps each, at most $MAX_MIN minutes"
timeout "$LEFT" python3 scripts/train_default.py --out "$WORK/runs" "${COMMON[@]}" \
    --variants $VARIANTS --parallel --batch "$BATCH" --lr 5e-4 --warmup 100 \
    --epochs "$EPOCHS" --max-steps "$STEPS" --max-minutes "$MAX_MIN" --device "${DEVICE:-cuda}"
el "slimming"
pairs=()
for v in ${VARIANTS//,/ }; do
    [ -f "$WORK/runs/$v/last.pt" ] && pairs+=("$WORK/runs/$v/last.pt" "$OUT_DIR/$v.pt")
    echo "== $v"; cat "$WORK/runs/$v/metrics.csv" 2>/dev/null
done
python3 scripts/slim_checkpoint.py "${pairs[@]}"
tar czf "$OUT_DIR/runs.tgz" -C "$WORK/runs" --exclude='*.pt' .
el done
