#!/bin/bash
# Robust-finetuning variants for the 0.8 x target of docs/RESULTS.md section 4d, on a GPU,
# resumable (finetune resumes after a kill; finished variants are skipped).
# Source: the converted PGD-AT SNN of experiments/gpu_campaign.sh ($R/pgdat/conv).
# Run from the repository root:
#   PHASE=train bash experiments/gpu_ft_variants.sh     # the finetunings, side by side
#   PHASE=rows  bash experiments/gpu_ft_variants.sh     # PGD-20 + pgd-ensemble rows (n EVAL_N)
#   PHASE=both  bash experiments/gpu_ft_variants.sh     # each variant's row right after its training
# SEED: the finetuning seed (default 0; the key should name a non-default seed).
# VARIANTS: space-separated key:beta:eps:adversary_steps:epochs (eps in units of 1/255).
set -u
D=${DATA:-.gpu/cifar10-subset.npz}
R=${RUNS:-.gpu/runs}
DEV=${DEVICE:-cuda}
EVAL_N=${EVAL_N:-1000}
ENSEMBLES=${ENSEMBLES:-pgd-ensemble}
VARIANTS=${VARIANTS:-"e8s1b2:2:8:1:2 e8s1b6:6:8:1:2 e8s1b6x5:6:8:1:5 e8s3b6:6:8:3:3 e8s5b6:6:8:5:3 e4s3b6:6:4:3:3 e6s3b4:4:6:3:3 e8s3b2:2:8:3:3"}
mkdir -p "$R/logs" "$R/rows"
stamp() { echo "$(date +%H:%M:%S) $*" >> "$R/logs/stages.txt"; }
label() {  # beta eps steps epochs
  local adv="single-step"; [ "$3" -gt 1 ] && adv="$3-step"
  local seed=""; [ "${SEED:-0}" != 0 ] && seed=", seed ${SEED}"
  echo "robust-finetuned SNN (beta=$1, $adv adversary eps $2/255, $4 ep$seed)"
}
for v in $VARIANTS; do
  IFS=: read -r key beta eps steps epochs <<< "$v"
  out="$R/pgdat/$key"
  {
    if [ "${PHASE:-train}" != rows ] && [ ! -f "$out/snn.json" ]; then
      stamp "start ft $key"
      python3 -m robustsnn finetune "$R/pgdat/conv/snn.safetensors" --beta "$beta" \
        --eps "$eps/255" --adversary-steps "$steps" --epochs "$epochs" --lr 0.001 --batch-size 64 \
        --seed "${SEED:-0}" --eval-n 500 --out "$out" --device "$DEV" --quiet > "$R/logs/ft_$key.log" 2>&1
      stamp "end ft $key"
    fi
    if [ "${PHASE:-train}" != train ] && [ -f "$out/snn.safetensors" ] && [ ! -f "$R/rows/$key.json" ]; then
      stamp "start row $key"
      python3 experiments/table_rows.py "$R/rows/$key.json" \
        "$(label "$beta" "$eps" "$steps" "$epochs")=$out/snn.safetensors" --n "$EVAL_N" \
        --ensemble-n "$EVAL_N" --device "$DEV" --dataset "npz:$D" --ensembles "$ENSEMBLES" \
        > "$R/logs/row_$key.log" 2>&1
      stamp "end row $key"
    fi
  } &
done
wait
stamp "phase ${PHASE:-train} done"
