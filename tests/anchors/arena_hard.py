# ruff: noqa
"""Verbatim reference copies of Arena-Hard-Auto's statistics, for the tests only.

Source: https://github.com/lmarena/arena-hard-auto, licensed under the Apache License 2.0
(Copyright the Arena-Hard-Auto authors; see the repository's LICENSE). The function bodies
below are copied unchanged (lint is disabled for this file so that they stay byte-identical);
only the module header, the imports they need, and the small wrapper
`style_feature_tensor`, whose body is a verbatim slice of a longer function, are ours.
The tests in tests/test_stats.py compare evaluators/stats.py and evaluators/style.py with them.
"""

import math

import numpy as np
import pandas as pd
import re
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from sklearn.linear_model import LogisticRegression

from dataclasses import dataclass
from typing import Dict, Callable, Optional


# ----------------------------------------------------------------------
# v0.1 (pre-v2.0): commit 3071ef95d913bb5cd632641db336a3b6c7fe4bdd (= 9a1d386^), utils_math.py


def compute_mle_elo(df, SCALE=400, BASE=10, INIT_RATING=1000, baseline_model="gpt-4-0314"):
    models = pd.concat([df["model_a"], df["model_b"]]).unique()
    models = pd.Series(np.arange(len(models)), index=models)

    # duplicate battles
    df = pd.concat([df, df], ignore_index=True)
    p = len(models.index)
    n = df.shape[0]

    X = np.zeros([n, p])
    X[np.arange(n), models[df["model_a"]]] = +math.log(BASE)
    X[np.arange(n), models[df["model_b"]]] = -math.log(BASE)

    # one A win => two A win
    Y = np.zeros(n)
    Y[df["winner"] == "model_a"] = 1.0

    # one tie => one A win + one B win
    # find tie + tie (both bad) index
    tie_idx = (df["winner"] == "tie") | (df["winner"] == "tie (bothbad)")
    tie_idx[len(tie_idx)//2:] = False
    Y[tie_idx] = 1.0

    lr = LogisticRegression(fit_intercept=False, penalty=None, tol=1e-8)
    lr.fit(X,Y)

    elo_scores = SCALE * lr.coef_[0] + INIT_RATING

    # set anchor as gpt-4-0314 = 1000
    if baseline_model in models.index:
        elo_scores += 1000 - elo_scores[models[baseline_model]]
    return pd.Series(elo_scores, index=models.index).sort_values(ascending=False)


# ----------------------------------------------------------------------
# v2.0: commit 196f6b826783b3da7310e361a805fa36f0be83f3, utils/math_utils.py


REGISTER_LOSSES: Dict[str, Callable] = {}
REGISTER_MODELS: Dict[str, Callable] = {}


def register_loss(name: str):
    def decorator(func: Callable):
        REGISTER_LOSSES[name] = func
        return func

    return decorator


def register_model(name: str):
    def decorator(func: Callable):
        REGISTER_MODELS[name] = func
        return func

    return decorator


@register_model("bt")
class BTModel(nn.Module):
    def __init__(self, num_components):
        super().__init__()
        self.logits = nn.Parameter(
            nn.init.constant_(torch.empty(num_components), 0.5)
        )

    def forward(self):
        return self.logits, None


@register_loss("bt")
def bt_loss(
    logits: torch.Tensor,
    outcomes: torch.Tensor,
    alpha: float = 0.5,
    **kwargs,
):
    # more stable than the original implementation
    loss = F.binary_cross_entropy_with_logits(
        logits,
        outcomes.float(),
        reduction='sum'
    )
    
    return loss


def fit_pairwise_model(
    features: torch.Tensor, 
    outcomes: torch.Tensor,
    loss_type: str = 'bt', 
    indices: torch.Tensor = None,
    lr: float = 0.1, 
    tol: float = 1e-9, 
    max_epochs: int = 50
):
    model_cls = REGISTER_MODELS[loss_type]
    loss_func = REGISTER_LOSSES[loss_type]
    
    if indices is not None:
        features = features[indices]
        outcomes = outcomes[indices]
        
    assert not features.isnan().any()
    
    model = model_cls(num_components=features.shape[1])

    optimizer = optim.LBFGS(
        model.parameters(),
        lr=lr,
        max_iter=max_epochs,
        tolerance_grad=tol,
        tolerance_change=tol,
    )

    def closure():
        optimizer.zero_grad()
        logits, eta = model()
                
        _logits = features @ logits
        
        loss = loss_func(
            logits=_logits, 
            outcomes=outcomes, 
            eta=eta
        )
        loss.backward()
        return loss

    optimizer.step(closure)

    logits, eta = model()
    return logits.detach(), eta if eta is None else eta.detach()


def one_hot_encode(items, baseline="o3-mini-2025-01-31"):
    # Get unique items and sort them
    unique_items = sorted(set(items + [baseline]))
    item_to_index = {item: idx for idx, item in enumerate(unique_items)}

    # Initialize the one-hot encoded matrix
    one_hot_matrix = []

    for item in items:
        # Create a zero-filled list
        one_hot_vector = [0] * len(unique_items)
        # Set the appropriate index to 1
        one_hot_vector[item_to_index[item]] = 1
        one_hot_vector[item_to_index[baseline]] = -1
        one_hot_matrix.append(one_hot_vector)

    return torch.tensor(one_hot_matrix, dtype=torch.float32), unique_items


# ----------------------------------------------------------------------
# v2.0: commit 196f6b826783b3da7310e361a805fa36f0be83f3, utils/add_markdown_info.py


def count_markdown_elements(markdown_text, suffix):
    counters = {
        f"header_count{suffix}": {
            "h1": len(re.findall(r"^#{1}\s", markdown_text, re.MULTILINE)),
            "h2": len(re.findall(r"^#{2}\s", markdown_text, re.MULTILINE)),
            "h3": len(re.findall(r"^#{3}\s", markdown_text, re.MULTILINE)),
            "h4": len(re.findall(r"^#{4}\s", markdown_text, re.MULTILINE)),
            "h5": len(re.findall(r"^#{5}\s", markdown_text, re.MULTILINE)),
            "h6": len(re.findall(r"^#{6}\s", markdown_text, re.MULTILINE)),
        },
        f"list_count{suffix}": {
            "ordered": len(re.findall(r"^\s*\d+\.\s", markdown_text, re.MULTILINE)),
            "unordered": len(re.findall(r"^\s*[-*+]\s", markdown_text, re.MULTILINE)),
        },
        f"bold_count{suffix}": {
            "**": len(re.findall(r"\*\*[^*\n]+\*\*", markdown_text)),
            "__": len(re.findall(r"__[^_\n]+__", markdown_text)),
        },
    }
    return counters


def remove_pattern(answer, pattern):
    blocks = pattern.findall(answer)
    for block in blocks:
        answer = answer.replace(block, "")
    return answer


# ----------------------------------------------------------------------
# v2.0: commit 196f6b826783b3da7310e361a805fa36f0be83f3, show_result.py, print_leaderboard_with_style_features:
# the lines from `final_feature_tensor = ...` to the z-scoring, verbatim, wrapped in a
# function of the two per-battle metadata tensors (columns token_len, header, list, bold).


def style_feature_tensor(model_feature_tensor, baseline_feature_tensor):
    final_feature_tensor = torch.zeros_like(model_feature_tensor)
    final_feature_tensor[:, 0] = (
        model_feature_tensor[:, 0] - baseline_feature_tensor[:, 0]
    ) / (
        model_feature_tensor[:, 0] + baseline_feature_tensor[:, 0]
    )
    
    model_md_density = model_feature_tensor[:, 1:] / (model_feature_tensor[:, :1] + 1)
    baseline_md_density = baseline_feature_tensor[:, 1:] / (baseline_feature_tensor[:, :1] + 1)
    
    assert not model_md_density.isnan().any()
    assert not baseline_md_density.isnan().any()
    
    final_feature_tensor[:, 1:] = (
        model_md_density - baseline_md_density
    ) / (
        model_md_density + baseline_md_density + 1
    )
    
    assert not final_feature_tensor.isnan().any()
    
    normalized_feature_tensor = (
        final_feature_tensor - torch.mean(final_feature_tensor, axis=0)
    ) / torch.std(
        final_feature_tensor, axis=0
    )
    
    assert not normalized_feature_tensor.isnan().any()
    return final_feature_tensor, normalized_feature_tensor
