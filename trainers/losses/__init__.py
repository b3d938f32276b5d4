"""Preference losses as small registered objects (not a branch chain in the trainer).

    from trainers.losses import get_loss
    out = get_loss("spo", alpha=1.0)(policy_chosen_logps=..., policy_rejected_logps=...,
                                      ref_chosen_logps=..., ref_rejected_logps=...,
                                      chosen_lengths=..., rejected_lengths=..., soft_labels=None)
    out.losses   # one value per pair
    out.metrics  # TRL-style names: rewards/chosen, rewards/margins, ...

Log-probs are sums over completion tokens (METHODS.md §0). Each loss declares what the
training loop must provide (`requires_reference`, `requires_lengths`, `requires_token_kl`,
`paired`, `regularizer`; see base.py) and, where theory gives one, the optimal policy over
an enumerable response set (`optimal_logprobs`, used on `bandit`).

| module            | losses                                        |
|-------------------|-----------------------------------------------|
| spo.py            | spo (pairs, weighted, Plackett-Luce lists)    |
| dpo_family.py     | dpo, ipo, hinge, cdpo, rdpo/robust, gdpo, gipo |
| reference_free.py | simpo, orpo, sft                              |
| sppo.py, tdpo.py  | sppo, tdpo                                    |
| seqpo.py          | seqpo (one round per preference dimension)    |
| kto.py            | kto (unpaired)                                |
| ssl.py            | the `ssl:` wrapper on any pairwise loss (Self-supervised PO) |
"""

from trainers.losses.base import (
    LOSSES,
    KLRegularizer,
    LossOutput,
    PairwiseLoss,
    PreferenceLoss,
    get_loss,
    register_loss,
)
from trainers.losses.dpo_family import (
    CDPOLoss,
    DPOLoss,
    GDPOLoss,
    GIPOLoss,
    HingeLoss,
    IPOLoss,
    RDPOLoss,
)
from trainers.losses.kto import KTOLoss
from trainers.losses.reference_free import ORPOLoss, SFTLoss, SimPOLoss
from trainers.losses.seqpo import SeqPOLoss
from trainers.losses.spo import SPOLoss, gamma_weights, spo_list_loss
from trainers.losses.sppo import SPPOLoss
from trainers.losses.tdpo import TDPOLoss

__all__ = [
    "LOSSES", "CDPOLoss", "DPOLoss", "GDPOLoss", "GIPOLoss", "HingeLoss", "IPOLoss",
    "KLRegularizer", "KTOLoss", "LossOutput", "ORPOLoss", "PairwiseLoss", "PreferenceLoss",
    "RDPOLoss", "SFTLoss", "SPOLoss", "SPPOLoss", "SeqPOLoss", "SimPOLoss", "TDPOLoss",
    "gamma_weights", "get_loss", "register_loss", "spo_list_loss",
]
