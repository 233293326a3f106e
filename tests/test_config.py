"""Config: YAML + --set overrides, eps as fractions, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustsnn.config import dump_config, load_config, parse_eps
from robustsnn.errors import UserError


def test_defaults_are_the_quickstart() -> None:
    cfg = load_config()
    assert cfg.data.dataset == "mnist5k" and cfg.snn.T == 8 and cfg.finetune.beta == 6.0


def test_shipped_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml")) + sorted((root / "paper").glob("*.yaml"))
    assert len(files) >= 8
    for f in files:
        load_config(f)


def test_quickstart_file_equals_embedded_default() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    assert dump_config(load_config(root / "quickstart.yaml")) == dump_config(
        load_config(None, ["name=quickstart"])
    )


def test_overrides_and_types() -> None:
    cfg = load_config(
        None, ["eval.eps=8/255", "snn.T=4", "model.width=none", "finetune.train_weights=false"]
    )
    assert cfg.eval.eps == pytest.approx(8 / 255)
    assert cfg.snn.T == 4 and cfg.model.width is None and cfg.finetune.train_weights is False


@pytest.mark.parametrize(
    ("override", "needle"),
    [("eval.epz=1", "eval.epz"), ("snn.T=abc", "snn.T"), ("finetune.train_weights=maybe", "train_weights"),
     ("eval.eps=8", "8/255"), ("nosection.x=1", "nosection"), ("snn.T", "KEY=VALUE")],
)  # fmt: skip
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        load_config(None, [override])
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_yaml_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("snn: {T: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("snn: {T: eight}\n")
    with pytest.raises(UserError, match="snn.T"):
        load_config(wrong)


def test_parse_eps() -> None:
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.0314") == pytest.approx(0.0314)
    with pytest.raises(UserError):
        parse_eps("1/0")
