#!/bin/bash
# apgd-ensemble (n 500) only, for the rows experiments/gpu_rows.sh did not reach before its time limit.
# Rows keep their labels from the existing row JSON; run from the repository root after gpu_rows.sh.
R=.gpu/runs
for key in ft2 plain2 trades_ft2 mart_ft2 ft_long; do
  label=$(python3 -c "import json,sys; print(next(iter(json.load(open(sys.argv[1])))))" "$R/rows/$key.json")
  case $key in trades_ft2) ck=$R/trades/ft2/snn.safetensors;; mart_ft2) ck=$R/mart/ft2/snn.safetensors;; *) ck=$R/pgdat/$key/snn.safetensors;; esac
  python3 experiments/table_rows.py $R/rows/$key.json "$label=$ck" --n 1000 --device cuda --dataset npz:.gpu/test.npz --ensembles apgd-ensemble --ensemble-n 500 > $R/logs/apgd_$key.log 2>&1 &
done
wait
