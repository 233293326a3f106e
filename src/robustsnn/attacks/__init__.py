"""Adversarial attacks in the L-inf threat model, pixel space [0, 1].

Every attack takes any callable ``model(x) -> logits`` and returns ``x_adv`` within ``eps`` of
``x`` and in [0, 1]: ``build_attack("pgd", eps=8/255)(model, x, y, generator=g)``. Attacks
know nothing about spikes; an SNN is attacked through a gradient estimator wrapped around it.
"""

from __future__ import annotations

from robustsnn.attacks.apgd import APGD, APGDDLR
from robustsnn.attacks.apgd_t import APGDT
from robustsnn.attacks.base import Attack, Model
from robustsnn.attacks.fab import FABT
from robustsnn.attacks.fgsm import FGSM
from robustsnn.attacks.identity import NoAttack
from robustsnn.attacks.losses import ce_loss, dlr_loss, margin, targeted_dlr_loss
from robustsnn.attacks.pgd import PGD, PGDDLR
from robustsnn.attacks.race import Race, ViewSet
from robustsnn.attacks.registry import ATTACKS, attack_parameters, build_attack
from robustsnn.attacks.rfgsm import RFGSM
from robustsnn.attacks.sapgd import SAPGD
from robustsnn.attacks.square import Square
from robustsnn.attacks.transfer import Transfer

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "FABT",
    "FGSM",
    "PGD",
    "PGDDLR",
    "RFGSM",
    "Race",
    "SAPGD",
    "Attack",
    "Model",
    "NoAttack",
    "Square",
    "Transfer",
    "ViewSet",
    "attack_parameters",
    "build_attack",
    "ce_loss",
    "dlr_loss",
    "margin",
    "targeted_dlr_loss",
]
