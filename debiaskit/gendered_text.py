"""The cost on gendered text: does the model still follow "The king said that he ..." with a method applied?

The neutral-text kl (`debiaskit.evaluator.NeutralText`) is measured on gender-free text, so a method that breaks
pronoun agreement pays nothing there. Here the text is short passages (datasets/gendered_text.txt) whose gender is
fixed by their own antecedents, one gender per passage ("Mrs. Dashwood ... she ... her"), so the right pronoun at
every pronoun position is the one the text has. Each passage is its own sequence, the model's anchor token first:

  kl_gendered   = mean over token positions of KL(P_none || P_method), nats, on the gendered passages
  agreement_acc = share of pronoun positions (a position whose next token is a single-token target pronoun, e.g.
                  ' he', ' She') where that pronoun's group (male_ids or female_ids) gets more summed next-token
                  probability than the other group; a tie counts as wrong (`controls.definitional_acc`'s rule)
  agreement_share = mean over the same positions of P_right / (P_right + P_wrong), the graded form: a method that
                  pulls every pronoun toward 50:50 but keeps the sign passes agreement_acc, not this

Swapping he and she costs little on neutral text but takes agreement_acc to 1 - its baseline, and an exact tie
between the groups (a method that equalises them) scores 0 here, not 0.5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from debiaskit.controls import definitional_acc
from debiaskit.data import project_data_dir
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import BaselineText, ScoredBatches
from debiaskit.metrics import kl_per_position
from debiaskit.model import LoadedModel
from debiaskit.targets import TargetTokens

GENDERED_TEXT_FILE = "gendered_text.txt"


@dataclass(frozen=True)
class GenderedCost:
    kl: float  # mean over positions of KL(P_none || P_method), nats
    agreement_acc: float  # share of pronoun positions whose own pronoun group is strictly more probable
    agreement_share: float  # mean share of the own pronoun group in the two groups' probability


def own_group_share(p_male: np.ndarray, p_female: np.ndarray, gender: np.ndarray) -> float:
    """Mean over positions of P_own / (P_male + P_female), the own group given by `gender` ("female"/"male")."""
    p_male, p_female = np.asarray(p_male, dtype=float), np.asarray(p_female, dtype=float)
    own = np.where(np.asarray(gender) == "female", p_female, p_male)
    return float(np.mean(own / (p_male + p_female))) if len(own) else float("nan")


def split_passages(text: str) -> list[str]:
    """Passages separated by blank lines; line breaks and runs of spaces inside a passage become one space."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def pronoun_genders(next_tokens: np.ndarray, targets: TargetTokens) -> np.ndarray:
    """Same shape as `next_tokens`: "female" or "male" where the token is a target pronoun, "" elsewhere."""
    female, male = np.isin(next_tokens, targets.female_ids), np.isin(next_tokens, targets.male_ids)
    return np.where(female, "female", np.where(male, "male", ""))


class GenderedText(BaselineText[GenderedCost]):
    """The gendered passages, tokenised once; the baseline's log-probabilities are computed once per run."""

    def __init__(self, lm: LoadedModel, targets: TargetTokens, text: str | None = None, batch_size: int = 16) -> None:
        source = "the given text"
        if text is None:
            path = project_data_dir() / GENDERED_TEXT_FILE
            text, source = path.read_text(encoding="utf-8"), str(path)
        self.lm, self.targets, self.batch_size = lm, targets, batch_size
        self.passages = split_passages(text)
        self.sequences = [lm.encode(passage) for passage in self.passages]
        # (passage, position) of each prediction whose next token is a target pronoun, in the order `_compare`
        # meets them (batches in order, row by row); a pronoun spelt as several tokens is not a target, so skipped
        found = [(index, position, gender) for index, sequence in enumerate(self.sequences)
                 for position, gender in enumerate(pronoun_genders(np.array(sequence[1:], dtype=np.int64), targets))
                 if gender]
        if not found:
            spellings = ", ".join(repr(lm.tokenizer.decode([i])) for i in targets.female_ids + targets.male_ids)
            raise DebiasKitError(
                f"{source} has no pronoun positions: none of its {len(self.passages)} passages (separated by blank "
                f"lines) has a target pronoun after its first token; accepted: passages that name a person and then "
                f"refer to them with pronouns that are one token each ({spellings})"
            )
        self.pronoun_positions = tuple((index, position) for index, position, _ in found)
        self.pronoun_genders = np.array([gender for _, _, gender in found])

    @property
    def n_pronouns(self) -> int:
        return len(self.pronoun_positions)

    def _compare(self, scored: ScoredBatches) -> GenderedCost:
        assert self._baseline is not None
        kl_sum, count = 0.0, 0
        p_male, p_female, genders = [], [], []
        for base, (batch, method, valid) in zip(self._baseline, scored):
            kl_sum += float(kl_per_position(base, method)[valid].double().sum())
            count += int(valid.sum())
            # the text's own next token says which group is right; padding never counts
            gender = pronoun_genders(batch.tokens[:, 1:].cpu().numpy(), self.targets)
            at = (gender != "") & valid.numpy()
            probs = method[torch.from_numpy(at)].double().exp()  # [pronoun positions in batch, vocab]
            p_male.append(probs[:, list(self.targets.male_ids)].sum(-1).numpy())
            p_female.append(probs[:, list(self.targets.female_ids)].sum(-1).numpy())
            genders.append(gender[at])
        p_male_all, p_female_all, gender_all = np.concatenate(p_male), np.concatenate(p_female), np.concatenate(genders)
        return GenderedCost(kl=kl_sum / count, agreement_acc=definitional_acc(p_male_all, p_female_all, gender_all),
                            agreement_share=own_group_share(p_male_all, p_female_all, gender_all))
