"""Decoding-time logit rebalancing: give female and male tokens equal next-token probability, touching nothing else.

A decoding-strategy modification in the sense of Gallegos et al. 2024, "Bias and Fairness in Large Language Models:
A Survey" (Computational Linguistics 50(3)), intra-processing mitigation; the idea is seed 003's: while the model
chooses its next token, compare the probability of the male and the female tokens and adjust the logits so the two
are balanced. No weight and no activation changes, only the output distribution.

With next-token logits l, Z = sum_v exp(l_v), group masses F = sum_{v female} exp(l_v) / Z, M likewise, T = F + M,
a target female fraction q (1/2; with counter_balance, see below) and strength s in [0, 1]:

    F' = (1 - s) F + s q T,     M' = (1 - s) M + s (1 - q) T        (so F' + M' = T)
    l_v += log(F' / F) for female v,   l_v += log(M' / M) for male v,   other logits unchanged.

The gendered logits then sum (in exp) to Z (F' + M') = Z T, so Z is unchanged: every other token keeps its
probability exactly, the gendered total stays T, and tokens within a group keep their ratios. s = 0 is the
identity and s = 1 gives F' = q T. Masses are mixed linearly rather than log-masses interpolated because only the
linear mix keeps F' + M' = T at every s. Everything is computed in log-space from logsumexp of the unnormalised
logits (Z cancels), in float64:

    log F' = logaddexp(log(1 - s) + log F, log s + log q + log T),   shift_female = log F' - log F.

A position where either group has zero probability is left as it is: an empty group cannot be scaled up.

counter_balance: q moves against the gendered tokens the model has already generated. With f and m the female and
male tokens it sampled among tokens[:, : i + 1] (what position i's prediction follows; `Batch.generated` marks them),
q = (m + 1) / (f + m + 2): 1/2 before it has said any, 2/3 after one male token, back to 1/2 after one of each (a
Laplace-smoothed mirror of its own history). The prompt's words are never counted: "The king said that" is the
user's text, and answering it with "she" would only be a wrong answer, not balance. Padding and the anchor are
special tokens, which never belong to a group, so they are never counted either.

Token groups come from word lists (datasets/gendered_tokens.json, or the file named by the `words` option): each
word's leading-space lower-case and capitalised spellings (as the evaluator's target words), single tokens only.
A spelling that is more than one token is skipped (its first token alone would also start other words) and a
word with no single-token spelling is listed in the `skipped_words` column. Spellings without a leading space
(a word after a newline or a quote) are not in the groups: as bare tokens they are also word pieces ("man" in
"Batman").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from debiaskit import DebiasKitError, FitContext, Intervention, LoadedModel, Method, Option, Touches, hookimpl
from debiaskit.model import Batch
from debiaskit.targets import target_tokens, word_variants
from debiaskit.word_lists import GenderedWordLists, read_gendered_word_lists


@dataclass(frozen=True)
class GenderedTokenGroups:
    female_ids: tuple[int, ...]
    male_ids: tuple[int, ...]
    skipped_words: tuple[str, ...]  # list words with no single-token spelling


def gendered_token_groups(tokenizer: Any, words: GenderedWordLists) -> GenderedTokenGroups:
    """The single-token spellings of each list's words, as token ids (never a special token)."""
    special = set(tokenizer.all_special_ids)
    groups: dict[str, list[int]] = {"female": [], "male": []}
    skipped: list[str] = []
    for group, group_words in (("female", words.female), ("male", words.male)):
        for word in group_words:
            ids = [tokenizer(variant, add_special_tokens=False)["input_ids"] for variant in word_variants(word)]
            single = [found[0] for found in ids if len(found) == 1 and found[0] not in special]
            groups[group] += single
            if not single:
                skipped.append(word)
    for group, ids in groups.items():
        if not ids:
            raise DebiasKitError(f"no {group} word in {words.source} is a single token for this tokenizer; "
                                 "add words the model emits as one token (e.g. she, he)")
    shared = set(groups["female"]) & set(groups["male"])
    if shared:
        raise DebiasKitError(f"{words.source}: the female and the male list share the token "
                             f"{tokenizer.decode([min(shared)])!r}; a token can be in one group only")
    return GenderedTokenGroups(tuple(dict.fromkeys(groups["female"])), tuple(dict.fromkeys(groups["male"])),
                               tuple(skipped))


def rebalance(logits: torch.Tensor, female_ids: torch.Tensor, male_ids: torch.Tensor, strength: float,
              female_target: torch.Tensor) -> torch.Tensor:
    """The module formula on logits [..., vocab] with target female fractions `female_target` [...] in (0, 1)."""
    female_logits, male_logits = logits[..., female_ids].double(), logits[..., male_ids].double()
    log_female, log_male = torch.logsumexp(female_logits, -1), torch.logsumexp(male_logits, -1)  # log(F Z), log(M Z)
    log_total = torch.logaddexp(log_female, log_male)
    log_keep = math.log1p(-strength) if strength < 1 else -math.inf
    log_move = math.log(strength) if strength > 0 else -math.inf
    target = female_target.double()
    new_female = torch.logaddexp(log_keep + log_female, log_move + torch.log(target) + log_total)
    new_male = torch.logaddexp(log_keep + log_male, log_move + torch.log1p(-target) + log_total)
    both_present = torch.isfinite(log_female) & torch.isfinite(log_male)
    female_shift = torch.where(both_present, new_female - log_female, 0.0).unsqueeze(-1)
    male_shift = torch.where(both_present, new_male - log_male, 0.0).unsqueeze(-1)
    balanced = logits.clone()
    balanced[..., female_ids] = (female_logits + female_shift).to(logits.dtype)
    balanced[..., male_ids] = (male_logits + male_shift).to(logits.dtype)
    return balanced


def counter_balanced_female_target(tokens: torch.Tensor, generated: torch.Tensor, female_ids: torch.Tensor,
                                   male_ids: torch.Tensor) -> torch.Tensor:
    """[batch, pos] q = (m + 1) / (f + m + 2), counting the female (f) and male (m) tokens in tokens[:, : i + 1]
    that are `generated` [batch, pos] (sampled by the model, not the prompt's)."""
    female_so_far = (torch.isin(tokens, female_ids) & generated).cumsum(-1).double()
    male_so_far = (torch.isin(tokens, male_ids) & generated).cumsum(-1).double()
    return (male_so_far + 1) / (female_so_far + male_so_far + 2)


@dataclass(frozen=True)
class Rebalancer:
    """The logits transform: (logits [batch, pos, vocab], batch) -> rebalanced logits."""

    female_ids: torch.Tensor  # [n_female] long
    male_ids: torch.Tensor  # [n_male] long
    strength: float
    counter_balance: bool

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        female_ids, male_ids = self.female_ids.to(logits.device), self.male_ids.to(logits.device)
        if self.counter_balance:
            target = counter_balanced_female_target(batch.tokens.to(logits.device), batch.generated.to(logits.device),
                                                    female_ids, male_ids)
        else:
            target = torch.full(logits.shape[:-1], 0.5, dtype=torch.float64, device=logits.device)
        return rebalance(logits, female_ids, male_ids, self.strength, target)


class LogitRebalance(Method):
    name = "logit-rebalance"
    description = ("decoding-time rebalancing: equal next-token probability for female and male tokens, "
                   "nothing else changed")
    options = (
        Option("strength", float, 1.0, "0 = off, 1 = female and male tokens get equal probability",
               minimum=0, maximum=1),
        Option("counter_balance", bool, False, "aim against the gendered tokens the model already generated, "
                                                "not at 50/50"),
        Option("words", str, "", "JSON file {\"female\": [...], \"male\": [...]} "
                                 "(default: datasets/gendered_tokens.json)"),
    )
    strength_knob = "strength"

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self.words = read_gendered_word_lists(self.settings["words"] or None)
        self.coverage: dict[str, Any] = {}

    def fit(self, context: FitContext) -> None:
        """Learns nothing; records how the groups cover the template family's target tokens."""
        groups = gendered_token_groups(context.model.tokenizer, self.words)
        targets = target_tokens(context.model.tokenizer, context.templates)
        outside = (set(targets.female_ids) - set(groups.female_ids)) | (set(targets.male_ids) - set(groups.male_ids))
        self.coverage = {"female_tokens": len(groups.female_ids), "male_tokens": len(groups.male_ids),
                         "targets_outside_groups": len(outside), "skipped_words": ",".join(groups.skipped_words)}

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        groups = gendered_token_groups(lm.tokenizer, self.words)
        ids = [torch.tensor(group, dtype=torch.long, device=lm.device)
               for group in (groups.female_ids, groups.male_ids)]
        yield Intervention(logits_transform=Rebalancer(*ids, self.settings["strength"],
                                                       self.settings["counter_balance"]))

    def touches(self, lm: LoadedModel) -> Touches:
        return Touches()  # a logits transform only

    def details(self) -> dict[str, Any]:
        return dict(self.coverage)


@hookimpl
def register_methods(register):
    register(LogitRebalance)
