#!/bin/bash
# The CIFAR-10-subset table of docs/RESULTS.md section 4c on a GPU, resumable: every stage is
# skipped when its output exists, and train-ann/finetune/train-snn resume after a kill.
# Run from the repository root:  DATA=.gpu/cifar10-subset.npz RUNS=.gpu/runs bash experiments/gpu_campaign.sh
# Recipe = configs/cifar10-cpu.yaml (vgg_small w32 fc256, ANN 6 epochs at 2/255, T = 8,
# finetuning 2 epochs, beta 2) plus a 10-epoch robust finetuning and SNN baselines of 10 epochs.
set -u
D=${DATA:-.gpu/cifar10-subset.npz}
R=${RUNS:-.gpu/runs}
DEV=${DEVICE:-cuda}
ANN_EPOCHS=${ANN_EPOCHS:-6}
FT_EPOCHS=${FT_EPOCHS:-2}
FT_LONG=${FT_LONG:-10}
EVAL_N=${EVAL_N:-1000}
ENS_N=${ENS_N:-1000}
ENSEMBLES=${ENSEMBLES:-pgd-ensemble,apgd-ensemble}
SNN_EPOCHS=${SNN_EPOCHS:-10}
RS="python3 -m robustsnn"
C="--device $DEV --quiet"
M="--model vgg_small --width 32 --fc 256"
mkdir -p "$R/logs"
stamp() { echo "$(date +%H:%M:%S) $*" >> "$R/logs/stages.txt"; }

ann() {  # name objective
  [ -f "$R/$1/ann.json" ] || { stamp "start ann $1"; $RS train-ann --dataset "npz:$D" $M --objective "$2" \
    --eps 2/255 --epochs $ANN_EPOCHS --batch-size 64 --lr 0.1 --eval-n 500 --out "$R/$1" $C; stamp "end ann $1"; }
  [ -f "$R/$1/conv/snn.json" ] || { stamp "start convert $1"; $RS convert "$R/$1/ann.safetensors" --T 8 \
    --calib-T 100 --percentile 99.7 --scale 0.3 --reset hard --bn reestimate --eval-n 500 \
    --out "$R/$1/conv" $C; stamp "end convert $1"; }
}
ft() {  # name outdir beta epochs
  [ -f "$R/$1/$2/snn.json" ] || { stamp "start ft $1/$2"; $RS finetune "$R/$1/conv/snn.safetensors" --beta "$3" \
    --epochs "$4" --eps 2/255 --lr 0.001 --batch-size 64 --eval-n 500 --out "$R/$1/$2" $C; stamp "end ft $1/$2"; }
}
snn() {  # name objective
  [ -f "$R/$1/snn.json" ] || { stamp "start snn $1"; $RS train-snn --dataset "npz:$D" $M --objective "$2" --T 8 \
    --epochs "$SNN_EPOCHS" --eps 2/255 --lr 0.1 --batch-size 64 --eval-n 500 --out "$R/$1" $C; stamp "end snn $1"; }
}
{ ann pgdat pgd_at && { ft pgdat ft2 2 "$FT_EPOCHS" & ft pgdat plain2 0 "$FT_EPOCHS" & ft pgdat ft_long 2 "$FT_LONG" & wait; }; } > "$R/logs/pgdat.log" 2>&1 &
{ ann trades trades && ft trades ft2 2 "$FT_EPOCHS"; } > "$R/logs/trades.log" 2>&1 &
{ ann mart mart && ft mart ft2 2 "$FT_EPOCHS"; } > "$R/logs/mart.log" 2>&1 &
snn snn_vanilla natural > "$R/logs/snn_vanilla.log" 2>&1 &
snn snn_rfgsm rfgsm_at > "$R/logs/snn_rfgsm.log" 2>&1 &
wait
stamp "training done"

# Phase 2: one table row per checkpoint, each in its own process and JSON (merged by
# experiments/merge_tables.py), so rows run side by side on the GPU.
row() {  # key label checkpoint [extra table_rows args]
  local key=$1 label=$2 ckpt=$3; shift 3
  [ -f "$ckpt" ] || return 0
  stamp "start row $key"
  python3 experiments/table_rows.py "$R/rows/$key.json" "$label=$ckpt" --n "$EVAL_N" \
    --ensemble-n "$ENS_N" --device "$DEV" --dataset "npz:$D" "$@" > "$R/logs/row_$key.log" 2>&1
  stamp "end row $key"
}
mkdir -p "$R/rows"
E="--ensembles $ENSEMBLES"
row ann_pgdat "PGD-AT ANN (eps 2/255)" "$R/pgdat/ann.safetensors" --eps 2/255,4/255,8/255 &
row ann_trades "TRADES ANN (eps 2/255)" "$R/trades/ann.safetensors" --eps 2/255,4/255,8/255 &
row ann_mart "MART ANN (eps 2/255)" "$R/mart/ann.safetensors" --eps 2/255,4/255,8/255 &
row conv "converted SNN (no finetuning)" "$R/pgdat/conv/snn.safetensors" $E &
row plain2 "plain-finetuned SNN (beta=0, $FT_EPOCHS ep)" "$R/pgdat/plain2/snn.safetensors" $E &
row ft2 "robust-finetuned SNN (beta=2, $FT_EPOCHS ep)" "$R/pgdat/ft2/snn.safetensors" $E &
row ft_long "robust-finetuned SNN (beta=2, $FT_LONG ep)" "$R/pgdat/ft_long/snn.safetensors" $E &
row trades_ft2 "TRADES ANN -> robust-finetuned SNN ($FT_EPOCHS ep)" "$R/trades/ft2/snn.safetensors" $E &
row mart_ft2 "MART ANN -> robust-finetuned SNN ($FT_EPOCHS ep)" "$R/mart/ft2/snn.safetensors" $E &
row snn_vanilla "vanilla SNN (BPTT from scratch, $SNN_EPOCHS ep)" "$R/snn_vanilla/snn.safetensors" $E &
row snn_rfgsm "RFGSM-AT SNN (BPTT from scratch, eps 2/255, $SNN_EPOCHS ep)" "$R/snn_rfgsm/snn.safetensors" $E &
wait
stamp "rows done"
