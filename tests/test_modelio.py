"""modelio: ANN/SNN checkpoints round-trip as models; broken files are one-line UserErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustsnn.conversion import convert
from robustsnn.errors import UserError
from robustsnn.io.models import load_model, save_ann, save_snn
from robustsnn.models import build_model
from robustsnn.snn.network import SpikingNetwork

FAST = dict(calib_T=6, calib_batches=1, calib_batch_size=16)


def _ann(seed: int = 0, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    ann = build_model(
        "cnn_small",
        num_classes=3,
        in_channels=1,
        image_size=8,
        mean=[0.5],
        std=[0.25],
        width=width,
        fc=16,
    )
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.3)
    return ann.eval()


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def saved_snn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SpikingNetwork]:
    snn = convert(_ann(), _images(16), T=5, reset="soft", bn="keep", **FAST)
    path = tmp_path_factory.mktemp("ckpt") / "snn.safetensors"
    save_snn(path, snn, dataset="toy")
    return path, snn


def _one_line_user_error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_model(path)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


@pytest.mark.parametrize("bn", ["keep", "fold", "reestimate"])
def test_snn_round_trip_gives_identical_outputs(tmp_path: Path, bn: str) -> None:
    snn = convert(_ann(), _images(16), T=5, bn=bn, **FAST)
    with torch.no_grad():
        snn.neurons()[1].threshold.fill_(0.123)  # a finetuned threshold must survive too
    path = save_snn(tmp_path / "snn.safetensors", snn, dataset="toy")
    assert path.is_file() and path.with_suffix(".json").is_file()
    loaded, meta = load_model(path)
    assert isinstance(loaded, SpikingNetwork)
    assert not loaded.training
    assert meta["kind"] == "snn" and meta["dataset"] == "toy" and meta["T"] == 5
    assert meta["conversion"]["bn"] == bn
    assert loaded.T == snn.T
    assert loaded.thresholds() == snn.thresholds()
    assert [type(m) for m in loaded.modules()] == [type(m) for m in snn.modules()]
    x = _images(4, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(x), snn(x))
    # the gradient path is the same model too
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    snn(xa).sum().backward()
    loaded(xb).sum().backward()
    assert torch.equal(xa.grad, xb.grad)  # type: ignore[arg-type]


def test_snn_settings_round_trip(saved_snn: tuple[Path, SpikingNetwork]) -> None:
    path, snn = saved_snn
    loaded, meta = load_model(path)
    assert isinstance(loaded, SpikingNetwork)
    assert meta["reset"] == "soft" and meta["leak"] == 1.0
    assert {n.reset for n in loaded.neurons()} == {"soft"}
    assert loaded.arch == snn.arch  # type: ignore[attr-defined]
    assert meta["thresholds"] == snn.thresholds()


def test_ann_round_trip(tmp_path: Path) -> None:
    ann = _ann(seed=3)
    path = save_ann(tmp_path / "ann.safetensors", ann, dataset="toy", objective="natural")
    loaded, meta = load_model(path)
    assert meta["kind"] == "ann" and meta["objective"] == "natural"
    assert not isinstance(loaded, SpikingNetwork) and not loaded.training
    assert loaded.arch == ann.arch  # type: ignore[attr-defined]
    x = _images(4, seed=4)
    with torch.no_grad():
        assert torch.equal(loaded(x), ann(x))
    for key, value in ann.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_missing_file(tmp_path: Path) -> None:
    message = _one_line_user_error(tmp_path / "nope.safetensors")
    assert "nope.safetensors" in message


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).tolist()))
    assert "junk.safetensors" in _one_line_user_error(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _one_line_user_error(path)


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_file(
    tmp_path: Path, saved_snn: tuple[Path, SpikingNetwork], fraction: float
) -> None:
    source, _ = saved_snn
    data = source.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * fraction)])
    path.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    _one_line_user_error(path)


def _with_metadata(tmp_path: Path, source: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "edited.safetensors"
    path.write_bytes(source.read_bytes())
    meta = json.loads(source.with_suffix(".json").read_text())
    edit(meta)
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["arch"].update(width=8),  # different width: shapes differ
        lambda m: m["arch"].update(fc=32),
        lambda m: m["arch"].update(num_classes=5),
        lambda m: m["arch"].update(name="vgg_small"),  # different architecture: keys differ
        lambda m: m["arch"].update(name="no_such_model"),
        lambda m: m["arch"].update(depth_of_field=3),  # an argument the model does not take
        lambda m: m["arch"].update(width=-2),  # an impossible value
        lambda m: m.update(transforms=["time_travel"]),
        lambda m: m.update(kind="banana"),
        lambda m: m.pop("arch"),
        lambda m: m.pop("kind"),
        lambda m: m["conversion"].update(bn="fold"),  # structure differs: BN folded away
        lambda m: m["conversion"].update(reset="sideways"),
        lambda m: m["arch"].update(width="abc"),
        lambda m: m["arch"].update(fc=-1),
        lambda m: m.update(arch="cnn_small"),
        lambda m: m.update(T="eight"),
    ],
    ids=[
        "width",
        "fc",
        "classes",
        "other-model",
        "unknown-model",
        "unknown-arg",
        "bad-width",
        "unknown-transform",
        "kind",
        "no-arch",
        "no-kind",
        "fold-mismatch",
        "bad-reset",
        "width-not-a-number",
        "negative-fc",
        "arch-not-a-dict",
        "T-not-a-number",
    ],
)
def test_mismatched_metadata(tmp_path: Path, saved_snn: tuple[Path, SpikingNetwork], edit) -> None:  # type: ignore[no-untyped-def]
    source, _ = saved_snn
    _one_line_user_error(_with_metadata(tmp_path, source, edit))


def test_metadata_not_json(tmp_path: Path, saved_snn: tuple[Path, SpikingNetwork]) -> None:
    source, _ = saved_snn
    path = tmp_path / "x.safetensors"
    path.write_bytes(source.read_bytes())
    path.with_suffix(".json").write_text('{"kind": "snn", "arch": ')
    _one_line_user_error(path)


def test_lone_weights_file_uses_embedded_metadata(
    tmp_path: Path, saved_snn: tuple[Path, SpikingNetwork]
) -> None:
    source, snn = saved_snn
    path = tmp_path / "alone.safetensors"
    path.write_bytes(source.read_bytes())
    loaded, meta = load_model(path)
    x = _images(3, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(x), snn(x))
    assert meta["kind"] == "snn"


def test_weights_from_another_model_rejected(tmp_path: Path) -> None:
    """Weights of a width-8 model under width-4 metadata (e.g. files copied over each other)."""
    small = save_ann(tmp_path / "small.safetensors", _ann(width=4))
    big = save_ann(tmp_path / "big.safetensors", _ann(width=8))
    small.with_suffix(".json").write_text(big.with_suffix(".json").read_text())
    _one_line_user_error(small)


# --------------------------------------------------------------------------- layering (issue 24)

SRC = Path(__file__).resolve().parents[1] / "src" / "robustsnn"


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at top level or inside functions."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_modelio_names_no_interop_module() -> None:
    text = (SRC / "io" / "models.py").read_text()
    assert "robustsnn.interop" not in text
    assert not any(
        m.startswith("robustsnn.interop") for m in _imported_modules(SRC / "io" / "models.py")
    )


def test_nothing_under_snn_imports_modelio() -> None:
    for path in sorted((SRC / "snn").rglob("*.py")):
        imported = _imported_modules(path)
        assert not any(m == "robustsnn.io.models" for m in imported), path
        assert "robustsnn.io.models" not in path.read_text(), path


def test_registrations_present_after_importing_modelio_alone() -> None:
    """A fresh interpreter that imports only io.models still rebuilds BNTT and imported graphs."""
    import subprocess
    import sys

    code = (
        "import robustsnn.io.models as m; "
        "assert {'bntt', 'interop-graph'} <= set(m.BODY_TRANSFORMS), m.BODY_TRANSFORMS; "
        "assert 'interop_graph' in m.ARCH_BUILDERS"
    )
    env = {"PYTHONPATH": str(SRC.parent), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
