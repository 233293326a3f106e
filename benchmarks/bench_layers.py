"""Spiking-layer benchmark: robustsnn vs SpikingJelly vs snnTorch vs T x ANN, interleaved.

Workload (the performance issue's): VGG-style conv64-A-conv128-A-conv256-conv256-A-fc512-fc10
(conv3x3-BN-ReLU blocks, AvgPool, ``vgg_small`` width 64), 3x32x32 input, batch 32, T = 8,
IF neurons with hard reset, triangle surrogate (robustsnn ``pcw-1``, SpikingJelly
``PiecewiseQuadratic(alpha=1)`` = the same triangle, snnTorch ``triangular()``), all models in
eval mode (BN uses running statistics, as when attacking a converted SNN). Every SNN uses direct
input coding with the first conv+BN computed once per image.

Timings: every variant runs in the same process, interleaved round by round (the variant order
rotates every round), single samples per round; reported are medians, min-max and the
per-round ratio to ``ann`` (T calls of the ANN on the batch: the "T x ANN" limit).
``fwd`` runs under ``torch.no_grad()``; ``fwdbwd`` computes the gradient of the summed mean
logits w.r.t. the input and all parameters. Each thread count runs in its own subprocess.
Peak memory: each variant's one forward+backward in a fresh subprocess (peak RSS, and its
increase over the RSS just before the pass).

    python benchmarks/bench_layers.py                         # 1 and 2 threads + memory
    python benchmarks/bench_layers.py --threads 1 --rounds 3 --no-memory
    python benchmarks/bench_layers.py --variants ann robustsnn --modes fwdbwd

Peers are optional (``pip install --no-deps spikingjelly snntorch`` plus ``loguru`` for
SpikingJelly 2.x); a missing one is skipped with a note. SpikingJelly 2.x picks its fastest
multi-step IF implementation on CUDA itself (native CUDA or Triton, ``SJ_IF_CUDA_IMPLEMENTATION``
= auto) for the built-in ``PiecewiseQuadratic`` surrogate used here.

Kernels (issue 23): ``robustsnn`` runs the reference dynamics (``ROBUSTSNN_KERNELS=reference``
for its passes, today's path on every device), ``robustsnn-triton`` the fused Triton kernels
(``snn/triton_kernels.py``; on CPU through Triton's interpreter: correct, not fast). On CUDA
the default variants include ``robustsnn-triton``:

    python benchmarks/bench_layers.py --device cuda --threads 1 --rounds 7
    python benchmarks/bench_layers.py --device cuda --model vgg11 --batch 128 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
MODES = ("fwd", "fwdbwd")
DEFAULT_VARIANTS = ("ann", "ann-merged", "robustsnn", "naive", "spikingjelly", "snntorch")


# ----------------------------------------------------------------------------- models


MODELS = {"vgg_small": {"width": 64, "fc": 512}, "vgg11": {}, "vgg11_standard": {}}


def build_ann(seed: int, model: str = "vgg_small") -> nn.Module:
    """The benchmark ANN (eval mode) with BN statistics that give realistic activations:
    ``vgg_small`` width 64 fc 512 (the issue's workload), the paper's ``vgg11`` or the classic
    five-pool ``vgg11_standard``."""
    from robustsnn.models import build_model

    torch.manual_seed(seed)
    ann = build_model(
        model, num_classes=10, in_channels=3, image_size=32, mean=MEAN, std=STD, **MODELS[model]
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
    return ann.eval()


def calibrate(ann: nn.Module, x: torch.Tensor) -> list[float]:
    """Thresholds: 0.5 x the 99th percentile of each ReLU's input on ``x`` (fast, rough)."""
    values: list[float] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _o: torch.Tensor) -> None:
        flat = inputs[0].detach().reshape(-1)
        flat = flat[:: max(1, flat.numel() // 200_000)]
        values.append(max(0.03, 0.5 * float(torch.quantile(flat, 0.99))))

    handles = [m.register_forward_hook(hook) for m in ann.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        ann(x)
    for h in handles:
        h.remove()
    return values


def ann_blocks(ann: nn.Module) -> list[list[nn.Module]]:
    """The ANN as [static head, segment 1, ..., readout]: the layers between two ReLUs."""
    children = dict(ann.named_children())
    layers: list[nn.Module] = [
        children["normalize"],
        *children["features"].children(),
        *children["classifier"].children(),
    ]
    blocks: list[list[nn.Module]] = [[]]
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            blocks.append([])
        else:
            blocks[-1].append(layer)
    return blocks


def binary_spike_blocks(ann: nn.Module, thetas: list[float]) -> list[nn.Sequential]:
    """Copies of the ANN's blocks whose first weight layer absorbs the previous theta.

    Peers emit binary spikes; robustsnn emits ``theta * spike``. Scaling the next conv/linear
    weight by theta makes all variants compute the same function.
    """
    blocks = [nn.Sequential(*copy.deepcopy(b)) for b in ann_blocks(ann)]
    for theta, block in zip(thetas, blocks[1:], strict=True):
        for m in block:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                with torch.no_grad():
                    m.weight.mul_(theta)
                break
    return blocks


class TimesANN(nn.Module):
    """T calls of the ANN on the same batch (the "T x ANN" limit); returns the last logits.

    Under ``fwdbwd`` the harness runs T separate forward+backward passes (see ``make_step``).
    """

    def __init__(self, ann: nn.Module, steps: int) -> None:
        super().__init__()
        self.ann, self.steps = ann, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for _ in range(self.steps):
            out = self.ann(x)
        return out


class MergedANN(nn.Module):
    """The ANN on the time-merged batch ``[T*B]`` in one call (what a naive merge costs)."""

    def __init__(self, ann: nn.Module, steps: int) -> None:
        super().__init__()
        self.ann, self.steps = ann, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = x.unsqueeze(0).expand(self.steps, *x.shape).reshape(-1, *x.shape[1:])
        return self.ann(merged).view(self.steps, x.shape[0], -1).mean(0)


class ImageChunks(nn.Module):
    """Run ``model`` on chunks of ``images`` images and concatenate (eval mode: exact)."""

    def __init__(self, model: nn.Module, images: int) -> None:
        super().__init__()
        self.model, self.images = model, images

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(part) for part in x.split(self.images)])


class ChannelsLastInput(nn.Module):
    """``model`` on its input converted to channels-last (the ANN in oneDNN's NHWC path)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class NCHWNetwork(nn.Module):
    """A SpikingNetwork with its CPU channels-last layout switched off (the layout before it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from robustsnn.snn import network

        previous = network.CHANNELS_LAST_ON_CPU
        network.CHANNELS_LAST_ON_CPU = False
        try:
            return self.model(x)
        finally:
            network.CHANNELS_LAST_ON_CPU = previous


def build_robustsnn(ann: nn.Module, thetas: list[float], steps: int, naive: bool) -> nn.Module:
    from robustsnn.conversion import ConversionConfig, spiking_body
    from robustsnn.snn import SpikingNetwork, SpikingNeuron

    body = spiking_body(ann, ConversionConfig(reset="hard", v_init=0.0))  # the paper's neuron
    neurons = [m for m in body.modules() if isinstance(m, SpikingNeuron)]
    with torch.no_grad():
        for neuron, theta in zip(neurons, thetas, strict=True):
            neuron.threshold.fill_(theta)
    if naive:
        for neuron in neurons:
            neuron.__class__ = _naive_neuron_class()
    return SpikingNetwork(body, T=steps).eval()


def _naive_neuron_class() -> type:
    """SpikingNeuron whose dynamics are plain per-step autograd ops (``reference_if``)."""
    from robustsnn.snn import SpikingNeuron
    from robustsnn.snn.dynamics import Dynamics, reference_if

    class NaiveNeuron(SpikingNeuron):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ctx = self.context
            steps, batch = ctx.steps, ctx.batch
            static = x.shape[0] == batch and steps != 1
            inputs = x if static else x.view(steps, batch, *x.shape[1:])
            theta = self.threshold.clamp(min=self.threshold_min)
            surrogate = ctx.estimator.surrogate  # type: ignore[attr-defined]
            dynamics = Dynamics(theta, steps, self.leak, self.reset == "soft", static)
            out = reference_if(inputs, dynamics, surrogate)
            return out.reshape(steps * batch, *x.shape[1:])

    return NaiveNeuron


def _baseline_dynamics() -> Any:
    """The copy of dynamics.py named by ``--baseline-dynamics`` (``ROBUSTSNN_BASELINE_DYNAMICS``)."""
    from baseline_dynamics import load_dynamics

    path = os.environ.get("ROBUSTSNN_BASELINE_DYNAMICS")
    if not path:
        raise SystemExit("variant robustsnn-base needs --baseline-dynamics PATH")
    return load_dynamics(path)


class SpikingJellyNet(nn.Module):
    """SpikingJelly multi-step: SeqToANNContainer blocks + IFNode(step_mode='m')."""

    def __init__(self, ann: nn.Module, thetas: list[float], steps: int) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        blocks = binary_spike_blocks(ann, thetas)
        self.steps = steps
        self.head = blocks[0]  # static: computed once per image (SpikingJelly's own examples)
        body: list[nn.Module] = []
        for i, theta in enumerate(thetas):
            body.append(
                neuron.IFNode(
                    v_threshold=theta,
                    v_reset=0.0,
                    surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0),
                    step_mode="m",
                )
            )
            body.append(layer.SeqToANNContainer(*blocks[i + 1]))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        static = self.head(x)
        x_seq = static.unsqueeze(0).repeat(self.steps, *([1] * static.dim()))
        return self.body(x_seq).mean(0)


class SnnTorchNet(nn.Module):
    """snnTorch: Leaky(beta=1, reset 'zero') neurons, the network stepped T times on batch B."""

    def __init__(self, ann: nn.Module, thetas: list[float], steps: int) -> None:
        super().__init__()
        import snntorch
        from snntorch import surrogate

        blocks = binary_spike_blocks(ann, thetas)
        self.steps = steps
        self.head = blocks[0]
        self.blocks = nn.ModuleList(blocks[1:])
        self.lifs = nn.ModuleList(
            snntorch.Leaky(
                beta=1.0,
                threshold=theta,
                spike_grad=surrogate.triangular(),
                reset_mechanism="zero",
            )
            for theta in thetas
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        static = self.head(x)
        mems = [lif.init_leaky() for lif in self.lifs]  # type: ignore[operator]
        total = torch.zeros(())
        for _ in range(self.steps):
            cur = static
            for i, (lif, block) in enumerate(zip(self.lifs, self.blocks, strict=True)):
                spk, mems[i] = lif(cur, mems[i])
                cur = block(spk)
            total = total + cur
        return total / self.steps


KERNEL_MODE_ATTR = "kernel_mode"
"""Attribute of a variant's module naming the robustsnn kernel mode its passes run in."""


def with_kernel_mode(model: nn.Module, mode: str) -> nn.Module:
    """Tag ``model`` so that :func:`make_step` and :func:`consistency` run it in ``mode``."""
    setattr(model, KERNEL_MODE_ATTR, mode)
    return model


def kernel_mode_of(model: nn.Module) -> Any:
    """A context manager running the forward and backward of ``model`` in its kernel mode."""
    from robustsnn.snn import triton_kernels

    return triton_kernels.kernel_override(getattr(model, KERNEL_MODE_ATTR, None))


def build_variant(name: str, ann: nn.Module, thetas: list[float], steps: int) -> nn.Module:
    """One benchmark variant as a module x [B, 3, 32, 32] -> logits."""
    ann = copy.deepcopy(ann)
    if name == "robustsnn":  # today's path on every device (the reference of the kernels)
        return with_kernel_mode(build_robustsnn(ann, thetas, steps, naive=False), "reference")
    if name == "robustsnn-triton":
        return with_kernel_mode(build_robustsnn(ann, thetas, steps, naive=False), "triton")
    if name == "ann":
        return TimesANN(ann, steps)
    if name == "ann-cl":
        return TimesANN(ChannelsLastInput(ann), steps)
    if name == "ann-merged":
        return MergedANN(ann, steps)
    if name == "robustsnn-nchw":
        return NCHWNetwork(build_robustsnn(ann, thetas, steps, naive=False))
    if name.startswith("robustsnn-chunk"):
        images = int(name[len("robustsnn-chunk") :])
        return ImageChunks(build_robustsnn(ann, thetas, steps, naive=False), images)
    if name == "robustsnn-fold":
        from robustsnn.conversion import fold_batchnorm

        fold_batchnorm(ann)
        return build_robustsnn(ann, thetas, steps, naive=False)
    if name == "naive":
        return build_robustsnn(ann, thetas, steps, naive=True)
    if name == "robustsnn-base":
        from baseline_dynamics import use_dynamics

        net = build_robustsnn(ann, thetas, steps, naive=False)
        use_dynamics(net, _baseline_dynamics())
        return net
    if name == "spikingjelly":
        return SpikingJellyNet(ann, thetas, steps).eval()
    if name == "snntorch":
        return SnnTorchNet(ann, thetas, steps).eval()
    raise SystemExit(f"unknown variant {name!r}")


PEER_MODULES = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}


def available(name: str) -> str | None:
    """None if the variant can run, else why not."""
    if name == "robustsnn-triton":
        from robustsnn.snn import triton_kernels

        return None if triton_kernels.available() else "triton not importable"
    module = PEER_MODULES.get(name)
    if module is None:
        return None
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means "skip this peer"
        return f"{module} not importable ({type(exc).__name__}: {exc})"
    return None


# ----------------------------------------------------------------------------- one pass


def make_step(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    """A closure running one forward (no grad) or forward+backward (input + parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]

    if mode == "fwd":

        def fwd() -> None:
            with torch.no_grad(), kernel_mode_of(model):
                model(x)

        return fwd

    def fwdbwd() -> None:
        for p in params:
            p.grad = None
        xx = x.detach().clone().requires_grad_(True)
        if isinstance(model, TimesANN):
            for _ in range(model.steps):
                model.ann(xx).sum().backward()
        else:
            with kernel_mode_of(model):
                model(xx).sum().backward()

    return fwdbwd


def workload(args: argparse.Namespace) -> tuple[nn.Module, list[float], torch.Tensor]:
    ann = build_ann(args.seed, args.model)
    gen = torch.Generator().manual_seed(args.seed + 2)
    x = torch.rand(args.batch, 3, 32, 32, generator=gen)
    thetas = calibrate(ann, x)
    return ann, thetas, x


# ----------------------------------------------------------------------------- workers


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued device work (CUDA), so a timer brackets the whole pass; CPU: no-op."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def on_device(
    name: str, ann: nn.Module, thetas: list[float], args: argparse.Namespace, x: torch.Tensor
) -> tuple[nn.Module | None, str | None]:
    """The variant on ``args.device``; on a non-CPU device a peer that fails there is skipped."""
    model = build_variant(name, ann, thetas, args.T)
    if args.device.type == "cpu":
        return model, None
    try:
        model = model.to(args.device)
        make_step(model, x, "fwdbwd")()  # a trial pass: does the peer run on this device?
        synchronizer(args.device)()
    except Exception as exc:  # noqa: BLE001 - any failure of a peer means "skip it here"
        if name not in PEER_MODULES:
            raise
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
        return None, f"fails on {args.device} ({type(exc).__name__}: {exc})"[:500]
    return model, None


def worker_timing(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ann, thetas, x = workload(args)
    x = x.to(args.device)
    sync = synchronizer(args.device)
    models: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for name in args.variants:
        why = available(name)
        if not why:
            model, why = on_device(name, ann, thetas, args, x)
        if why:
            skipped[name] = why
        else:
            assert model is not None
            models[name] = model
    check = consistency(models, x)
    samples: dict[str, dict[str, list[float]]] = {m: {v: [] for v in models} for m in args.modes}
    cpu: dict[str, dict[str, list[float]]] = {m: {v: [] for v in models} for m in args.modes}
    steps = {(m, v): make_step(models[v], x, m) for m in args.modes for v in models}
    for step in steps.values():  # warm-up (allocator, oneDNN primitive caches)
        for _ in range(args.warmup):
            step()
    sync()
    names = list(models)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for mode in args.modes:
            for name in order:
                sync()
                start, cpu_start = time.perf_counter(), time.process_time()
                steps[(mode, name)]()
                sync()
                samples[mode][name].append(time.perf_counter() - start)
                cpu[mode][name].append(time.process_time() - cpu_start)
    return {
        "samples": samples,
        "cpu_samples": cpu,
        "skipped": skipped,
        "check": check,
        "thresholds": thetas,
    }


def consistency(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, Any]:
    """Max |logit difference| of each SNN to robustsnn, and rate of identical argmax."""
    out: dict[str, Any] = {}
    if "robustsnn" not in models:
        return out
    with torch.no_grad():
        with kernel_mode_of(models["robustsnn"]):
            ref = models["robustsnn"](x)
        for name, model in models.items():
            if name in ("robustsnn", "ann", "ann-merged"):
                continue
            with kernel_mode_of(model):
                logits = model(x)
            out[name] = {
                "max_abs_logit_diff": float((logits - ref).abs().max()),
                "same_argmax": float((logits.argmax(1) == ref.argmax(1)).float().mean()),
            }
    return out


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker_memory(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    ann, thetas, x = workload(args)
    name = args.variants[0]
    if args.device.type == "cuda":
        return cuda_memory(name, ann, thetas, x.to(args.device), args)
    model = build_variant(name, ann, thetas, args.T)
    del ann
    step = make_step(model, x, "fwdbwd")
    before = current_rss_mib()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_rss_mib": peak, "rss_before_mib": before, "increase_mib": peak - before}


def cuda_memory(
    name: str, ann: nn.Module, thetas: list[float], x: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    """Peak ``torch.cuda.max_memory_allocated`` of one forward+backward (after a trial pass)."""
    model, why = on_device(name, ann, thetas, args, x)
    if model is None:
        return {"error": why}
    step = make_step(model, x, "fwdbwd")
    for p in model.parameters():
        p.grad = None
    torch.cuda.synchronize(args.device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(args.device) / 2**20
    torch.cuda.reset_peak_memory_stats(args.device)
    step()
    torch.cuda.synchronize(args.device)
    peak = torch.cuda.max_memory_allocated(args.device) / 2**20
    return {
        "metric": "torch.cuda.max_memory_allocated",
        "peak_cuda_mib": peak,
        "cuda_before_mib": before,
        "increase_mib": peak - before,
    }


# glibc malloc: never hand big blocks to mmap, never trim the heap. Freed activations are then
# reused without page faults (a fresh mmap of a 64 MiB tensor costs ~4 ns per float here).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def run_worker(argv: list[str], malloc_tuned: bool = False) -> dict[str, Any]:
    env = {**os.environ, **(MALLOC_ENV if malloc_tuned else {})}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker {argv} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def summarize(
    samples: dict[str, dict[str, list[float]]], cpu: dict[str, dict[str, list[float]]]
) -> dict[str, Any]:
    """Per mode and variant: wall medians/min/max, per-round ratios to ``ann`` (wall and CPU)."""
    summary: dict[str, Any] = {}
    for mode, by_variant in samples.items():
        summary[mode] = {}
        base, base_cpu = by_variant.get("ann"), cpu[mode].get("ann")
        for name, values in by_variant.items():
            cpu_values = cpu[mode][name]
            entry: dict[str, Any] = {
                "median_s": statistics.median(values),
                "min_s": min(values),
                "max_s": max(values),
                "samples_s": values,
                "cpu_median_s": statistics.median(cpu_values),
                "cpu_samples_s": cpu_values,
            }
            if base and base_cpu:
                ratios = [v / b for v, b in zip(values, base, strict=True)]
                entry["ratio_to_ann"] = statistics.median(ratios)
                entry["ratio_min"] = min(ratios)
                entry["ratio_max"] = max(ratios)
                entry["ratio_of_medians"] = statistics.median(values) / statistics.median(base)
                cpu_ratios = [v / b for v, b in zip(cpu_values, base_cpu, strict=True)]
                entry["cpu_ratio_to_ann"] = statistics.median(cpu_ratios)
                entry["cpu_ratio_min"] = min(cpu_ratios)
                entry["cpu_ratio_max"] = max(cpu_ratios)
            peer = by_variant.get("spikingjelly")
            if peer and name != "spikingjelly":  # per-round speed-up over SpikingJelly
                speedups = [p / v for p, v in zip(peer, values, strict=True)]
                entry["speedup_vs_spikingjelly"] = statistics.median(speedups)
                entry["speedup_vs_spikingjelly_min"] = min(speedups)
                entry["speedup_vs_spikingjelly_max"] = max(speedups)
            summary[mode][name] = entry
    return summary


def print_table(result: dict[str, Any]) -> None:
    for threads, block in result["timing"].items():
        print(
            f"\n== {threads} thread(s), batch {result['config']['batch']}, T={result['config']['T']}"
        )
        print(
            f"{'variant':<18}{'mode':<8}{'median ms':>10}{'min-max ms':>14}{'x ANN':>7}"
            f"{'(min-max)':>12}{'cpu ms':>8}{'cpu x ANN':>10}{'(min-max)':>12}"
        )
        nan = float("nan")
        for mode, by_variant in block["summary"].items():
            for name, e in by_variant.items():
                rng = f"{1e3 * e['min_s']:.0f}-{1e3 * e['max_s']:.0f}"
                rr = f"{e.get('ratio_min', nan):.2f}-{e.get('ratio_max', nan):.2f}"
                crr = f"{e.get('cpu_ratio_min', nan):.2f}-{e.get('cpu_ratio_max', nan):.2f}"
                print(
                    f"{name:<18}{mode:<8}{1e3 * e['median_s']:>10.0f}{rng:>14}"
                    f"{e.get('ratio_to_ann', nan):>7.2f}{rr:>12}{1e3 * e['cpu_median_s']:>8.0f}"
                    f"{e.get('cpu_ratio_to_ann', nan):>10.2f}{crr:>12}"
                )
        for mode, by_variant in block["summary"].items():
            for name, e in by_variant.items():
                if "speedup_vs_spikingjelly" in e:
                    print(
                        f"{name:<18}{mode:<8}{e['speedup_vs_spikingjelly']:.2f}x faster than "
                        f"spikingjelly per round ({e['speedup_vs_spikingjelly_min']:.2f}-"
                        f"{e['speedup_vs_spikingjelly_max']:.2f})"
                    )
        for name, why in block["skipped"].items():
            print(f"{name:<18}skipped: {why}")
        for name, c in block["check"].items():
            print(
                f"check {name}: max |logit - robustsnn| = {c['max_abs_logit_diff']:.2e}, "
                f"same argmax {c['same_argmax']:.2f}"
            )
    if result.get("memory"):
        cuda = result["config"].get("device", "cpu").startswith("cuda")
        peak_key, before_key = (
            ("peak_cuda_mib", "cuda_before_mib") if cuda else ("peak_rss_mib", "rss_before_mib")
        )
        what = "torch.cuda.max_memory_allocated" if cuda else "peak RSS"
        print(f"\n== {what} of one forward+backward (fresh process, 1 thread)")
        sj = result["memory"].get("spikingjelly", {}).get(peak_key)
        for name, m in result["memory"].items():
            if "error" in m:
                print(f"{name:<18}{m['error']}")
                continue
            rel = f"  {m[peak_key] / sj:.2f} x spikingjelly" if sj else ""
            print(
                f"{name:<18}peak {m[peak_key]:7.0f} MiB, +{m['increase_mib']:6.0f} MiB over "
                f"{m[before_key]:.0f} MiB before the pass{rel}"
            )


def machine(device: str = "cpu") -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    versions: dict[str, str | None] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for mod in ("spikingjelly", "snntorch"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001
            versions[mod] = None
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "versions": versions,
        "load": os.getloadavg(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["versions"]["cuda"] = torch.version.cuda
    return info


def write_result(result: dict[str, Any], prefix: str, out: Path | None) -> Path:
    """Write a benchmark's JSON atomically to ``out`` or ``results/<prefix>-<time>.json``."""
    path = out or RESULTS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    print(f"\nwrote {path}")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help=f"default: {' '.join(DEFAULT_VARIANTS)} (on CUDA also robustsnn-triton)",
    )
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--model", choices=sorted(MODELS), default="vgg_small")
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--no-timing", action="store_true", help="only the peak-RSS subprocesses")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/<time>.json)")
    p.add_argument("--label", default="", help="free text stored in the JSON")
    p.add_argument(
        "--baseline-dynamics",
        help="a copy of an older dynamics.py: enables variant robustsnn-base (before/after)",
    )
    p.add_argument(
        "--malloc-tuned",
        action="store_true",
        help="run every worker with glibc MALLOC_MMAP_MAX_=0 and no heap trimming (all variants)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device, e.g. cuda: timings synchronize the device around every pass, memory "
        "is torch.cuda.max_memory_allocated, peers that fail there are skipped with a note",
    )
    p.add_argument("--worker", choices=("timing", "memory"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variants is None:
        args.variants = list(DEFAULT_VARIANTS)
        if args.device.startswith("cuda"):
            args.variants.insert(args.variants.index("robustsnn") + 1, "robustsnn-triton")
    if "ann" not in args.variants and not args.worker:
        args.variants.insert(0, "ann")
    if args.baseline_dynamics:
        os.environ["ROBUSTSNN_BASELINE_DYNAMICS"] = str(Path(args.baseline_dynamics).resolve())

    if args.worker:
        args.threads = args.threads[0]
        args.device = torch.device(args.device)
        fn = worker_timing if args.worker == "timing" else worker_memory
        print(json.dumps(fn(args)))
        return

    common = ["--batch", str(args.batch), "--T", str(args.T), "--seed", str(args.seed)]
    common += ["--model", args.model]
    common += ["--device", args.device]
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "label": args.label,
        "machine": machine(args.device),
        "config": {
            "device": args.device,
            "model": args.model,
            "batch": args.batch,
            "T": args.T,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "variants": args.variants,
            "modes": args.modes,
            "malloc_env": MALLOC_ENV if args.malloc_tuned else {},
        },
        "timing": {},
        "memory": {},
    }
    for n in [] if args.no_timing else args.threads:
        raw = run_worker(
            [
                "--worker",
                "timing",
                "--threads",
                str(n),
                "--rounds",
                str(args.rounds),
                "--warmup",
                str(args.warmup),
                "--modes",
                *args.modes,
                "--variants",
                *args.variants,
                *common,
            ],
            args.malloc_tuned,
        )
        result["timing"][str(n)] = {
            "summary": summarize(raw["samples"], raw["cpu_samples"]),
            "skipped": raw["skipped"],
            "check": raw["check"],
            "thresholds": raw["thresholds"],
        }
    if not args.no_memory:
        for name in args.variants:
            why = available(name)
            if why:
                result["memory"][name] = {"error": why}
                continue
            argv = ["--worker", "memory", "--threads", "1", "--variants", name, *common]
            result["memory"][name] = run_worker(argv, args.malloc_tuned)
    result["machine"]["load_after"] = os.getloadavg()
    print_table(result)
    write_result(result, "bench_layers", args.out)


if __name__ == "__main__":
    main()
