"""Ensembles as data: presets, member names, user specs, collapse for an ANN."""

from __future__ import annotations

import pytest
from evaluation_test_utils import tiny_mlp, tiny_snn

from robustsnn.errors import UserError
from robustsnn.evaluation import (
    ENSEMBLES,
    Ensemble,
    Member,
    attack_grid,
    ensemble_from_spec,
    resolve_ensemble,
)
from robustsnn.snn import estimator_names

GRID_PRESETS = {
    "fgsm-ensemble": "fgsm",
    "rfgsm-ensemble": "rfgsm",
    "pgd-ensemble": "pgd",
    "apgd-ensemble": "apgd-ce",
    "apgd-dlr-ensemble": "apgd-dlr",
    "apgdt-ensemble": "apgd-t",
}


def test_registry_has_the_paper_presets() -> None:
    for name in [*GRID_PRESETS, "autoattack", "pgd-fast"]:
        assert name in ENSEMBLES
    with pytest.raises(UserError, match="valid: .*pgd-ensemble"):
        ENSEMBLES.get("pgd-ensembel")


@pytest.mark.parametrize("name", sorted(GRID_PRESETS))
def test_grid_presets_have_19_members_for_an_snn_and_1_for_an_ann(name: str) -> None:
    preset = ENSEMBLES.get(name)
    attack = GRID_PRESETS[name]
    snn_members = preset.for_model(tiny_snn())
    assert len(snn_members) == 19
    names = snn_members.names()
    assert sorted(names) == sorted(f"{attack}/{e}" for e in estimator_names())
    assert names[:3] == [f"{attack}/bptt-pcw-1", f"{attack}/bptr", f"{attack}/ann-proxy"]
    ann_members = preset.for_model(tiny_mlp())
    assert ann_members.names() == [attack]


def test_autoattack_and_pgd_fast() -> None:
    auto = ENSEMBLES.get("autoattack").for_model(tiny_snn())
    assert auto.names() == ["apgd-ce/bptt-pcw-1", "apgd-t/bptt-pcw-1", "fab-t/bptt-pcw-1", "square"]
    assert ENSEMBLES.get("autoattack").for_model(tiny_mlp()).names() == [
        "apgd-ce",
        "apgd-t",
        "fab-t",
        "square",
    ]
    fast = ENSEMBLES.get("pgd-fast").for_model(tiny_snn())
    assert fast.names() == [
        "pgd/bptt-rel-pcw-1",
        "pgd/bptt-pcw-1",
        "pgd/bptr",
        "pgd/ann-proxy",
    ]
    assert ENSEMBLES.get("pgd-fast").for_model(tiny_mlp()).names() == ["pgd"]
    adaptive = ENSEMBLES.get("autoattack-adaptive").for_model(tiny_snn())
    assert len(adaptive) == 13 and adaptive.names()[-1] == "square"


def test_member_names_and_canonical_estimators() -> None:
    assert Member("pgd", "bptr").name == "pgd/bptr"
    assert Member("pgd", "bptt-pcw-1", {"steps": 100}).name == "pgd[steps=100]/bptt-pcw-1"
    assert Member("square").name == "square"
    assert Member("pgd", "bptt-pcw-1.0").validate().estimator == "bptt-pcw-1"
    assert Member("pgd", "ann").validate().estimator == "ann-proxy"
    assert Member("pgd", label="mine").name == "mine"
    # A white-box member without estimator gets the default one on an SNN.
    ens = Ensemble("e", (Member("pgd"), Member("square", "bptr")))
    assert ens.for_model(tiny_snn()).names() == ["pgd/bptt-pcw-1", "square"]


def test_ensemble_from_spec() -> None:
    ens = ensemble_from_spec(
        [
            {"attack": "pgd", "estimator": "bptr", "params": {"steps": 40}},
            {"attack": "fgsm", "estimator": ["bptt-exp-1", "ann-proxy"]},
            "rfgsm/bptt-ste",
            {"attack": "square", "params": {"n_queries": 100}},
        ],
        name="mine",
    )
    assert ens.name == "mine"
    assert ens.names() == [
        "pgd[steps=40]/bptr",
        "fgsm/bptt-exp-1",
        "fgsm/ann-proxy",
        "rfgsm/bptt-ste",
        "square[n_queries=100]",
    ]
    assert len(ensemble_from_spec([{"attack": "pgd", "estimator": "all"}])) == 19
    assert resolve_ensemble([{"attack": "fgsm"}]).names() == ["fgsm"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"attack": "pgdd"}], "unknown attack 'pgdd'"),
        ([{"attack": "pgd", "params": {"stepz": 3}}], "no parameter 'stepz'"),
        ([{"attack": "pgd", "estimator": "bptt-foo-1"}], "unknown surrogate|unknown gradient"),
        ([{"attack": "pgd", "estimator": "bptt-pcw-x"}], "gamma must be|unknown gradient"),
        ([{"attack": "pgd", "estimatr": "bptr"}], "unknown keys: estimatr"),
        ([{"attack": "pgd"}, {"attack": "pgd"}], "more than once"),
        ([], "no members"),
        ("pgd", "list of"),
        ([3], "must be a mapping"),
    ],
)
def test_ensemble_spec_errors_are_user_errors(spec: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ensemble_from_spec(spec)  # type: ignore[arg-type]


def test_ann_collapse_keeps_distinct_params() -> None:
    ens = ensemble_from_spec(
        [
            {"attack": "pgd", "estimator": "bptr"},
            {"attack": "pgd", "estimator": "ann-proxy"},
            {"attack": "pgd", "estimator": "bptr", "params": {"steps": 50}},
        ]
    )
    assert ens.for_model(tiny_mlp()).names() == ["pgd", "pgd[steps=50]"]


def test_restrict_and_with_params() -> None:
    pgd = ENSEMBLES.get("pgd-ensemble")
    assert pgd.restrict("bptr").names() == ["pgd/bptr"]
    auto = ENSEMBLES.get("autoattack").restrict("bptt-pcw-1")
    assert len(auto) == 4  # square (black-box) is kept
    with pytest.raises(UserError, match="no member with estimator"):
        ENSEMBLES.get("autoattack").restrict("bptr")
    cheap = pgd.with_params({"pgd": {"steps": 3}})
    assert all(m.params == {"steps": 3} for m in cheap.members)
    assert all(m.params == {} for m in pgd.members)  # presets are not mutated
    with pytest.raises(UserError, match="has no attack 'fgsm'"):
        pgd.with_params({"fgsm": {}})


def test_attack_grid() -> None:
    grid = attack_grid("pgd", tiny_snn())
    assert grid.name == "pgd (all estimators)" and len(grid) == 19
    assert attack_grid("pgd", tiny_snn(), estimator="bptr").names() == ["pgd/bptr"]
    single = attack_grid("pgd", tiny_mlp())
    assert single.name == "pgd" and single.names() == ["pgd"]
    assert attack_grid("square", tiny_snn()).names() == ["square"]
    with pytest.raises(UserError, match="unknown attack"):
        attack_grid("pgq", tiny_snn())
