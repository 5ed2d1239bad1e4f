"""Batched scoring: next-token gender probabilities on occupation prompts, and the cost on neutral text.

Prompts run in left-padded, attention-masked batches (sorted by length so padding stays small); an
applied method's logits transform is honoured at every position it sees.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from debiaskit.data import Occupation, TemplateFamily, project_data_dir
from debiaskit.errors import DebiasKitError
from debiaskit.method import LogitsTransform
from debiaskit.metrics import kl_per_position
from debiaskit.model import LoadedModel
from debiaskit.targets import TargetTokens

DEFAULT_BATCH_SIZE = 64
# Where only the last position is unembedded (a declared method's prompts, `debiaskit.reuse`), a batch holds logits
# [batch, 1, vocab], not [batch, pos, vocab], so it takes this many times `batch_size` prompts: fewer forwards, each
# reading the weights once, and more prompts sharing each beginning (`debiaskit.shared_prefixes`). The demo's
# 8-method compare (benchmarks/compare_breakdown.py, 2-core CPU): 229 s with 1, 208 s with 4; peak 4.49, 4.66 GiB.
LAST_POSITION_BATCHES = 4
NEUTRAL_TEXT_FILE = "neutral_text.txt"
NEUTRAL_CHUNK_TOKENS = 128


def build_prompts(jobs: Sequence[Occupation], family: TemplateFamily,
                  templates: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (job, template): job, group, pct_women, template (its index), prompt."""
    indices = range(len(family.templates)) if templates is None else templates
    return pd.DataFrame(
        [
            {"job": job.name, "group": job.group, "pct_women": job.pct_women, "template": index,
             "prompt": family.prompt(family.templates[index], job.name)}
            for job in jobs
            for index in indices
        ]
    )


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """The indices of `sequences` sorted by length and cut into batches of `batch_size`, so each batch pads
    little; callers put each batch's results back at these indices, keeping input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def next_token_logits(lm: LoadedModel, sequences: Sequence[Sequence[int]], transform: LogitsTransform | None,
                      batch_size: int = DEFAULT_BATCH_SIZE, label: str = "scoring") -> torch.Tensor:
    """Last-position logits [n, vocab] (float32, on the CPU) for each token sequence, in input order."""
    results: list[torch.Tensor | None] = [None] * len(sequences)
    last_position_only = lm.reuse is not None and lm.reuse.last_position_only
    batches = length_sorted_batches(sequences, batch_size * (LAST_POSITION_BATCHES if last_position_only else 1))
    with torch.no_grad():
        for rows in tqdm(batches, desc=label, file=sys.stderr, leave=False, disable=len(batches) < 2):
            batch = lm.make_batch([sequences[i] for i in rows])
            logits = lm.run(batch)
            if transform is not None:
                logits = transform(logits, batch)
            last = logits[:, -1].float().cpu()
            for position, row in enumerate(rows):
                results[row] = last[position]
    return torch.stack(results)  # type: ignore[arg-type]


def score_prompts(lm: LoadedModel, prompts: Sequence[str], targets: TargetTokens, transform: LogitsTransform | None,
                  batch_size: int = DEFAULT_BATCH_SIZE, label: str = "scoring") -> tuple[np.ndarray, np.ndarray]:
    """(p_male, p_female) per prompt: next-token probability summed over each group's target tokens."""
    logits = next_token_logits(lm, [lm.encode(p) for p in prompts], transform, batch_size, label)
    probs = torch.softmax(logits.double(), dim=-1)
    p_male = probs[:, list(targets.male_ids)].sum(-1).numpy()
    p_female = probs[:, list(targets.female_ids)].sum(-1).numpy()
    return p_male, p_female


def sequence_log_probs(lm: LoadedModel, sequences: Sequence[Sequence[int]], transform: LogitsTransform | None,
                       batch_size: int) -> list[torch.Tensor]:
    """Per sequence, in input order: the log-probs [len - 1, vocab] (float32, CPU) of each prediction whose next
    token is in the sequence (padding left out), scored `batch_size` sequences at a time, sorted by length."""
    results: list[torch.Tensor | None] = [None] * len(sequences)
    with torch.no_grad():
        for rows in length_sorted_batches(sequences, batch_size):
            batch = lm.make_batch([sequences[i] for i in rows], score_every_position=True)
            logits = lm.run(batch)
            if transform is not None:
                logits = transform(logits, batch)
            width = logits.shape[1]
            # row by row, over its own positions only: no padding normalised, no second copy of the batch's logits
            for position, row in enumerate(rows):
                results[row] = torch.log_softmax(logits[position, width - len(sequences[row]):-1].float(), dim=-1).cpu()
    return results  # type: ignore[return-value]


@dataclass(frozen=True)
class NeutralCost:
    kl: float  # mean over positions of KL(P_none || P_method), nats
    nll: float  # mean next-token negative log-likelihood, nats
    positions: int = 0  # the predictions both are means over

    @staticmethod
    def pooled(parts: Sequence[NeutralCost]) -> NeutralCost:
        """The costs of disjoint parts of a text as one, each mean weighted by its part's positions."""
        total = sum(part.positions for part in parts)
        return NeutralCost(kl=sum(part.kl * part.positions for part in parts) / total,
                           nll=sum(part.nll * part.positions for part in parts) / total, positions=total)


# per scored sequence: (its token ids, the baseline's log-probs [len - 1, vocab], the method's log-probs)
ScoredSequences = list[tuple[Sequence[int], torch.Tensor, torch.Tensor]]
CostT = TypeVar("CostT")


class BaselineText(Generic[CostT]):
    """Token sequences (`self.sequences`, scored `self.batch_size` at a time) whose baseline log-probabilities are
    kept once per run; each `cost` scores them, or one part of them, with a method applied and `_compare`s."""

    lm: LoadedModel
    sequences: list[list[int]]
    batch_size: int
    _baseline: list[torch.Tensor] | None = None  # per sequence, the baseline's log-probs [len - 1, vocab]

    def _compare(self, scored: ScoredSequences) -> CostT:
        raise NotImplementedError

    def record_baseline(self) -> CostT:
        """Score the model as it is now (no method applied) and keep its log-probs as the reference for `cost`."""
        self._baseline = sequence_log_probs(self.lm, self.sequences, None, self.batch_size)
        return self._compare(list(zip(self.sequences, self._baseline, self._baseline)))

    def cost(self, transform: LogitsTransform | None, part: int = 0, n_parts: int = 1) -> CostT:
        """The cost against the baseline with whatever is applied now, on part `part` of `n_parts` (sequence i is in
        part i % n_parts; a method fitted per fold scores each sequence in one fold only)."""
        if self._baseline is None:
            raise RuntimeError(f"call {type(self).__name__}.record_baseline() with no method applied first")
        if not 0 <= part < min(n_parts, len(self.sequences)):
            raise ValueError(f"part {part} of {n_parts} of {len(self.sequences)} sequences holds none")
        indices = range(part, len(self.sequences), n_parts)
        scored = sequence_log_probs(self.lm, [self.sequences[i] for i in indices], transform, self.batch_size)
        return self._compare([(self.sequences[i], self._baseline[i], method) for i, method in zip(indices, scored)])


class NeutralText(BaselineText[NeutralCost]):
    """The shipped gender-free text, tokenised once: KL from the baseline and the model's own NLL on it."""

    def __init__(self, lm: LoadedModel, text: str | None = None, chunk_tokens: int = NEUTRAL_CHUNK_TOKENS,
                 batch_size: int = 16) -> None:
        text = text if text is not None else (project_data_dir() / NEUTRAL_TEXT_FILE).read_text(encoding="utf-8")
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        anchor = [lm.anchor_token_id] if lm.anchor_token_id is not None else []
        body = chunk_tokens - len(anchor)
        self.lm = lm
        self.sequences = [anchor + ids[i:i + body] for i in range(0, len(ids), body)]
        self.n_tokens = len(ids)
        self.batch_size = batch_size

    def _compare(self, scored: ScoredSequences) -> NeutralCost:
        kl_sum = nll_sum = 0.0
        count = 0
        for tokens, base, method in scored:
            nll = -method.gather(-1, torch.tensor(tokens[1:]).unsqueeze(-1)).squeeze(-1)
            kl_sum += float(kl_per_position(base, method).double().sum())
            nll_sum += float(nll.double().sum())
            count += len(tokens) - 1
        return NeutralCost(kl=kl_sum / count, nll=nll_sum / count, positions=count)


def continuation_log_likelihoods(lm: LoadedModel, sequences: Sequence[Sequence[int]],
                                 continuation_lengths: Sequence[int], transform: LogitsTransform | None,
                                 batch_size: int = DEFAULT_BATCH_SIZE,
                                 label: str = "log-likelihood") -> tuple[np.ndarray, np.ndarray]:
    """Per token sequence (anchor first), in input order: the log-probability (float64 [n]) of its last
    `continuation_lengths[i]` tokens, each given every token before it, and whether each of those tokens is its
    prediction's argmax (bool [n]: greedy decoding from the rest would produce them).

    Batched as `next_token_logits` (sorted by length, left-padded); the target log-probs are gathered inside the
    batch loop, so only one batch's logits are ever held. log p = logit - logsumexp(logits), after the transform.
    """
    if len(continuation_lengths) != len(sequences):
        raise DebiasKitError(f"{len(continuation_lengths)} continuation lengths for {len(sequences)} sequences")
    for sequence, length in zip(sequences, continuation_lengths):
        if not 0 <= length < len(sequence):
            raise DebiasKitError(f"cannot score the last {length} tokens of a {len(sequence)}-token sequence: the "
                                 "anchor token is never scored, so at most all but the first")
    longest = max((len(s) for s in sequences), default=0)
    if longest > lm.model.cfg.n_ctx:
        raise DebiasKitError(f"a sequence of {longest} tokens is longer than {lm.name} takes ({lm.model.cfg.n_ctx})")
    log_likelihoods = np.zeros(len(sequences))
    greedy = np.ones(len(sequences), dtype=bool)
    batches = length_sorted_batches(sequences, batch_size)
    with torch.no_grad():
        for rows in tqdm(batches, desc=label, file=sys.stderr, leave=False, disable=len(batches) < 2):
            batch = lm.make_batch([sequences[i] for i in rows], score_every_position=True)
            logits = lm.run(batch)
            if transform is not None:
                logits = transform(logits, batch)
            logits = logits[:, :-1].float()  # [batch, pos-1, vocab]: logits[:, i] predicts tokens[:, i + 1]
            targets = batch.tokens[:, 1:]
            token_log_probs = (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                               - torch.logsumexp(logits, dim=-1)).double()
            lengths = torch.tensor([continuation_lengths[i] for i in rows], device=targets.device)
            scored = torch.arange(targets.shape[1], device=targets.device) >= targets.shape[1] - lengths.unsqueeze(1)
            sums = torch.where(scored, token_log_probs, 0.0).sum(-1).cpu().numpy()
            argmax_hit = ((logits.argmax(-1) == targets) | ~scored).all(-1).cpu().numpy()
            log_likelihoods[rows] = sums
            greedy[rows] = argmax_hit
    return log_likelihoods, greedy


def sequence_log_likelihoods(lm: LoadedModel, sequences: Sequence[Sequence[int]], transform: LogitsTransform | None,
                             batch_size: int = DEFAULT_BATCH_SIZE, label: str = "log-likelihood") -> np.ndarray:
    """float64 [n], in input order: for each token sequence (anchor first), sum over t >= 1 of
    log p(token_t | tokens_<t), with the transform applied to the logits; padding is never scored."""
    return continuation_log_likelihoods(lm, sequences, [len(s) - 1 for s in sequences], transform, batch_size,
                                        label)[0]
