"""An ensemble row keeps each member's seconds (where an evaluation's time goes)."""

import torch
from torch import nn

from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate


def test_ensemble_row_says_where_the_time_goes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x = torch.rand(8, 1, 4, 4)
    y = model(x).argmax(1)
    result = evaluate(
        model,
        x,
        y,
        EvaluationConfig(eps=0.05, ensemble="pgd-fast", diagnostics="none"),
        EvaluationContext(quiet=True),
    )
    row = result["ensembles"]["pgd-fast"]
    assert set(row["member_seconds"]) == set(row["member_names"])
    assert all(s >= 0.0 for s in row["member_seconds"].values())
    assert abs(sum(row["member_seconds"].values()) - row["seconds"]) < 1e-9
