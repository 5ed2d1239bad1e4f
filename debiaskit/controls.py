"""The definitional control: removing a stereotype must not remove the meaning of "actress".

Nouns whose gender is part of their meaning (datasets/definitional_nouns.json, balanced [female, male] pairs, none
of them a word any method is fitted on) go into the same templates as the jobs ("The actress said that"). A prompt
counts as correct when the pronoun group of the noun's gender gets the higher next-token probability:

  definitional_acc = share of control prompts with P_<noun's gender> > P_<other gender>
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from debiaskit.data import TemplateFamily, gendered_words, project_data_dir
from debiaskit.errors import DebiasKitError

DEFINITIONAL_NOUNS_FILE = "definitional_nouns.json"


@dataclass(frozen=True)
class DefinitionalNoun:
    word: str
    gender: str  # "female" or "male"


def definitional_nouns() -> tuple[DefinitionalNoun, ...]:
    """The shipped balanced list; a word that is also a fit pair would make the control circular, so it is refused."""
    path = project_data_dir() / DEFINITIONAL_NOUNS_FILE
    pairs = json.loads(path.read_text(encoding="utf-8"))["pairs"]
    fitted = {word for pair in gendered_words().fit_pairs for word in pair}
    overlap = sorted(fitted & {word for pair in pairs for word in pair})
    if overlap:
        raise DebiasKitError(f"{path}: {overlap[0]!r} is also a fit pair in gendered_words.json; control nouns must be unseen")
    return tuple(DefinitionalNoun(word, gender) for female, male in pairs for word, gender in ((female, "female"), (male, "male")))


def build_control_prompts(nouns: Sequence[DefinitionalNoun], family: TemplateFamily,
                          templates: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (noun, template): noun, gender, template (its index in the family), prompt."""
    indices = range(len(family.templates)) if templates is None else templates
    return pd.DataFrame(
        [
            {"noun": noun.word, "gender": noun.gender, "template": index, "prompt": family.prompt(family.templates[index], noun.word)}
            for noun in nouns
            for index in indices
        ]
    )


def definitional_acc(p_male: np.ndarray, p_female: np.ndarray, gender: np.ndarray) -> float:
    """Share of prompts where the noun's own pronoun group is strictly more probable (a tie counts as wrong)."""
    p_male, p_female, gender = np.asarray(p_male, dtype=float), np.asarray(p_female, dtype=float), np.asarray(gender)
    if len(gender) == 0:
        return float("nan")
    correct = np.where(gender == "female", p_female > p_male, p_male > p_female)
    return float(correct.mean())
