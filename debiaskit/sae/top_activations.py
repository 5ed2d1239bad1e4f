"""Each latent's top-activating tokens: the largest activations seen, streamed over batches, and their contexts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from debiaskit.model import LoadedModel
from debiaskit.sae.activations import hook_activations

TOP_TOKENS_PER_LATENT = 5
CONTEXT_TOKENS_SHOWN = 3  # tokens shown before a top-activating token


class TopActivations:
    """The `per_latent` largest activations of every latent seen so far, and the tokens they occurred on."""

    def __init__(self, d_sae: int, per_latent: int) -> None:
        self.values = torch.zeros((per_latent, d_sae))
        self.token_index = torch.full((per_latent, d_sae), -1, dtype=torch.long)  # into self.places
        self.places: list[tuple[int, int]] = []  # (sequence index, position) of every token seen

    def update(self, acts: torch.Tensor, places: Sequence[tuple[int, int]]) -> None:
        """acts [n_tokens, d_sae] on the CPU; places[i] = (sequence index, position) of token i."""
        k = min(self.values.shape[0], acts.shape[0])
        values, rows = acts.topk(k, dim=0)  # [k, d_sae]
        merged_values = torch.cat([self.values, values])
        merged_index = torch.cat([self.token_index, rows + len(self.places)])
        best = merged_values.topk(self.values.shape[0], dim=0).indices
        self.values = merged_values.gather(0, best)
        self.token_index = merged_index.gather(0, best)
        self.places.extend(places)

    def describe(self, lm: LoadedModel, sequences: Sequence[Sequence[int]]) -> dict[str, list[list[Any]]]:
        """{latent: [[context, token, activation], ...]} for latents that fired, strongest first."""
        described: dict[str, list[list[Any]]] = {}
        for latent in torch.nonzero(self.values[0] > 0).flatten().tolist():
            rows = []
            for value, index in zip(self.values[:, latent].tolist(), self.token_index[:, latent].tolist()):
                if value <= 0:
                    break
                sequence, position = self.places[index]
                tokens = sequences[sequence]
                context = lm.tokenizer.decode(tokens[max(1, position - CONTEXT_TOKENS_SHOWN):position])
                rows.append([context, lm.tokenizer.decode([tokens[position]]), round(value, 3)])
            described[str(latent)] = rows
        return described


def top_activating_tokens(lm: LoadedModel, sae: Any, sequences: Sequence[Sequence[int]],
                          latents: Sequence[int]) -> dict[str, list[list[Any]]]:
    """{latent: [[context, token, activation], ...]} for `latents` over `sequences` (anchor positions left out)."""
    top = TopActivations(sae.cfg.d_sae, TOP_TOKENS_PER_LATENT)
    with torch.no_grad():
        for start, x, where in hook_activations(lm, sae.cfg.metadata.hook_name, sequences):
            acts = sae.encode(x[where]).reshape(int(where.sum()), sae.cfg.d_sae).float().cpu()
            top.update(acts, [(start + row, column) for row, column in where.nonzero().tolist()])
    described = top.describe(lm, sequences)
    return {str(latent): described.get(str(latent), []) for latent in latents}
