"""The definitional control: the shipped noun list and the accuracy, on hand-made numbers."""

import pytest

from debiaskit.controls import build_control_prompts, definitional_acc, definitional_nouns
from debiaskit.data import TemplateFamily, gendered_words


def test_noun_list_is_balanced_and_unseen_by_fitting():
    nouns = definitional_nouns()
    assert sum(n.gender == "female" for n in nouns) == sum(n.gender == "male" for n in nouns) >= 10
    fitted = {word for pair in gendered_words().fit_pairs for word in pair}
    assert not fitted & {n.word for n in nouns}
    assert {"actress", "actor"} <= {n.word for n in nouns}


def test_control_prompts_use_the_template_family():
    family = TemplateFamily("t", "", ("The {job} said that", "Is {a_job} here?"), ("he",), ("she",))
    frame = build_control_prompts(definitional_nouns()[:2], family, templates=[1])
    assert list(frame["prompt"]) == ["Is an actress here?", "Is an actor here?"]
    assert list(frame["gender"]) == ["female", "male"] and list(frame["template"]) == [1, 1]


def test_definitional_acc_by_hand():
    # female noun right (0.7 > 0.2), female noun wrong (0.3 < 0.6), male noun right, male noun tied (counts as wrong)
    p_female = [0.7, 0.3, 0.1, 0.4]
    p_male = [0.2, 0.6, 0.5, 0.4]
    assert definitional_acc(p_male, p_female, ["female", "female", "male", "male"]) == pytest.approx(0.5)
    assert definitional_acc(p_male[:1], p_female[:1], ["female"]) == 1.0
