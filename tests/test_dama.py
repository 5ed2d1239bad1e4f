"""dama: the edited W_out is W_out P with P = I - B B^T (and a rank-one anchor correction when there is an anchor),
the value deltas raise their pronoun's probability, PLS finds the direction the values depend on, and the
whitening is the paper's formula worked out by hand."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from debiaskit import DebiasKitError, FitContext
from debiaskit.data import Occupation, TemplateFamily
from debiaskit.mlp_edits import anchor_key
from debiaskit.plugins.dama import DebiasingThroughModelAdaptation, optimise_deltas, pls_basis, whiten

FAMILY = TemplateFamily("t", "test", ("The {job} said that", "The {job} went home because", "The {job} ate because"),
                        ("he",), ("she",))
JOBS = (Occupation("nurse", "female", 90.0), Occupation("secretary", "female", 92.0),
        Occupation("carpenter", "male", 3.0), Occupation("pilot", "male", 5.0))
QUICK = {"steps": 3, "dimension": 4, "templates_per_job": 0}


def test_the_edited_weights_are_w_out_times_the_projection_and_come_back_bit_for_bit(tiny_lm):
    lm = dataclasses.replace(tiny_lm, anchor_token_id=None)  # no anchor: the edit is the paper's projection alone
    method = DebiasingThroughModelAdaptation(layers=(0, 1), **QUICK)
    method.fit(FitContext(lm, JOBS, FAMILY, seed=0))
    before = [block.mlp.W_out.detach().clone() for block in lm.model.blocks]
    with method.apply(lm):
        for layer, original in enumerate(before):
            basis = method.bases[layer].float()
            assert basis.shape == (64, 4)
            torch.testing.assert_close(basis.T @ basis, torch.eye(4), rtol=0, atol=1e-5)
            projection = torch.eye(64) - basis @ basis.T
            torch.testing.assert_close(lm.model.blocks[layer].mlp.W_out, original @ projection, rtol=0, atol=1e-6)
            assert (lm.model.blocks[layer].mlp.W_out @ basis).abs().max() < 1e-5  # nothing written along B
    assert all(torch.equal(block.mlp.W_out, original) for block, original in zip(lm.model.blocks, before))


def test_with_an_anchor_the_edit_differs_by_rank_one_and_keeps_the_anchor_output(tiny_lm):
    method = DebiasingThroughModelAdaptation(layers=(1,), **QUICK)
    method.fit(FitContext(tiny_lm, JOBS, FAMILY, seed=0))
    original = tiny_lm.model.blocks[1].mlp.W_out.detach().clone()
    anchor = anchor_key(tiny_lm, 1).float()
    with method.apply(tiny_lm):
        edited = tiny_lm.model.blocks[1].mlp.W_out.detach().clone()
    basis = method.bases[1].float()
    correction = edited - original @ (torch.eye(64) - basis @ basis.T)
    singular = torch.linalg.svdvals(correction)
    assert singular[0] > 1e-4 and singular[1] < 1e-5 * singular[0]  # a rank-one correction, not nothing
    torch.testing.assert_close(anchor @ edited, anchor @ original, rtol=0, atol=1e-5)


def test_value_deltas_raise_the_probability_of_their_pronoun(tiny_lm):
    torch.manual_seed(0)
    resid, kl_resid = torch.randn(5, 64), torch.randn(5, 64)
    he, she = tiny_lm.tokenizer(" he")["input_ids"], tiny_lm.tokenizer(" she")["input_ids"]
    settings = {"steps": 1, "lr": 0.5, "weight_decay": 0.5, "clamp": 4.0, "kl_factor": 0.0625}
    _, before = optimise_deltas(resid, kl_resid, tiny_lm, (he, she), settings)
    deltas, after = optimise_deltas(resid, kl_resid, tiny_lm, (he, she), {**settings, "steps": 20})
    assert deltas.shape == (2, 5, 64)
    assert (after > 2 * before).all()  # every request, both pronouns
    assert (deltas.norm(dim=-1) <= 4.0 * resid.double().norm(dim=-1) * 1.001).all()
    assert all(parameter.requires_grad for parameter in tiny_lm.model.parameters())  # the flags came back


def test_pls_finds_the_direction_the_values_depend_on():
    torch.manual_seed(0)
    inputs = torch.randn(200, 6, dtype=torch.float64)
    direction = torch.tensor([0.0, 0.6, 0.0, 0.8, 0.0, 0.0], dtype=torch.float64)
    values = (inputs @ direction).unsqueeze(1) * torch.randn(1, 6, dtype=torch.float64)
    basis = pls_basis(inputs, values + 1e-3 * torch.randn(200, 6, dtype=torch.float64), 1)
    assert abs(float(basis[:, 0] @ direction)) > 0.99


def test_whitening_by_hand():
    # U = diag(1, 2), C = I, lambda = 1 per request x 2 requests: (2 I + U^T U)^-1 = diag(1/3, 1/6), so U -> I / 3
    keys = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    whitened = whiten(keys, torch.eye(2, dtype=torch.float64), 1.0)
    torch.testing.assert_close(whitened, torch.eye(2, dtype=torch.float64) / 3)
    assert torch.equal(whiten(keys, torch.eye(2, dtype=torch.float64), 0.0), keys)


@pytest.mark.parametrize(("given", "message"), [
    ({"layers": (2,)}, "blocks 0 to 1"),
    ({"dimension": 65}, "d_model 64"),
    ({"dimension": 13}, "more than the 12 requests"),
])
def test_bad_settings_are_refused(tiny_lm, given, message):
    with pytest.raises(DebiasKitError, match=message):
        DebiasingThroughModelAdaptation(**{**QUICK, "layers": (0,), **given}).fit(
            FitContext(tiny_lm, JOBS, FAMILY, seed=0))
