"""Linear gender probes on residual-stream activations: how an erasure is checked (LEACE, INLP).

The standard check (Ravfogel et al. 2020; Belrose et al. 2023): keep a seeded share of the definitional word pairs
away from the fit, then train a probe for gender and test it on pairs neither the fit nor the probe saw. A probe is
a standardised L2 logistic regression; its score is balanced accuracy, so 0.5 is chance whatever the class sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from debiaskit.concepts import LabelledText, read_at_positions
from debiaskit.errors import DebiasKitError
from debiaskit.method import resid_post
from debiaskit.model import LoadedModel

PROBE_PAIR_SHARE = 0.4  # of the definitional [female, male] pairs: never fitted on, kept for the probe


@dataclass(frozen=True)
class Activations:
    values: torch.Tensor  # [n, d_model] float64, on the CPU
    labels: torch.Tensor  # [n] float64, 1 = female
    groups: tuple[str, ...]


def split_pairs(pairs: Sequence[tuple[str, str]], seed: int,
                method: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(fit pairs, probe pairs): a seeded share of the word pairs is kept away from `method`'s fit for the probe."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_probe = max(4, round(PROBE_PAIR_SHARE * len(pairs)))
    if len(pairs) - n_probe < 2:
        raise DebiasKitError(f"{method} needs at least {n_probe + 2} definitional word pairs; "
                             f"gendered_words.json has {len(pairs)}")
    return [pairs[i] for i in order[n_probe:]], [pairs[i] for i in order[:n_probe]]


def collect(lm: LoadedModel, examples: Sequence[LabelledText], layers: Sequence[int],
            hooks: Sequence[tuple[str, Any]]) -> dict[int, Activations]:
    """Per layer, the residual stream (blocks.L.hook_resid_post) at each example's positions, read after `hooks`
    (installed first, so an edit at that layer is already applied)."""
    labels = [example.label for example in examples for _ in example.positions]
    if not labels:
        raise DebiasKitError("no positions to fit on; check the fit positions and the fit texts")
    groups = tuple(example.group for example in examples for _ in example.positions)
    read = read_at_positions(lm, examples, [resid_post(layer) for layer in layers], hooks, max(layers) + 1)
    label_tensor = torch.tensor(labels, dtype=torch.float64)
    return {layer: Activations(read[resid_post(layer)], label_tensor, groups) for layer in layers}


def logistic_probe():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def probe_accuracy(train: Activations, test: Activations) -> float:
    """Balanced accuracy on `test` of a logistic-regression probe trained on `train`."""
    from sklearn.metrics import balanced_accuracy_score

    probe = logistic_probe().fit(train.values.numpy(), train.labels.numpy().astype(int))
    return float(balanced_accuracy_score(test.labels.numpy().astype(int), probe.predict(test.values.numpy())))


def cross_validated_probe_accuracy(data: Activations) -> float:
    """Balanced accuracy of a logistic-regression probe, cross-validated so the test words are never trained on."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    labels = data.labels.numpy().astype(int)
    predicted = cross_val_predict(logistic_probe(), data.values.numpy(), labels, groups=list(data.groups),
                                  cv=GroupKFold(n_splits=min(5, len(set(data.groups)))))
    return float(balanced_accuracy_score(labels, predicted))
