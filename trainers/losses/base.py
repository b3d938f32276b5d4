"""The loss interface, the registry and the helpers every loss shares (METHODS.md §0).

A loss is a small dataclass. Its hyperparameters are fields, validated in `__post_init__`
(ValueError, NaN and infinity included); `register_loss` puts a factory for it in `LOSSES`
that answers unknown hyperparameter names with a TypeError naming them. Class attributes
tell the training loop what the loss needs:

- `requires_reference`: reference log-probs of chosen and rejected (`ref_*_logps`);
- `requires_lengths`: completion token counts (`chosen_lengths`, `rejected_lengths`);
- `requires_token_kl`: TDPO's per-sequence token-level KL (`chosen_token_kl`, ...);
- `paired`: False for unpaired losses (KTO), which have their own call signature;
- `regularizer`: an online KL(pi_theta || pi_ref) term the loop adds (SPO's lambda).

Soft labels. `soft_labels[i]` is the probability p that chosen beats rejected. Unless a
loss says otherwise (`soft_labels_enter_formula`, GDPO/GIPO/SPPO), the per-pair loss with a
soft label is the expected hard-label loss over a Bernoulli(p) label:
    p * loss(chosen, rejected) + (1 - p) * loss(rejected, chosen),
so p = 1 is the hard label, p = 0 the swapped pair, and BT-sampled hard labels have the same
expected loss as the soft ones (what the bandit's theory targets assume).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.registry import Registry

Tensor = torch.Tensor


@dataclass
class LossOutput:
    losses: Tensor                 # [B], one value per pair (per completion for KTO, per list)
    metrics: dict[str, Tensor]     # scalar tensors, detached


@dataclass(frozen=True)
class KLRegularizer:
    """lambda * KL(pi_theta || pi_ref) on online policy samples over the regularization prompts."""

    weight: float
    estimator: str = "exact"          # exact | k1 | k3 | reference (trainers/regularizers.py)
    prompts_per_step: int = 8
    samples_per_prompt: int = 1
    max_new_tokens: int = 16


class PreferenceLoss:
    name: str = ""
    requires_reference: bool = True
    requires_lengths: bool = False
    requires_token_kl: bool = False
    paired: bool = True
    regularizer: KLRegularizer | None = None

    def __call__(self, *, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                 ref_chosen_logps: Tensor | None = None,
                 ref_rejected_logps: Tensor | None = None,
                 chosen_lengths: Tensor | None = None,
                 rejected_lengths: Tensor | None = None,
                 soft_labels: Tensor | None = None) -> LossOutput:
        raise NotImplementedError

    def optimal_logprobs(self, rewards: Tensor, ref_logprobs: Tensor) -> Tensor | None:
        """log pi* over an enumerable response set under Bradley-Terry, or None if unknown.

        The targets assume the bandit's data: one-token answers, every pair of the K answers
        once with soft label sigmoid(r_i - r_j) (equivalently BT-sampled labels over uniformly
        drawn pairs, which have the same expected loss).
        """
        return None


LOSSES: Registry[Callable[..., PreferenceLoss]] = Registry("method", "spo_harness.methods")


def get_loss(name: str, **hyperparams: Any) -> PreferenceLoss:
    """Build a registered loss; unknown hyperparameters raise TypeError naming them."""
    return LOSSES.get(name)(**hyperparams)


# ------------------------------------------------------------------ registration


def _coerce(loss: str, key: str, annotation: str, value: Any) -> Any:
    """YAML gives ints where floats are meant; anything else of the wrong type is refused."""
    def bad(kind: str) -> ValueError:
        return ValueError(f"{loss}: {key} must be {kind}, got {value!r}")

    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if annotation == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if annotation == "str" and not isinstance(value, str):
        raise bad("a string")
    return value


def register_loss(*names: str, renames: dict[str, str] | None = None):
    """Register a loss dataclass under `names` (the first is canonical).

    `renames` maps a hyperparameter's public name to its field when the public name is not
    a valid identifier (`lambda`).
    """
    public = {v: k for k, v in (renames or {}).items()}

    def decorator(cls: type[PreferenceLoss]) -> type[PreferenceLoss]:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        by_public = {public.get(n, n): n for n in fields}

        def factory(**hyperparams: Any) -> PreferenceLoss:
            unknown = sorted(set(hyperparams) - set(by_public))
            if unknown:
                raise TypeError(f"{names[0]} got unknown hyperparameters {unknown}; known: "
                                f"{', '.join(by_public) or '(none)'}")
            kwargs = {by_public[k]: _coerce(names[0], k, str(fields[by_public[k]].type), v)
                      for k, v in hyperparams.items()}
            return cls(**kwargs)

        factory.__name__ = f"make_{names[0]}"
        factory.__doc__ = cls.__doc__
        factory.loss_class = cls  # type: ignore[attr-defined]
        for n in names:
            LOSSES.register(n)(factory)
        return cls

    return decorator


# ------------------------------------------------------------------ validation


def check_positive(loss: str, key: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):  # NaN fails both
        raise ValueError(f"{loss}: {key} must be positive (finite, > 0), got {value!r}")


def check_nonnegative(loss: str, key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{loss}: {key} must be >= 0 (and finite), got {value!r}")


def check_label_smoothing(loss: str, value: float, upper: float = 0.5) -> None:
    if not 0 <= value < upper:
        raise ValueError(f"{loss}: label_smoothing must lie in [0, {upper}), got {value!r}")


def check_soft_labels(soft_labels: Tensor | None) -> None:
    if soft_labels is not None and not bool(((soft_labels >= 0) & (soft_labels <= 1)).all()):
        raise ValueError("soft_labels must lie in [0, 1]")


# ------------------------------------------------------------------ pairwise losses


@dataclass
class Pairs:
    """One batch of pairs as the loss sees it; `swapped()` exchanges chosen and rejected."""

    pc: Tensor
    pr: Tensor
    rc: Tensor | None
    rr: Tensor | None
    lc: Tensor | None
    lr: Tensor | None
    extra: dict[str, Tensor]

    def swapped(self) -> Pairs:
        extra = {_swap_name(k): v for k, v in self.extra.items()}
        return Pairs(self.pr, self.pc, self.rr, self.rc, self.lr, self.lc, extra)

    @property
    def h(self) -> Tensor:
        """DPO margin (l_w - l_w^ref) - (l_l - l_l^ref)."""
        return (self.pc - self.rc) - (self.pr - self.rr)

    @property
    def h_bar(self) -> Tensor:
        """Per-token-averaged margin (l_w - l_w^ref)/|y_w| - (l_l - l_l^ref)/|y_l| (TRL ipo)."""
        return (self.pc - self.rc) / self.lc - (self.pr - self.rr) / self.lr


def _swap_name(key: str) -> str:
    if key.startswith("chosen_"):
        return "rejected_" + key[len("chosen_"):]
    if key.startswith("rejected_"):
        return "chosen_" + key[len("rejected_"):]
    return key


class PairwiseLoss(PreferenceLoss):
    """Shared call path: check inputs, per-pair loss, soft labels, optional weights, metrics."""

    soft_labels_enter_formula: bool = False   # True: pair_losses uses p itself (GDPO, SPPO)
    extra_inputs: tuple[str, ...] = ()        # extra keyword tensors, named chosen_*/rejected_*

    def __call__(self, *, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
                 ref_rejected_logps=None, chosen_lengths=None, rejected_lengths=None,
                 soft_labels=None, **extra) -> LossOutput:
        unknown = sorted(set(extra) - set(self.extra_inputs))
        if unknown:
            raise TypeError(f"{self.name} got unexpected inputs {unknown}")
        if self.requires_reference and (ref_chosen_logps is None or ref_rejected_logps is None):
            raise ValueError(f"{self.name} needs ref_chosen_logps and ref_rejected_logps")
        if self.requires_lengths and (chosen_lengths is None or rejected_lengths is None):
            raise ValueError(f"{self.name} needs chosen_lengths and rejected_lengths "
                             "(completion token counts)")
        lc = lr = None
        if chosen_lengths is not None and rejected_lengths is not None:
            lc = chosen_lengths.to(policy_chosen_logps.dtype)
            lr = rejected_lengths.to(policy_chosen_logps.dtype)
            if self.requires_lengths and not bool(((lc > 0) & (lr > 0)).all()):
                raise ValueError(f"{self.name}: completion lengths must be positive")
        check_soft_labels(soft_labels)
        b = Pairs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, lc, lr, {k: v for k, v in extra.items() if v is not None})
        p = None if soft_labels is None else soft_labels.to(policy_chosen_logps.dtype)
        if self.soft_labels_enter_formula:
            losses = self.pair_losses(b, p)
        else:
            losses = self.pair_losses(b, None)
            if p is not None:
                losses = p * losses + (1 - p) * self.pair_losses(b.swapped(), None)
        metrics = self.metrics(b)
        weights = self.pair_weights(b)
        if weights is not None:
            losses = weights * losses
            metrics["weights/mean"] = weights.mean()
        return LossOutput(losses, metrics)

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        """Per-pair loss with chosen = b.pc (hard label unless soft_labels_enter_formula)."""
        raise NotImplementedError

    def pair_weights(self, b: Pairs) -> Tensor | None:
        """Optional detached per-pair weights (logged as weights/mean)."""
        return None

    def metrics(self, b: Pairs) -> dict[str, Tensor]:
        """TRL's rewards/* with implicit rewards beta * (l - l^ref)."""
        beta = self.beta  # type: ignore[attr-defined]
        return reward_metrics(beta * (b.pc - b.rc), beta * (b.pr - b.rr), b.pc, b.pr)


def reward_metrics(chosen: Tensor, rejected: Tensor, pc: Tensor,
                   pr: Tensor) -> dict[str, Tensor]:
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": (chosen - rejected).mean(),
        "rewards/accuracies": (chosen > rejected).to(chosen.dtype).mean(),
        "logps/chosen": pc.detach().mean(),
        "logps/rejected": pr.detach().mean(),
    }


def neg_log_sigmoid(z: Tensor) -> Tensor:
    """-log sigma(z), computed as softplus(-z) (METHODS.md §0)."""
    return F.softplus(-z)


def win_probabilities(rewards: Tensor) -> Tensor:
    """[..., K, K] Bradley-Terry P(i beats j) = sigmoid(r_i - r_j); 1/2 on the diagonal."""
    return torch.sigmoid(rewards[..., :, None] - rewards[..., None, :])
