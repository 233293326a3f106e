"""reliable vs apgd-ensemble: CPU seconds (process time) on the same 40 CIFAR images, one process, each twice (RESULTS.md section 9)."""

import json
import time

import torch

from robustsnn.data import load_dataset
from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.io.models import load_model
from robustsnn.stages import eval_subset

torch.set_num_threads(1)
m, meta = load_model("../shared/checkpoints/cifar10-strong-ft/snn.safetensors")
x, y = eval_subset(load_dataset("npz:../shared/data/cifar10-subset.npz"), 500)
idx = torch.arange(0, 500, 12)[:40]
x, y = x[idx], y[idx]
out = {}
for name in ("reliable", "apgd-ensemble", "reliable", "apgd-ensemble"):
    t = time.process_time()
    config = EvaluationConfig(eps="8/255", ensemble=name, diagnostics="none", batch_size=40)
    r = evaluate(m, x, y, config, EvaluationContext(quiet=True))
    out.setdefault(name, []).append(
        {
            "cpu_seconds": time.process_time() - t,
            "robust": r["robust_accuracy"],
            "clean": r["clean_accuracy"],
        }
    )
    print(name, out[name][-1], flush=True)
json.dump(out, open("cost_reliable_vs_apgd.json", "w"), indent=1)
