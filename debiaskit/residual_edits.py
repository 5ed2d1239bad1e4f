"""Fixed linear edits of the residual stream, shared by the baselines that remove a subspace (INLP,
SentenceDebias, CAA's projection) or add a vector (CAA). Each is a hook on one hook point that edits only the
editable positions (`LoadedModel.editable_mask`): the anchor and padding keep their exact value. Fitted in float64,
applied in float32 on the model's device.
"""

from __future__ import annotations

from typing import Any

import torch

from debiaskit.method import ActivationHook
from debiaskit.model import LoadedModel

RANK_TOLERANCE = 1e-8  # singular values below this share of the largest span no direction


def orthonormal_basis(vectors: torch.Tensor) -> torch.Tensor:
    """[d, r]: an orthonormal basis of the span of the rows of `vectors` [k, d] (r <= k, the numerical rank)."""
    left, singular, _ = torch.linalg.svd(vectors.T.double(), full_matrices=False)
    if not len(singular) or singular[0] == 0:
        return torch.zeros(vectors.shape[1], 0, dtype=torch.float64)
    return left[:, singular > RANK_TOLERANCE * singular[0]]


def project_out(resid: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """h - B B^T h for every row of `resid` [..., d]: the component in span(B) (`basis` [d, r], orthonormal) removed."""
    return resid - (resid @ basis) @ basis.T


def projection_hook(lm: LoadedModel, hook_name: str, basis: torch.Tensor) -> ActivationHook:
    """A hook on `hook_name` that removes span(`basis`) at every editable position."""
    on_device = basis.to(lm.device, torch.float32)

    def remove(resid: torch.Tensor, hook: Any) -> torch.Tensor:  # resid [batch, pos, d_model]
        edited = project_out(resid.float(), on_device).to(resid.dtype)
        return torch.where(lm.editable_mask(resid), edited, resid)

    return hook_name, remove


def addition_hook(lm: LoadedModel, hook_name: str, vector: torch.Tensor) -> ActivationHook:
    """A hook on `hook_name` that adds `vector` [d] at every editable position."""
    on_device = vector.to(lm.device, torch.float32)

    def add(resid: torch.Tensor, hook: Any) -> torch.Tensor:  # resid [batch, pos, d_model]
        edited = (resid.float() + on_device).to(resid.dtype)
        return torch.where(lm.editable_mask(resid), edited, resid)

    return hook_name, add
