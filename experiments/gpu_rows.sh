#!/bin/bash
# Second phase of experiments/gpu_campaign.sh on a GPU: the two ensembles for every SNN row
# (pgd-ensemble on EVAL_N samples, apgd-ensemble on APGD_N) and two extra robust finetunings
# tried for the 0.8 x target (beta 6; adversary eps 4/255). Resumable like the campaign.
set -u
D=${DATA:-.gpu/cifar10-subset.npz}
R=${RUNS:-.gpu/runs}
DEV=${DEVICE:-cuda}
EVAL_N=${EVAL_N:-1000}
APGD_N=${APGD_N:-500}
stamp() { echo "$(date +%H:%M:%S) $*" >> "$R/logs/stages.txt"; }
trow() { python3 experiments/table_rows.py "$R/rows/$1.json" "$2=$3" --n "$EVAL_N" --device "$DEV" --dataset "npz:$D" "${@:4}"; }
rows() {  # key label checkpoint
  [ -f "$3" ] || return 0
  stamp "start ens $1"
  trow "$1" "$2" "$3" --ensembles pgd-ensemble --ensemble-n "$EVAL_N"
  trow "$1" "$2" "$3" --ensembles apgd-ensemble --ensemble-n "$APGD_N"
  stamp "end ens $1"
}
ftx() {  # outdir beta eps label
  local out="$R/pgdat/$1"
  [ -f "$out/snn.json" ] || python3 -m robustsnn finetune "$R/pgdat/conv/snn.safetensors" --beta "$2" \
    --epochs 2 --eps "$3" --lr 0.001 --batch-size 64 --eval-n 500 --out "$out" --device "$DEV" --quiet
  rows "$1" "$4" "$out/snn.safetensors"
}
mkdir -p "$R/rows" "$R/logs"
ftx ft2_b6 6 2/255 "robust-finetuned SNN (beta=6, 2 ep)" > "$R/logs/x_b6.log" 2>&1 &
ftx ft2_e4 2 4/255 "robust-finetuned SNN (beta=2, adversary eps 4/255, 2 ep)" > "$R/logs/x_e4.log" 2>&1 &
for key in ft2 conv snn_vanilla snn_rfgsm plain2 trades_ft2 mart_ft2 ft_long; do
  label=$(python3 -c "import json,sys; print(next(iter(json.load(open(sys.argv[1])))))" "$R/rows/$key.json")
  case $key in
    ft2|plain2|ft_long|conv) ck="$R/pgdat/$key/snn.safetensors" ;;
    trades_ft2) ck="$R/trades/ft2/snn.safetensors" ;;
    mart_ft2) ck="$R/mart/ft2/snn.safetensors" ;;
    *) ck="$R/$key/snn.safetensors" ;;
  esac
  rows "$key" "$label" "$ck" > "$R/logs/ens_$key.log" 2>&1 &
done
wait
stamp "ensembles done"
