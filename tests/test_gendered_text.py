"""The cost on gendered text: pronoun positions, agreement on hand-made probabilities, and the shipped passages."""

import numpy as np
import pytest
import torch

from debiaskit import DebiasKitError
from debiaskit.controls import definitional_acc
from debiaskit.data import project_data_dir
from debiaskit.evaluator import NeutralCost, NeutralText
from debiaskit.gendered_text import GenderedCost, GenderedText, own_group_share, pronoun_genders, split_passages
from debiaskit.targets import TargetTokens, pronoun_targets

# row 0 is 4 tokens shorter than row 1, so the batched pass pads it; '"She"' is not the single token ' She' and
# ' himself' / ' herself' are not targets, so none of them is a pronoun position
TWO_PASSAGES = (
    "The king said that he was tired, so his guards let him rest by himself.\n\n"
    'Mary smiled, because she knew that "She" was her own name for herself, and hers alone.\n'
)


def swap_groups(targets: TargetTokens):
    """A logits transform that moves each male target's logit to a female target and back. Any one-to-one pairing
    of the two groups swaps their summed probabilities exactly, since the softmax normaliser is unchanged."""
    assert len(targets.male_ids) == len(targets.female_ids)
    male, female = torch.tensor(targets.male_ids), torch.tensor(targets.female_ids)

    def swapped(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        order = torch.arange(logits.shape[-1])
        order[male], order[female] = female, male
        return logits[..., order]

    return swapped


def test_agreement_on_hand_made_probabilities_both_ways():
    targets = TargetTokens(male_ids=(10, 11), female_ids=(20, 21), skipped_variants=())
    gender = pronoun_genders(np.array([11, 20, 21, 5]), targets)
    assert gender.tolist() == ["male", "female", "female", ""]
    gender = gender[:3]
    p_male, p_female = np.array([0.6, 0.2, 0.3]), np.array([0.3, 0.5, 0.3])  # right, right, a tie (wrong)
    assert definitional_acc(p_male, p_female, gender) == pytest.approx(2 / 3)
    assert definitional_acc(p_female, p_male, gender) == 0.0  # swapped: both wrong, and the tie stays wrong
    # graded: 0.6/0.9, 0.5/0.7, 0.3/0.6 -> (2/3 + 5/7 + 1/2) / 3
    assert own_group_share(p_male, p_female, gender) == pytest.approx((2 / 3 + 5 / 7 + 0.5) / 3)


def test_passages_split_on_blank_lines_only():
    assert split_passages("One line\nwrapped here.\n\n \n\nTwo.\n") == ["One line wrapped here.", "Two."]


def test_pronoun_positions_and_baseline_on_the_tiny_model(tiny_lm):
    targets = pronoun_targets(tiny_lm.tokenizer)
    gendered = GenderedText(tiny_lm, targets, text=TWO_PASSAGES)
    assert len({len(sequence) for sequence in gendered.sequences}) == 2
    # (passage, position): the prediction at `position` (anchor = 0) is of the pronoun that follows it
    assert gendered.pronoun_positions == ((0, 4), (0, 9), (0, 12), (1, 4), (1, 11), (1, 18))
    assert gendered.pronoun_genders.tolist() == ["male"] * 3 + ["female"] * 3
    assert gendered.n_pronouns == 6
    words = [tiny_lm.tokenizer.decode([gendered.sequences[p][i + 1]]) for p, i in gendered.pronoun_positions]
    assert words == [" he", " his", " him", " she", " her", " hers"]

    baseline = gendered.record_baseline()
    assert baseline.kl == pytest.approx(0.0, abs=1e-9)
    p_male, p_female = [], []
    with torch.no_grad():  # one passage at a time, so no padding
        for passage, position in gendered.pronoun_positions:
            logits = tiny_lm.model(torch.tensor([gendered.sequences[passage]]))[0, position].double()
            probs = torch.softmax(logits, -1)
            p_male.append(float(probs[list(targets.male_ids)].sum()))
            p_female.append(float(probs[list(targets.female_ids)].sum()))
    assert baseline.agreement_acc == definitional_acc(np.array(p_male), np.array(p_female), gendered.pronoun_genders)
    assert baseline.agreement_share == pytest.approx(own_group_share(np.array(p_male), np.array(p_female),
                                                                     gendered.pronoun_genders))


def test_swapping_the_pronoun_groups_inverts_agreement_and_costs_kl(tiny_lm):
    shipped = (project_data_dir() / "gendered_text.txt").read_text(encoding="utf-8")
    gendered = GenderedText(tiny_lm, pronoun_targets(tiny_lm.tokenizer), text="\n\n".join(split_passages(shipped)[:32]))
    baseline = gendered.record_baseline()
    swapped = gendered.cost(swap_groups(gendered.targets))
    assert swapped.kl > 0
    assert swapped.agreement_acc == pytest.approx(1 - baseline.agreement_acc, abs=0.01)  # exact but for ties


def test_a_text_without_pronoun_positions_is_rejected(tiny_lm):
    with pytest.raises(DebiasKitError, match=r"the given text has no pronoun positions.*' she'"):
        GenderedText(tiny_lm, pronoun_targets(tiny_lm.tokenizer), text="The river ran.\n\nIt rained all day.")


def test_cost_needs_a_baseline(tiny_lm):
    gendered = GenderedText(tiny_lm, pronoun_targets(tiny_lm.tokenizer), text=TWO_PASSAGES)
    with pytest.raises(RuntimeError, match="record_baseline"):
        gendered.cost(None)


@pytest.mark.model
def test_smollm2_follows_the_antecedents_of_the_shipped_passages(smollm2):
    gendered = GenderedText(smollm2, pronoun_targets(smollm2.tokenizer))
    assert gendered.n_pronouns >= 150
    assert 0.4 <= float(np.mean(gendered.pronoun_genders == "female")) <= 0.6
    baseline = gendered.record_baseline()
    assert baseline.kl == pytest.approx(0.0, abs=1e-9)
    assert baseline.agreement_acc >= 0.8


def test_costs_of_parts_pool_to_the_cost_of_the_whole(tiny_lm):
    assert NeutralCost.pooled([NeutralCost(1.0, 2.0, 1), NeutralCost(4.0, 5.0, 3)]) == NeutralCost(3.25, 4.25, 4)
    halves = [GenderedCost(1.0, 0.5, 0.6, 2, 2), GenderedCost(3.0, float("nan"), float("nan"), 6, 0)]
    assert GenderedCost.pooled(halves) == GenderedCost(2.5, 0.5, 0.6, 8, 2)  # a part without pronouns: no weight

    shipped = (project_data_dir() / "gendered_text.txt").read_text(encoding="utf-8")
    halved = lambda logits, batch: logits * 0.5  # noqa: E731
    texts = [GenderedText(tiny_lm, pronoun_targets(tiny_lm.tokenizer), text="\n\n".join(split_passages(shipped)[:7])),
             NeutralText(tiny_lm, text="The river runs past the old mill and the bridge. " * 9, chunk_tokens=24)]
    for text in texts:
        text.record_baseline()
        whole = text.cost(halved)
        parts = [text.cost(halved, part, 3) for part in range(3)]
        assert sum(part.positions for part in parts) == whole.positions
        for name, value in vars(type(whole).pooled(parts)).items():
            assert value == pytest.approx(getattr(whole, name), rel=1e-5), f"{type(text).__name__} {name}"
    with pytest.raises(ValueError, match="holds none"):
        texts[1].cost(halved, len(texts[1].sequences), 2 * len(texts[1].sequences))
