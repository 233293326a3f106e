"""Class-style snnTorch and SpikingJelly models with their Poisson encoders (``spikegen.rate``,
``PoissonEncoder``), wrapped and evaluated with expectation over randomness (issue 32).

Skipped only when snntorch / spikingjelly are not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

from robustsnn.evaluation import EvaluationConfig, EvaluationContext, evaluate
from robustsnn.interop.stepwise import wrap

needs_snntorch = pytest.mark.skipif(
    importlib.util.find_spec("snntorch") is None, reason="snntorch not installed"
)
needs_sj = pytest.mark.skipif(
    importlib.util.find_spec("spikingjelly") is None, reason="spikingjelly not installed"
)
T = 4


class PoissonNet(nn.Module):
    """snnTorch tutorial style with rate-coded input spikes drawn in the forward."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        self.fc1 = nn.Linear(64, 20)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(20, 3)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from snntorch import spikegen

        spikes = spikegen.rate(x.flatten(1), num_steps=T)  # torch.bernoulli: global generator
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out = []
        for t in range(T):
            s1, mem1 = self.lif1(self.fc1(spikes[t]) * 3, mem1)
            s2, mem2 = self.lif2(self.fc2(s1) * 3, mem2)
            out.append(mem2)
        return torch.stack(out)


def _records(result: dict) -> str:
    return json.dumps(result["records"])


@needs_snntorch
def test_wrapped_poisson_model_is_verified_and_evaluated_with_eot() -> None:
    torch.manual_seed(0)
    model = PoissonNet()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net = wrap(model, T, example=x)
    assert net.adapter.verification.passed  # the source and the wrapper draw the same spikes
    with torch.no_grad():
        y = torch.stack([net(x) for _ in range(9)]).mean(0).argmax(1)
    runs = []
    for state in (1, 2):
        torch.manual_seed(state)
        runs.append(
            evaluate(
                net,
                x,
                y,
                EvaluationConfig(
                    eps=0.1,
                    attacks=[{"attack": "fgsm", "estimator": "bptt-pcw-1"}],
                    diagnostics="none",
                    seed=3,
                    randomness={"eot_draws": 4, "prediction_draws": 7},
                ),
                EvaluationContext(quiet=True),
            )  # fmt: skip
        )
    info = runs[0]["randomness"]
    assert info["detected"] and info["handled"]
    assert (info["eot_draws"], info["prediction_draws"]) == (4, 7)
    assert all(r["draws"] == 7 for r in runs[0]["records"])
    assert _records(runs[0]) == _records(runs[1])  # one seed, the same records


class SJPoisson(nn.Module):
    """SpikingJelly single-step style with a PoissonEncoder module called every step."""

    def __init__(self) -> None:
        super().__init__()
        from spikingjelly.activation_based import encoding, neuron, surrogate

        self.encoder = encoding.PoissonEncoder()
        self.fc1 = nn.Linear(64, 20)
        self.sn1 = neuron.IFNode(surrogate_function=surrogate.ATan())
        self.fc2 = nn.Linear(20, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        out = torch.zeros(x.shape[0], 3)
        for _ in range(T):
            out = out + self.fc2(self.sn1(self.fc1(self.encoder(x).flatten(1)) * 3))
        functional.reset_net(self)
        return out / T


@needs_sj
def test_wrapped_spikingjelly_poisson_encoder_is_handled() -> None:
    torch.manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net = wrap(SJPoisson(), T, example=x)
    assert net.adapter.verification.passed
    result = evaluate(
        net, x, torch.zeros(12, dtype=torch.long),
        EvaluationConfig(
            eps=0.1, attacks=[{"attack": "fgsm", "estimator": "bptt-pcw-1"}],
            diagnostics="none", randomness={"eot_draws": 2, "prediction_draws": 5},
        ),
        EvaluationContext(quiet=True),
    )  # fmt: skip
    assert result["randomness"]["detected"] and result["randomness"]["handled"]
