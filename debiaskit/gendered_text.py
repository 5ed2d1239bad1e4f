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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from debiaskit.controls import definitional_acc
from debiaskit.data import project_data_dir
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import BaselineText, ScoredSequences
from debiaskit.metrics import kl_per_position
from debiaskit.model import LoadedModel
from debiaskit.targets import TargetTokens

GENDERED_TEXT_FILE = "gendered_text.txt"


@dataclass(frozen=True)
class GenderedCost:
    kl: float  # mean over positions of KL(P_none || P_method), nats
    agreement_acc: float  # share of pronoun positions whose own pronoun group is strictly more probable
    agreement_share: float  # mean share of the own pronoun group in the two groups' probability
    positions: int = 0  # the predictions kl is a mean over
    pronouns: int = 0  # the pronoun positions agreement_acc and agreement_share are means over

    @staticmethod
    def pooled(parts: Sequence[GenderedCost]) -> GenderedCost:
        """The costs of disjoint parts of the passages as one, each mean weighted by its part's count."""
        positions, pronouns = sum(part.positions for part in parts), sum(part.pronouns for part in parts)
        with_pronouns = [part for part in parts if part.pronouns]  # a part without any has no agreement to weigh
        return GenderedCost(
            kl=sum(part.kl * part.positions for part in parts) / positions,
            agreement_acc=sum(part.agreement_acc * part.pronouns for part in with_pronouns) / pronouns,
            agreement_share=sum(part.agreement_share * part.pronouns for part in with_pronouns) / pronouns,
            positions=positions, pronouns=pronouns)


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
        # (passage, position) of each prediction whose next token is a target pronoun; a pronoun spelt as several
        # tokens is not a target, so skipped
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

    def _compare(self, scored: ScoredSequences) -> GenderedCost:
        kl_sum, count = 0.0, 0
        p_male, p_female, genders = [], [], []
        for tokens, base, method in scored:
            kl_sum += float(kl_per_position(base, method).double().sum())
            count += len(tokens) - 1
            # the text's own next token says which group is right
            gender = pronoun_genders(np.array(tokens[1:], dtype=np.int64), self.targets)
            probs = method[torch.from_numpy(gender != "")].double().exp()  # [pronoun positions, vocab]
            p_male.append(probs[:, list(self.targets.male_ids)].sum(-1).numpy())
            p_female.append(probs[:, list(self.targets.female_ids)].sum(-1).numpy())
            genders.append(gender[gender != ""])
        p_male_all, p_female_all, gender_all = np.concatenate(p_male), np.concatenate(p_female), np.concatenate(genders)
        if not len(gender_all):  # a part of the passages with no pronoun: nothing to agree with
            return GenderedCost(kl=kl_sum / count, agreement_acc=float("nan"), agreement_share=float("nan"),
                                positions=count)
        return GenderedCost(kl=kl_sum / count, agreement_acc=definitional_acc(p_male_all, p_female_all, gender_all),
                            agreement_share=own_group_share(p_male_all, p_female_all, gender_all),
                            positions=count, pronouns=len(gender_all))
