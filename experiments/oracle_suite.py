"""Build the model suite of the oracle-gap benchmark (issue 30, "Build" item 1).

``OMP_NUM_THREADS=1 python experiments/oracle_suite.py --out /work/exp/oracle/models [--only A,B]``

Thirteen models, each in ``<out>/<name>/``: robustsnn checkpoints (``snn.safetensors`` + ``.json``,
loaded as-is by ``robustsnn evaluate``) built with the robustsnn CLI from the shared CIFAR
checkpoints and small MNIST-5k trainings, and two class-style models (SpikingJelly IF,
snnTorch Leaky; experiments/own_models.py) described by a ``model.json`` that says how
``robustsnn evaluate module:factory --weights ...`` loads them. ``<out>/suite.json`` lists every
model built: ``{name, path, dataset, eps, description, command, ...}`` with its build time and
the clean accuracy its training measured.

Resumable: a model whose folder holds its finished checkpoint (or ``model.json``) is skipped; an
interrupted CLI stage resumes when the same command runs again. Models are built cheapest first,
recipe D (~10 CPU-minutes) last; ``--only`` builds the named models (and what they derive from).
Run it from anywhere: commands run in the repository root (the shared CIFAR checkpoints name
their dataset relative to it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared/checkpoints/cifar10-strong-ft")
CIFAR_DATA = "npz:/work/shared/data/cifar10-subset.npz"
MNIST_EPS = 0.1
CIFAR_EPS = 8 / 255
MNIST_EVAL_N = 200  # clean + PGD-20 metadata of each training: seconds on MNIST
CIFAR_EVAL_N = 100
# issue 21's finetuning adversary (robustsnn.config.ROBUST_ADVERSARY, the quickstart's default)
ADVERSARY = "pgd[steps=3]/bptt-rel-pcw-1+ann-proxy+bptr+assg-atan-0.425-dr"
QUICKSTART_MODEL = ["--dataset", "mnist5k", "--model", "cnn_small", "--width", "8", "--fc", "64"]
X100_LAYER = ("body.classifier.1", "body.classifier.2", "body.classifier.3")  # in, neuron, out
X100_FACTOR = 100.0
X100_CHECK_N = 64


@dataclass
class Model:
    name: str
    dataset: str
    eps: float
    description: str
    build: Callable[[Model, Path], dict[str, Any]]  # returns the build record's extra entries
    artifact: str = "snn.safetensors"  # the finished file, relative to <out>/<name>/
    deps: tuple[str, ...] = ()
    commands: list[list[str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------ helpers
def robustsnn(*args: str) -> list[str]:
    return ["robustsnn", *args, "--quiet"]


def run(cmd: list[str]) -> str:
    """Run a command in the repository root (``robustsnn`` as ``python -m robustsnn``); echo and
    return its stdout; a failure raises with its exit status."""
    argv = {"robustsnn": [sys.executable, "-m", "robustsnn"], "python": [sys.executable]}.get(
        cmd[0], cmd[:1]
    ) + cmd[1:]
    print("$", shlex.join(cmd), flush=True)
    proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.stdout:
        print(proc.stdout.rstrip(), flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}: {shlex.join(cmd)}")
    return proc.stdout


def run_all(model: Model, commands: list[list[str]]) -> str:
    model.commands.extend(commands)
    return "".join(run(cmd) for cmd in commands)


def meta_of(ckpt: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(ckpt.with_suffix(".json").read_text())
    return meta


def accuracies(ckpt: Path) -> dict[str, Any]:
    """Clean (and PGD-20) accuracy the training / conversion stored in the metadata."""
    meta = meta_of(ckpt)
    summary = meta.get("conversion_summary") or {}
    return {
        "clean_accuracy": meta.get("clean_accuracy"),
        "pgd20_accuracy": meta.get("pgd20_accuracy"),
        "eval_n": meta.get("eval_n", summary.get("eval_n")),
        "T": meta.get("T"),
        "thresholds": meta.get("thresholds"),
    }


def robustsnn_src() -> str:
    """The robustsnn package the CLI runs (PYTHONPATH may point at a snapshot of a commit)."""
    import robustsnn as package

    return str(Path(package.__file__ or "").parent)


def folder(out: Path, name: str) -> Path:
    return out / name


# ------------------------------------------------------------------------------------ builders
def build_mnist_converted(model: Model, out: Path) -> dict[str, Any]:
    """configs/quickstart.yaml's ANN (PGD-AT at 0.1, 3 epochs) and its conversion."""
    d = folder(out, model.name)
    run_all(model, [
        robustsnn("train-ann", *QUICKSTART_MODEL, "--objective", "pgd_at", "--eps", "0.1",
                  "--epochs", "3", "--batch-size", "64", "--lr", "0.1", "--seed", "0",
                  "--eval-n", str(MNIST_EVAL_N), "--out", str(d)),
        robustsnn("convert", str(d / "ann.safetensors"), "--T", "8", "--reset", "soft",
                  "--v-init", "0.5", "--threshold", "mse", "--bn", "keep", "--calibration",
                  "none", "--seed", "0", "--eval-n", str(MNIST_EVAL_N), "--out", str(d)),
    ])  # fmt: skip
    ann = meta_of(d / "ann.safetensors")
    return {"ann": {"path": str(d / "ann.safetensors"), "clean_accuracy": ann.get("clean_accuracy"),
                    "pgd20_accuracy": ann.get("pgd20_accuracy"), "eval_n": ann.get("eval_n")}}  # fmt: skip


def build_mnist_finetuned(model: Model, out: Path) -> dict[str, Any]:
    """The quickstart's finetuning (issue 21's default recipe, 2 epochs at 0.1)."""
    src = folder(out, "mnist-converted")
    run_all(model, [
        robustsnn("finetune", str(src / "snn.safetensors"), "--epochs", "2", "--beta", "6",
                  "--eps", "0.1", "--alpha", "1/255", "--lr", "0.005", "--batch-size", "64",
                  "--estimator", "bptt-rel-pcw-1", "--adversary", ADVERSARY, "--objective",
                  "distill", "--teacher", str(src / "ann.safetensors"), "--seed", "0",
                  "--eval-n", str(MNIST_EVAL_N), "--out", str(folder(out, model.name))),
    ])  # fmt: skip
    return {}


def build_cifar_paper(model: Model, out: Path) -> dict[str, Any]:
    d = folder(out, model.name)
    d.mkdir(parents=True, exist_ok=True)
    model.commands.append(["cp", str(SHARED / "snn.safetensors"), str(SHARED / "snn.json"), str(d)])
    print("$", shlex.join(model.commands[-1]), flush=True)
    shutil.copyfile(SHARED / "snn.json", d / "snn.json")
    shutil.copyfile(SHARED / "snn.safetensors", d / "snn.safetensors")  # last: the finished mark
    return {"copied_from": str(SHARED / "snn.safetensors")}


def cifar_converter(T: int) -> Callable[[Model, Path], dict[str, Any]]:
    def build(model: Model, out: Path) -> dict[str, Any]:
        run_all(model, [
            robustsnn("convert", str(SHARED / "ann.safetensors"), "--T", str(T), "--reset", "soft",
                      "--v-init", "0.5", "--threshold", "mse", "--bn", "keep", "--seed", "0",
                      "--eval-n", "200", "--out", str(folder(out, model.name))),
        ])  # fmt: skip
        return {}

    return build


def build_cifar_recipe_d(model: Model, out: Path) -> dict[str, Any]:
    """docs/RESULTS.md section 11, recipe D (configs/cifar10-cpu.yaml's finetune section)."""
    src = folder(out, "cifar-converted-T8") / "snn.safetensors"
    run_all(model, [
        robustsnn("finetune", str(src), "--epochs", "1", "--lr", "0.005", "--eps", "8/255",
                  "--alpha", "1/255", "--beta", "6", "--batch-size", "64", "--estimator",
                  "bptt-rel-pcw-1", "--adversary", ADVERSARY, "--objective", "distill",
                  "--objective-option", "clean_weight=3", "--seed", "0",
                  "--eval-n", str(CIFAR_EVAL_N), "--out", str(folder(out, model.name))),
    ])  # fmt: skip
    return {}


def bptt_trainer(*options: str) -> Callable[[Model, Path], dict[str, Any]]:
    def build(model: Model, out: Path) -> dict[str, Any]:
        run_all(model, [
            robustsnn("train-snn", *QUICKSTART_MODEL, "--T", "8", *options, "--eps", "0.1",
                      "--epochs", "2", "--seed", "0", "--eval-n", str(MNIST_EVAL_N),
                      "--out", str(folder(out, model.name))),
        ])  # fmt: skip
        return {}

    return build


OWN = {  # suite name -> (factory in experiments/own_models.py, readout of its output)
    "mnist-sj-if": ("sj_csnn", "mean"),
    "mnist-snntorch-leaky": ("snntorch_csnn", "sum"),
}


def build_own(model: Model, out: Path) -> dict[str, Any]:
    """experiments/own_models.py trains both class-style CSNNs (its own code, 3 epochs each);
    each weights file is copied into its model's folder with a ``model.json``."""
    sys.path.insert(0, str(REPO))
    import experiments.own_models as own

    factory, readout = OWN[model.name]
    trained = out / "_own-models"
    weights = trained / f"{factory}.safetensors"
    log = trained / "train.log"
    if not weights.exists() or not log.exists():
        text = run_all(model, [["python", "experiments/own_models.py", str(trained)]])
        log.write_text(text)
    else:
        model.commands.append(["python", "experiments/own_models.py", str(trained)])
        print(f"(reusing {weights}, trained with the other class-style model)", flush=True)
    found = re.search(rf"^{factory}: (\d+) epochs in (\d+) s, clean test accuracy ([0-9.]+) "
                      r"\(n=(\d+)\)", log.read_text(), re.MULTILINE)  # fmt: skip
    d = folder(out, model.name)
    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, d / "weights.safetensors")
    spec = f"experiments.own_models:{factory}"
    evaluate = ["robustsnn", "evaluate", spec, "--weights", str(d / "weights.safetensors"),
                "--T", str(own.T), "--dataset", "mnist5k", "--readout", readout]  # fmt: skip
    # loads as robustsnn evaluate loads it (factory, weights, the adapter's checks)
    from robustsnn.data import load_dataset, to_float
    from robustsnn.interop.foreign import load_foreign

    x = to_float(load_dataset("mnist5k").x_test[:32])
    load_foreign(spec, weights=d / "weights.safetensors", T=own.T, example=x, readout=readout)
    description = {
        "factory": spec,
        "factory_file": f"experiments/own_models.py:{factory}",
        "weights": str(d / "weights.safetensors"),
        "T": own.T,
        "dataset": "mnist5k",
        "time": "loop",
        "readout": readout,
        "evaluate": shlex.join(evaluate),
    }
    (d / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    return {
        "clean_accuracy": float(found.group(3)) if found else None,
        "eval_n": int(found.group(4)) if found else None,
        "T": own.T,
        "epochs": int(found.group(1)) if found else None,
        "train_s": int(found.group(2)) if found else None,  # as experiments/own_models.py said
        "note": "both class-style models are trained by one run of experiments/own_models.py "
        "(its time counts toward the first one built); train_s is this model's training loop",
    }


def build_x100(model: Model, out: Path) -> dict[str, Any]:
    """mnist-converted with the hidden FC layer's threshold, incoming weights and bias x100 and
    the readout's weights /100 (the layer emits theta * spikes): the same function, checked."""
    import torch

    from robustsnn.data import load_dataset, to_float
    from robustsnn.io.models import load_model, save_snn
    from robustsnn.snn.neuron import SpikingNeuron

    src = folder(out, "mnist-converted") / "snn.safetensors"
    snn, meta = load_model(src)
    rescaled, _ = load_model(src)
    modules = dict(rescaled.named_modules())
    incoming, neuron, outgoing = (modules[n] for n in X100_LAYER)
    assert isinstance(incoming, torch.nn.Linear) and isinstance(outgoing, torch.nn.Linear)
    assert isinstance(neuron, SpikingNeuron) and neuron.emit == "scaled"
    with torch.no_grad():
        incoming.weight.mul_(X100_FACTOR)
        assert incoming.bias is not None
        incoming.bias.mul_(X100_FACTOR)
        neuron.threshold.mul_(X100_FACTOR)
        outgoing.weight.div_(X100_FACTOR)
        x = to_float(load_dataset("mnist5k").x_test[:X100_CHECK_N])
        before, after = snn(x), rescaled(x)
    same = bool(torch.equal(before.argmax(1), after.argmax(1)))
    assert same, "the x100 copy changed a prediction on the first test images"
    generated = {"kind", "arch", "conversion", "transforms", "format_version", *snn.describe()}
    extra = {k: v for k, v in meta.items() if k not in generated}
    d = folder(out, model.name)
    extra["stage"] = "converted-x100"
    extra["rescaled"] = {"from": str(src), "layers": list(X100_LAYER), "factor": X100_FACTOR,
                         "incoming_and_threshold": "x factor", "outgoing_weights": "/ factor"}  # fmt: skip
    save_snn(d / "snn.safetensors", rescaled, **extra)
    model.commands.append(
        ["python", "experiments/oracle_suite.py", "--out", str(out), "--only", model.name]
    )
    return {
        "x100_check": {
            "n": X100_CHECK_N,
            "predictions_identical": same,
            "max_abs_logit_difference": float((before - after).abs().max()),
        },  # fmt: skip
        "thresholds_before": snn.describe()["thresholds"],
    }


SUITE = [  # cheapest first, recipe D last
    Model("mnist-sj-if", "mnist5k", MNIST_EPS,
          "SpikingJelly IF CSNN (class style, T 4, ATan), experiments/own_models.py:sj_csnn, "
          "3 epochs on MNIST-5k", build_own, artifact="model.json"),
    Model("mnist-snntorch-leaky", "mnist5k", MNIST_EPS,
          "snnTorch Leaky (beta 0.9) CSNN (class style, T 4), experiments/own_models.py:"
          "snntorch_csnn, 3 epochs on MNIST-5k", build_own, artifact="model.json"),
    Model("mnist-converted", "mnist5k", MNIST_EPS,
          "quickstart: cnn_small w8 fc64 PGD-AT ANN (eps 0.1, 3 epochs) converted at T 8 (soft "
          "reset, v_init 0.5, mse thresholds)", build_mnist_converted),
    Model("mnist-x100", "mnist5k", MNIST_EPS,
          "mnist-converted with the hidden FC layer's threshold, weights and bias x100 and the "
          "readout weights /100 (same predictions)", build_x100, deps=("mnist-converted",)),
    Model("cifar-paper", CIFAR_DATA, CIFAR_EPS,
          "the shared CIFAR paper SNN (cifar10-strong-ft/snn.safetensors, vgg_small w32 fc256)",
          build_cifar_paper),
    Model("cifar-converted-T8", CIFAR_DATA, CIFAR_EPS,
          "shared PGD-AT CIFAR ANN (2/255) converted at T 8 (soft, v_init 0.5, mse, BN kept)",
          cifar_converter(8)),
    Model("cifar-converted-T16", CIFAR_DATA, CIFAR_EPS,
          "shared PGD-AT CIFAR ANN (2/255) converted at T 16 (soft, v_init 0.5, mse, BN kept)",
          cifar_converter(16)),
    Model("mnist-bptt-natural", "mnist5k", MNIST_EPS,
          "BPTT-trained cnn_small w8 fc64 SNN, T 8, IF hard reset, natural, 2 epochs",
          bptt_trainer("--objective", "natural")),
    Model("mnist-lif-soft", "mnist5k", MNIST_EPS,
          "BPTT-trained cnn_small w8 fc64 SNN, T 8, LIF leak 0.9 soft reset, natural, 2 epochs",
          bptt_trainer("--objective", "natural", "--leak", "0.9", "--reset", "soft")),
    Model("mnist-bntt", "mnist5k", MNIST_EPS,
          "BPTT-trained cnn_small w8 fc64 SNN with BNTT, T 8, IF hard reset, natural, 2 epochs",
          bptt_trainer("--objective", "natural", "--bntt")),
    Model("mnist-bptt-rfgsm", "mnist5k", MNIST_EPS,
          "BPTT-trained cnn_small w8 fc64 SNN, T 8, IF hard reset, RFGSM-AT at 0.1, 2 epochs",
          bptt_trainer("--objective", "rfgsm_at")),
    Model("mnist-finetuned", "mnist5k", MNIST_EPS,
          "quickstart: mnist-converted finetuned 2 epochs (distill, PGD-3 over 4 drawn "
          "estimators, bptt-rel-pcw-1 loss)", build_mnist_finetuned, deps=("mnist-converted",)),
    Model("cifar-recipe-D", CIFAR_DATA, CIFAR_EPS,
          "cifar-converted-T8 finetuned with recipe D (distill, clean_weight 3, 1 epoch; "
          "RESULTS.md 11)", build_cifar_recipe_d, deps=("cifar-converted-T8",)),
]  # fmt: skip
BY_NAME = {m.name: m for m in SUITE}


# ------------------------------------------------------------------------------------ driver
def done(model: Model, out: Path) -> bool:
    path = folder(out, model.name) / model.artifact
    return path.exists() and (
        model.artifact.endswith(".json") or path.with_suffix(".json").exists()
    )


def build(model: Model, out: Path) -> None:
    """Build ``model`` (its dependencies first) unless finished; write ``build.json``."""
    for dep in model.deps:
        if not done(BY_NAME[dep], out):
            build(BY_NAME[dep], out)
    if done(model, out):
        print(f"[{model.name}] finished before: skipped", flush=True)
        return
    print(f"[{model.name}] building", flush=True)
    wall, cpu = time.perf_counter(), os.times()
    extra = model.build(model, out)
    now = os.times()
    cpu_s = (now.user + now.system + now.children_user + now.children_system) - (
        cpu.user + cpu.system + cpu.children_user + cpu.children_system
    )
    path = folder(out, model.name) / model.artifact
    record = {
        "name": model.name,
        "path": str(path),
        "dataset": model.dataset,
        "eps": model.eps,
        "description": model.description,
        "command": " && ".join(shlex.join(c) for c in model.commands),
        "format": "factory" if model.artifact == "model.json" else "robustsnn",
        **({} if model.artifact == "model.json" else accuracies(path)),
        **extra,
        "robustsnn_src": robustsnn_src(),
        "build_wall_s": round(time.perf_counter() - wall, 1),
        "build_cpu_s": round(cpu_s, 1),
    }
    (folder(out, model.name) / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"[{model.name}] done in {record['build_wall_s']} s wall, {record['build_cpu_s']} s "
          f"CPU; clean accuracy {record.get('clean_accuracy')} (n={record.get('eval_n')})",
          flush=True)  # fmt: skip


def write_suite(out: Path) -> list[dict[str, Any]]:
    """``<out>/suite.json``: the build record of every finished model, in suite order."""
    entries = []
    for model in SUITE:
        record = folder(out, model.name) / "build.json"
        if done(model, out) and record.exists():
            entries.append(json.loads(record.read_text()))
    (out / "suite.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="suite folder, e.g. /work/exp/oracle/models")
    parser.add_argument("--only", default=None, help="comma-separated model names")
    a = parser.parse_args(argv)
    out = Path(a.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    names = [m.name for m in SUITE] if a.only is None else a.only.split(",")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; the suite: {', '.join(BY_NAME)}")
    failed = []
    for name in names:
        try:
            build(BY_NAME[name], out)
        except Exception as exc:  # one failing model does not stop the others
            failed.append(name)
            print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
        write_suite(out)
    entries = write_suite(out)
    print(
        f"{len(entries)} models in {out / 'suite.json'}" + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
