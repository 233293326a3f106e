"""What the attack did, from the saved adversarial examples: a figure and a report section.

For a few broken samples per evaluated model (the examples ``evaluate --save-adversarial``
kept, :mod:`robustsnn.evaluation.adversarial`): the clean image, the perturbation (scaled),
the adversarial image, both predictions with their confidence (softmax of the recorded logits),
and, for an SNN, the first spiking layer's spike raster for the clean and the adversarial input
(the paper's Figure 1). The report section adds, per evaluation, how many breaks were saved,
the file's size per break, and the outcome of ``robustsnn recheck`` when it has run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import robustsnn.analysis.figures as fig
from robustsnn.analysis.document import Block, Cell, Heading, Image, Paragraph, Table
from robustsnn.analysis.statistics import raster_data
from robustsnn.evaluation.adversarial import ADVERSARIAL_FILE, read
from robustsnn.evaluation.recheck import RECHECK_FILE, _model_path
from robustsnn.io.models import load_model
from robustsnn.snn import SpikingNetwork

FIGURE_PREFIX = "saved_breaks-"


def adversarial_folders(run_dir: Path) -> list[Path]:
    """Evaluation folders with saved examples in a run (itself, ``eval/*``, or deeper)."""
    if (run_dir / ADVERSARIAL_FILE).is_file():
        return [run_dir]
    return sorted(p.parent for p in run_dir.rglob(ADVERSARIAL_FILE) if "escalation-" not in str(p))


def _label(classes: Sequence[str] | None, k: int) -> str:
    return str(classes[k]) if classes and 0 <= k < len(classes) else f"class {k}"


def _active_raster(raster: dict[str, Any], n_neurons: int = 120, seed: int = 0) -> dict[str, Any]:
    """The raster cut to ``n_neurons`` random neurons among those that fire for either input
    (most neurons of a large layer are silent for both: a random subset would show little)."""
    clean = np.asarray(raster["clean_spikes"], dtype=bool)
    adv = np.asarray(raster["adversarial_spikes"], dtype=bool)
    active = np.flatnonzero(clean.any(0) | adv.any(0))
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(active, min(n_neurons, active.size), replace=False))
    return {
        **raster,
        "clean_spikes": clean[:, keep].astype(int).tolist(),
        "adversarial_spikes": adv[:, keep].astype(int).tolist(),
        "active_neurons": int(active.size),
    }


def break_panels(folder: Path, max_samples: int = 3) -> list[dict[str, Any]]:
    """The data of the figure for up to ``max_samples`` saved breaks of one evaluation: the
    first break of each member that broke something, then the next ones in record order."""
    examples, meta = read(folder / ADVERSARIAL_FILE)
    if not len(examples):
        return []
    model, model_meta = load_model(_model_path(folder, str(meta.get("model"))), "cpu")
    model.eval()
    dataset = model_meta.get("dataset")
    classes = dataset.get("classes") if isinstance(dataset, Mapping) else None
    chosen: list[int] = []
    for member in dict.fromkeys(examples.member):  # one per member first: what each one does
        chosen.append(examples.member.index(member))
    chosen += [i for i in range(len(examples)) if i not in chosen]
    panels = []
    for row in sorted(chosen[:max_samples]):
        clean_p = torch.softmax(examples.clean_logits[row].double(), 0)
        adv_p = torch.softmax(examples.adversarial_logits[row].double(), 0)
        label = int(examples.label[row])
        clean_k, adv_k = int(clean_p.argmax()), int(adv_p.argmax())
        panel: dict[str, Any] = {
            "index": int(examples.index[row]),
            "member": examples.member[row],
            "label": _label(classes, label),
            "clean_image": examples.clean[row].numpy(),
            "adversarial_image": examples.adversarial[row].numpy(),
            "clean_prediction": _label(classes, clean_k),
            "clean_confidence": float(clean_p[clean_k]),
            "adversarial_prediction": _label(classes, adv_k),
            "adversarial_confidence": float(adv_p[adv_k]),
            "true_confidence_after": float(adv_p[label]),
        }
        if isinstance(model, SpikingNetwork):
            full = raster_data(
                model, examples.clean[row], examples.adversarial[row], n_neurons=1 << 30
            )
            panel["raster"] = _active_raster(full, seed=row)
        panels.append(panel)
    return panels


def plot_saved_breaks(
    panels: Sequence[Mapping[str, Any]], out_path: str | Path, *, title: str, eps: float
) -> Path:
    """One row per broken sample: clean, perturbation x scale, adversarial image (with the
    predictions and confidences), then the clean and adversarial first-layer spike rasters."""
    spiking = all("raster" in p for p in panels)
    cols = 5 if spiking else 3
    figure = fig._figure(3.3 * cols, 3.6 * len(panels) + 0.6)
    grid = figure.add_gridspec(len(panels), cols, width_ratios=[1, 1, 1] + [1.6] * (cols - 3))
    for r, p in enumerate(panels):
        clean = fig._image_hwc(p["clean_image"])
        adv = fig._image_hwc(p["adversarial_image"])
        delta = adv - clean
        largest = float(np.abs(delta).max())
        scale = 0.5 / largest if largest > 0 else 1.0
        titles = (
            f"sample {p['index']}, true: {p['label']}\n"
            f"clean -> {p['clean_prediction']} ({p['clean_confidence']:.0%})",
            f"perturbation x{scale:.3g} (gray = 0)\n"
            f"max |delta| {largest * 255:.2f}/255, eps {eps * 255:.3g}/255",
            f"adversarial -> {p['adversarial_prediction']} "
            f"({p['adversarial_confidence']:.0%})\ntrue class now "
            f"{p['true_confidence_after']:.0%}\nby {p['member'].replace('/', ' / ')}",
        )
        for c, image in enumerate((clean, 0.5 + delta * scale, adv)):
            ax = figure.add_subplot(grid[r, c])
            fig._show_image(ax, image, "")
            ax.set_title(titles[c], fontsize="small")
        if spiking:
            raster = p["raster"]
            s_clean = np.asarray(raster["clean_spikes"], dtype=float)
            s_adv = np.asarray(raster["adversarial_spikes"], dtype=float)
            added = (s_adv > 0) & (s_clean <= 0)
            removed = (s_clean > 0) & (s_adv <= 0)
            for c, (name, spikes) in enumerate((("clean", s_clean), ("adversarial", s_adv))):
                ax = figure.add_subplot(grid[r, 3 + c])
                rgb = np.ones((*spikes.T.shape, 3))
                rgb[spikes.T > 0] = (0.0, 0.0, 0.0)
                text = f"{name}: {int(spikes.sum())} spikes"
                if c == 1:
                    rgb[added.T] = (0.85, 0.1, 0.1)
                    rgb[removed.T] = (0.45, 0.65, 1.0)
                    text += f"\nred +{int(added.sum())}, blue -{int(removed.sum())}"
                steps, count = spikes.shape
                ax.imshow(
                    rgb,
                    aspect="auto",
                    interpolation="nearest",
                    extent=(0.5, steps + 0.5, count - 0.5, -0.5),
                )
                ax.set_xticks(range(1, steps + 1))
                ax.set_xlabel("time step", fontsize="small")
                ax.set_ylabel(
                    f"{count} random of {raster['active_neurons']} active\n"
                    f"(of {raster['neurons_in_layer']} neurons)",
                    fontsize="small",
                )
                ax.set_title(f"layer {raster['layer']}, {text}", fontsize="small")
    figure.suptitle(title)
    return fig._save(figure, out_path)


def draw_saved_breaks(run_dir: Path, figures_dir: Path, max_samples: int = 3) -> list[Path]:
    """Draw the figure for every evaluation with saved examples in ``run_dir``."""
    made = []
    for folder in adversarial_folders(run_dir):
        panels = break_panels(folder, max_samples)
        if not panels:
            continue
        meta = read(folder / ADVERSARIAL_FILE)[1]
        name = folder.name if folder != run_dir else "evaluation"
        out = figures_dir / f"{FIGURE_PREFIX}{name}.png"
        title = (
            f"Saved breaks of {Path(str(meta.get('model'))).name} ({folder.name}): "
            f"{len(panels)} sample(s), eps {float(meta['eps']) * 255:.3g}/255"
        )
        made.append(plot_saved_breaks(panels, out, title=title, eps=float(meta["eps"])))
    return made


def storage_summary(folder: Path) -> dict[str, Any]:
    """Breaks saved, file size and bytes per break of one evaluation folder."""
    examples, meta = read(folder / ADVERSARIAL_FILE)
    size = (folder / ADVERSARIAL_FILE).stat().st_size
    k = len(examples)
    recheck = None
    if (folder / RECHECK_FILE).is_file():
        try:
            recheck = json.loads((folder / RECHECK_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            recheck = None
    return {
        "breaks": k,
        "n": int(meta.get("n", 0)),
        "bytes": size,
        "bytes_per_break": size / k if k else None,
        "recheck": recheck,
    }


def saved_breaks_blocks(run_dir: Path) -> list[Block]:
    """The report section: storage and recheck per evaluation, then the figures (document
    blocks, :mod:`robustsnn.analysis.document`, which the report's sections add to a run's)."""
    folders = adversarial_folders(run_dir)
    if not folders:
        return []
    blocks: list[Block] = [
        Heading(3, "Saved adversarial examples (every break, rechecked independently)"),
        Paragraph(
            "Every sample an attack broke is kept in adversarial.safetensors beside its "
            "evaluation.json: the clean image (uint8), the perturbation in the smallest form "
            "that reconstructs the attacked image bit for bit (float16, one byte per pixel on "
            "the eps-ball's boundary plus float32 for the rest, or float32), the member that "
            "broke it, and the clean and adversarial logits. `robustsnn recheck FOLDER` re-verifies each one "
            "(eps-ball, [0, 1], misclassified by the model's float64 forward and by an "
            "independent numpy reference simulator); `robustsnn transfer A B` runs one model's "
            "examples on another."
        ),
    ]
    rows: list[list[Cell | str]] = []
    for folder in folders:
        s = storage_summary(folder)
        per = f"{s['bytes_per_break']:,.0f}" if s["bytes_per_break"] else "-"
        r = s["recheck"]
        if r is None:
            verdict = Cell(f"not run: robustsnn recheck {folder}")
        else:
            verdict = Cell(
                f"{'PASS' if r.get('passed') else 'FAIL'}: {r.get('summary', '')}",
                "pass" if r.get("passed") else "fail",
            )
        rows.append(
            [
                str(folder.relative_to(run_dir)) if folder != run_dir else folder.name,
                f"{s['breaks']} of n = {s['n']}",
                f"{s['bytes']:,}",
                per,
                verdict,
            ]  # fmt: skip
        )
    blocks.append(
        Table(
            ["evaluation", "breaks saved", "file bytes", "bytes per break", "recheck"],
            rows,
            f"{ADVERSARIAL_FILE}, {RECHECK_FILE}",
        )
    )
    figures_dir = run_dir / "figures"
    for png in draw_saved_breaks(run_dir, figures_dir):
        blocks.append(
            Image(
                png,
                "Saved breaks, drawn from adversarial.safetensors: clean image with the model's "
                "prediction and confidence, the perturbation (scaled to the gray range), the "
                "adversarial image with the new prediction, and the first spiking layer's "
                "spike raster clean vs adversarial, over random neurons that fire for either "
                "input (red: spikes added, blue: removed): "
                f"{png.relative_to(run_dir)}",
            )
        )
    return blocks


__all__ = [
    "adversarial_folders",
    "break_panels",
    "draw_saved_breaks",
    "plot_saved_breaks",
    "saved_breaks_blocks",
    "storage_summary",
]
