"""Single-draw attacks vs expectation over randomness on a model whose noise hides its gradient.

The model (the one of tests/evaluation/test_stochastic.py, at a larger n) is a linear classifier
on 1x4x4 images whose input gradient is multiplied per pixel by ``1 + 1.5 s`` with a random sign
``s`` per draw (2.5 or -0.5 with probability 1/2: a single draw's gradient sign is a coin flip,
the expectation is the true gradient), plus a 1e-3 value noise on the logits. Its deterministic
twin (the same linear map, no noise) gives the robust accuracy an attack should reach.

    python benchmarks/stochastic_eot.py [--n 200] [--eps 0.1] [--attack pgd|apgd-ce]

Prints a markdown table: robust accuracy with its 95% interval under single draws (randomness
"off"), under EOT with K from the variance check ("auto"), and on the deterministic twin, plus
the checks' verdicts and the chosen K.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.evaluation.intervals import format_accuracy


def _linear(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(seed + 7))
        model[1].bias.sub_(model(x).mean(0))
    return model


class NoisyGradient(nn.Module):
    """The linear model with a random per-pixel sign on its input gradient (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = _linear()

    def forward(self, x: Tensor) -> Tensor:
        sign = torch.randint_like(x, 2) * 2 - 1
        out = self.linear(x + (1.5 * sign) * (x - x.detach()))
        return out + 1e-3 * torch.randn_like(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--attack", default="pgd")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    x = torch.rand(a.n, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = _linear()(x).argmax(1)
    steps = "n_iter" if a.attack.startswith("apgd") else "steps"
    members = [{"attack": a.attack, "params": {steps: 20}}]
    rows = []
    for label, model, mode in (
        ("random model, single draws (randomness off)", NoisyGradient(), "off"),
        ("random model, EOT + majority (randomness auto)", NoisyGradient(), "auto"),
        ("deterministic twin", _linear(), "auto"),
    ):
        start = time.perf_counter()
        config = EvaluationConfig(
            eps=a.eps, attacks=members, seed=a.seed, diagnostics_n=32, randomness=mode
        )
        result = evaluate(model, x, y, config, EvaluationContext(quiet=True))
        failing = [k for k, v in result["diagnostics"].items() if not v.get("passed", True)]
        info = result["randomness"]
        rows.append(
            (
                label,
                format_accuracy(result["robust_accuracy"], a.n),
                ", ".join(failing) or "all pass",
                f"K={info['eot_draws']}, M={info['prediction_draws']}",
                f"{time.perf_counter() - start:.1f}",
            )
        )
    print(f"{a.attack}-20 at eps {a.eps:g}, n = {a.n}, seed {a.seed}\n")
    print("| model / evaluation | robust accuracy | failing checks | draws | seconds |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
