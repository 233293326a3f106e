"""Is a gap sample a lottery or a width? Single members on chosen samples, over seeds.

``python experiments/probe_sample.py CKPT 2,17 bptt-pcw-2,bptt-rel-pcw-0.5 --seeds 3``

Runs one attack (SA-PGD-300 by default, or APGD-CE/DLR-300) through each given estimator, alone,
on exactly the given dataset indices (``EvaluationRun(indices=...)``), once per seed, and prints
per estimator a row of ``B`` (broken) / ``.`` (standing) with the final margin of each sample.
A break that only one estimator finds, whatever the seed, is a width effect; one that a seed
finds and another not is the random start's lottery (issue 30, docs/RESULTS.md 12k).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from robustsnn.evaluation.config import EvaluationConfig, EvaluationRun
from robustsnn.evaluation.run import run_evaluation

STEP_PARAM = {"sapgd": "steps", "apgd-ce": "n_iter", "apgd-dlr": "n_iter"}


def probe(
    checkpoint: str,
    indices: list[int],
    estimator: str,
    attack: str,
    eps: float,
    seed: int,
    steps: int = 300,
) -> list[dict[str, object]]:
    """The records of one member (``steps`` steps) on exactly ``indices``."""
    member = {"attack": attack, "estimator": estimator, "params": {STEP_PARAM[attack]: steps}}
    config = EvaluationConfig(eps=eps, attacks=[member], seed=seed, diagnostics="none")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe"
        run_evaluation(checkpoint, config, EvaluationRun(indices=indices, out_dir=out, quiet=True))
        return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("indices", help="comma-separated dataset indices of the test split")
    parser.add_argument("estimators", help="comma-separated estimator names")
    parser.add_argument("--attack", default="sapgd", choices=sorted(STEP_PARAM))
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    indices = [int(i) for i in args.indices.split(",")]
    for estimator in args.estimators.split(","):
        start = time.process_time()
        cells = []
        for seed in range(args.seeds):
            records = probe(
                args.checkpoint, indices, estimator, args.attack, args.eps, seed, args.steps
            )
            marks = "".join("." if r["robust"] else "B" for r in records)
            margins = ",".join(
                "-" if r["margin"] is None else f"{float(r['margin']):.2f}"  # type: ignore[arg-type]
                for r in records
            )
            cells.append(f"{marks}({margins})")
        seconds = time.process_time() - start
        print(f"{args.attack}/{estimator}: {' '.join(cells)}  {seconds:.1f} CPU-s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
