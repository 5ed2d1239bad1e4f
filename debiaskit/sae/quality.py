"""How good a trained SAE is on held-out text: the quality block of its card.

Explained variance, mean L0 and dead latents over the held-out tokens, and the share of next-token cross-entropy
recovered when the SAE's reconstruction replaces the activation; every measure leaves the anchor position out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from debiaskit.method import hooked
from debiaskit.model import LoadedModel
from debiaskit.sae.activations import BATCH_SIZE, hook_activations
from debiaskit.sae.top_activations import TOP_TOKENS_PER_LATENT, TopActivations

RECONSTRUCTION_SEQUENCES = 256  # held-out sequences scored for reconstruction (~32k tokens)
CE_SEQUENCES = 48  # ... and for cross-entropy (~6k tokens, three full forward passes each)


def spread(items: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` items taken evenly across `items`, so every corpus file is represented."""
    stride = max(1, math.ceil(len(items) / limit))
    return list(items[::stride])[:limit]


def measure_quality(lm: LoadedModel, sae: Any, heldout: Sequence[Sequence[int]]
                    ) -> tuple[dict[str, Any], dict[str, list[list[Any]]]]:
    """The card's quality block, and each latent's top-activating held-out tokens. Reconstruction is scored on up
    to RECONSTRUCTION_SEQUENCES held-out sequences (a forward pass up to the SAE's block), cross-entropy on
    CE_SEQUENCES of them (three full forward passes each)."""
    sequences = spread(heldout, RECONSTRUCTION_SEQUENCES)
    quality, top = reconstruction_quality(lm, sae, sequences)
    ce = cross_entropy_recovered(lm, sae, spread(heldout, CE_SEQUENCES))
    return {**quality, **ce}, top.describe(lm, sequences)


@torch.no_grad()
def reconstruction_quality(lm: LoadedModel, sae: Any, sequences: Sequence[Sequence[int]]
                           ) -> tuple[dict[str, Any], TopActivations]:
    """Over every position but the anchor: explained_variance = 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 (pooled
    over tokens), mean L0, the share of latents never active, and each latent's top activations."""
    d_sae = sae.cfg.d_sae
    sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    sum_sq = sum_err = 0.0
    n_tokens = active = 0
    fired = torch.zeros(d_sae, dtype=torch.bool)
    top = TopActivations(d_sae, TOP_TOKENS_PER_LATENT)
    for start, x, where in hook_activations(lm, sae.cfg.metadata.hook_name, sequences):
        flat = x[where].reshape(int(where.sum()), -1).float()
        acts = sae.encode(x[where])
        recon = sae.decode(acts).reshape(flat.shape).float()
        acts = acts.reshape(flat.shape[0], d_sae).float().cpu()
        sum_x += flat.double().sum(0).cpu()
        sum_sq += float(flat.double().pow(2).sum())
        sum_err += float((flat - recon).double().pow(2).sum())
        n_tokens += flat.shape[0]
        active += int((acts > 0).sum())
        fired |= (acts > 0).any(0)
        top.update(acts, [(start + row, column) for row, column in where.nonzero().tolist()])
    total_variance = sum_sq - float(sum_x.pow(2).sum()) / n_tokens
    quality = {
        "reconstruction_tokens": n_tokens,
        "explained_variance": 1.0 - sum_err / total_variance,
        "mean_l0": active / n_tokens,
        "dead_latent_fraction": float((~fired).float().mean()),
        "dead_latent_definition": "never active on any of the held-out tokens scored here",
    }
    return quality, top


@torch.no_grad()
def cross_entropy_recovered(lm: LoadedModel, sae: Any, sequences: Sequence[Sequence[int]]) -> dict[str, Any]:
    """ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean): the activation is replaced by the SAE's
    reconstruction (spliced) or by zeros (zero ablation) at every position but the anchor."""
    hook_name = sae.cfg.metadata.hook_name
    replacements = {"clean": None, "spliced": lambda a: sae.decode(sae.encode(a)).to(a.dtype),
                    "zero_ablation": torch.zeros_like}
    losses: dict[str, list[torch.Tensor]] = {name: [] for name in replacements}
    for start in range(0, len(sequences), BATCH_SIZE):
        batch = lm.make_batch(sequences[start:start + BATCH_SIZE])
        for name, substitute in replacements.items():
            def splice(activation: torch.Tensor, hook: Any, substitute=substitute) -> torch.Tensor:
                keep = lm.editable_mask(activation).reshape(*activation.shape[:2], *([1] * (activation.ndim - 2)))
                return torch.where(keep, substitute(activation), activation)

            with hooked(lm, [(hook_name, splice)] if substitute is not None else []):
                losses[name].append(next_token_loss(lm.run(batch), batch.tokens))
    ce = {name: float(torch.cat(values).mean()) for name, values in losses.items()}
    return {
        "ce_tokens": int(sum(len(s) - 2 for s in sequences)),
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_zero_ablation": ce["zero_ablation"],
        "ce_loss_recovered": (ce["zero_ablation"] - ce["spliced"]) / (ce["zero_ablation"] - ce["clean"]),
        "ce_loss_recovered_baseline": "zero ablation at every position but the anchor",
    }


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-prediction cross-entropy [n] of predictions made at positions 1.. (the anchor's own prediction is the
    same with or without an edit, so it is left out); batches here have no padding."""
    log_probs = torch.log_softmax(logits[:, 1:-1].float(), dim=-1)
    return -log_probs.gather(-1, tokens[:, 2:].unsqueeze(-1)).squeeze(-1).flatten().cpu()
