"""occupation-gate: the gated edit against values worked out by hand, the fitted u, c and detector, and what a fitted
method changes in a real forward (the gated tokens' gender component, nothing at the anchor, no hook left after)."""

from __future__ import annotations

import pytest
import torch

from debiaskit import DebiasKitError, FitContext, resid_post
from debiaskit.concepts import job_examples, read_at_positions
from debiaskit.data import Occupation, TemplateFamily
from debiaskit.plugins.occupation_gate import Gate, OccupationGate, fit_gate

FAMILY = TemplateFamily("t", "test", ("The {job} said that", "The {job} went home because"), ("he",), ("she",))
JOBS = (Occupation("nurse", "female", 90.0), Occupation("secretary", "female", 92.0),
        Occupation("carpenter", "male", 3.0), Occupation("pilot", "male", 5.0))


def hand_gate(bias: float) -> Gate:
    # u = e0, neutral point 1, a detector that reads nothing but its bias: g = sigmoid(bias) everywhere
    return Gate(torch.tensor([1.0, 0.0, 0.0]), 1.0, torch.zeros(3), bias)


def test_an_open_gate_moves_the_gender_component_to_the_neutral_point_and_nothing_else():
    resid = torch.tensor([[3.0, 2.0, 5.0], [-1.0, 4.0, 0.0]])
    # g = sigmoid(30) = 1 - 9e-14: h . u goes from 3 to 1 and from -1 to 1; the other coordinates stay
    torch.testing.assert_close(hand_gate(30.0).edit(resid, 1.0), torch.tensor([[1.0, 2.0, 5.0], [1.0, 4.0, 0.0]]))
    # half the strength: half the way, 3 -> 2 and -1 -> 0
    torch.testing.assert_close(hand_gate(30.0).edit(resid, 0.5), torch.tensor([[2.0, 2.0, 5.0], [0.0, 4.0, 0.0]]))


def test_the_gate_scales_the_edit_and_a_closed_gate_leaves_the_token_alone():
    resid = torch.tensor([[3.0, 2.0, 5.0]])
    # g = sigmoid(0) = 0.5: 3 - 0.5 * (3 - 1) = 2
    torch.testing.assert_close(hand_gate(0.0).edit(resid, 1.0), torch.tensor([[2.0, 2.0, 5.0]]))
    closed = hand_gate(-40.0).edit(resid, 1.0)  # g = 4e-18
    torch.testing.assert_close(closed, resid, rtol=0, atol=1e-12)


def test_fit_gate_direction_neutral_point_and_detector_by_hand():
    # fit words: female at (2, 0, 0), male at (0, 0, 0), so u = e0; jobs along e0 at 1.5, 1.1 (female-dominated)
    # and 0.3, -0.1 (male-dominated): c = (1.3 + 0.1) / 2 = 0.7. Jobs sit at +1 on e2, every other token at -1,
    # so the detector can tell them apart only by e2.
    jobs = torch.tensor([[1.5, 0.2, 1.0], [1.1, -0.2, 1.0], [0.3, 0.1, 1.0], [-0.1, -0.1, 1.0]], dtype=torch.float64)
    female_job = torch.tensor([True, True, False, False])
    words = torch.tensor([[2.0, 0.1, -1.0], [0.0, -0.1, -1.0], [2.0, -0.1, -1.0], [0.0, 0.1, -1.0]],
                         dtype=torch.float64)
    female_word = torch.tensor([True, False, True, False])
    text = torch.tensor([[0.5, 0.3, -1.0], [0.7, -0.3, -1.0]], dtype=torch.float64)
    gate = fit_gate(jobs, female_job, words, female_word, torch.cat([words, text]), gate_c=10.0)
    torch.testing.assert_close(gate.direction, torch.tensor([1.0, 0.0, 0.0]))
    assert gate.neutral_point == pytest.approx(0.7)
    assert gate.openness(jobs.float()).min() > 0.9 and gate.openness(words.float()).max() < 0.1
    assert abs(gate.weights[2]) > 10 * max(abs(gate.weights[0]), abs(gate.weights[1]))


def test_fitted_on_a_real_forward_it_edits_gated_tokens_only_and_never_the_anchor(tiny_lm):
    method = OccupationGate(layers=(0,), gate_c=10.0)
    method.fit(FitContext(tiny_lm, JOBS, FAMILY, seed=0))
    gate = method.gates[0]
    assert method.fit_report["gate_jobs_L0"] > method.fit_report["gate_words_L0"]
    examples = job_examples(tiny_lm, JOBS, FAMILY, "all")
    anchored = [type(example)(example.tokens, (0, *example.positions), example.label, example.group)
                for example in examples]
    name = resid_post(0)
    before = read_at_positions(tiny_lm, anchored, [name], stop_at_layer=1)[name].float()
    with method.apply(tiny_lm):
        after = read_at_positions(tiny_lm, anchored, [name], stop_at_layer=1)[name].float()
    assert not any(hook.fwd_hooks for hook in tiny_lm.model.hook_dict.values())
    anchor_rows = torch.tensor([i == 0 for example in anchored for i in example.positions])
    torch.testing.assert_close(after[anchor_rows], before[anchor_rows], rtol=0, atol=0)
    # every other position moved exactly as the gate says, and only along u
    expected = gate.edit(before[~anchor_rows], 1.0)
    torch.testing.assert_close(after[~anchor_rows], expected, rtol=1e-5, atol=1e-5)
    moved = after[~anchor_rows] - before[~anchor_rows]
    off_axis = moved - torch.outer(moved @ gate.direction, gate.direction)
    assert off_axis.abs().max() < 1e-4 and moved.abs().max() > 1e-3


def test_jobs_of_one_group_only_and_bad_layers_are_refused(tiny_lm):
    with pytest.raises(DebiasKitError, match="both groups"):
        OccupationGate(layers=(0,)).fit(FitContext(tiny_lm, JOBS[:2], FAMILY, seed=0))
    with pytest.raises(DebiasKitError, match="blocks 0 to 1"):
        OccupationGate(layers=(5,)).check(tiny_lm)
    with pytest.raises(DebiasKitError, match="layers got"):
        OccupationGate(layers=())
    with pytest.raises(DebiasKitError, match="applied before it was fitted"):
        with OccupationGate().apply(tiny_lm):
            pass
