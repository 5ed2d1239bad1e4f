"""lsdm: the solver against answers worked out by hand, the anchor constraint, and the exact restore of the weights."""

from __future__ import annotations

import re

import pytest
import torch

from debiaskit import DebiasKitError, FitContext
from debiaskit.concepts import PRESERVE_TEXT_FILE, job_examples
from debiaskit.data import Occupation, TemplateFamily, project_data_dir
from debiaskit.mlp_edits import edited_weights, read_mlp
from debiaskit.plugin_host import load_plugins
from debiaskit.plugins.lsdm import LeastSquaresDebias, solve_edit
from debiaskit.word_lists import definitional_nouns, gendered_words, read_gendered_word_lists

FAMILY = TemplateFamily("t", "test", ("The {job} said that", "The {job} went home because"), ("he",), ("she",))
JOBS = (Occupation("nurse", "female", 90.0), Occupation("secretary", "female", 92.0),
        Occupation("carpenter", "male", 3.0), Occupation("pilot", "male", 5.0))


def test_solver_scalar_case_by_hand():
    # keys 1, 2 want changes 2, 4 (D = 2 fits them); one neutral key 1 wants 0. With lambda = 1 and no ridge:
    # J(D) = ((D-2)^2 + (2D-4)^2)/2 + D^2 = 2.5 (D-2)^2 + D^2, J'(D) = 5(D-2) + 2D = 0  =>  D = 10/7
    edit = solve_edit(torch.tensor([[1.0], [2.0]]), torch.tensor([[2.0], [4.0]]), torch.tensor([[1.0]]), 1.0, ridge=0.0)
    assert edit.item() == pytest.approx(10 / 7, rel=1e-12)
    no_preserve = solve_edit(torch.tensor([[1.0], [2.0]]), torch.tensor([[2.0], [4.0]]), torch.tensor([[1.0]]), 0.0,
                             ridge=0.0)
    assert no_preserve.item() == pytest.approx(2.0, rel=1e-12)


def test_solver_fits_targets_while_neutral_keys_in_another_subspace_stay_put():
    # keys span e0, e1; neutral keys span e2, e3: D = [[1, 2], [3, 4], [0, 0], [0, 0]] fits exactly and leaves K0 D = 0
    keys = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 1.0, 0, 0]])
    known = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0, 0], [0, 0]])
    neutral = torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 2.0], [0, 0, 3.0, 1.0]])
    edit = solve_edit(keys, keys @ known, neutral, preserve=5.0, ridge=0.0)
    torch.testing.assert_close(edit, known.double(), rtol=0, atol=1e-12)


def test_anchor_constraint_zeroes_the_anchor_output_and_is_the_constrained_minimum():
    generator = torch.Generator().manual_seed(0)
    keys, wanted = torch.randn(20, 6, generator=generator), torch.randn(20, 3, generator=generator)
    neutral, anchor = torch.randn(30, 6, generator=generator), torch.randn(6, generator=generator)
    edit = solve_edit(keys, wanted, neutral, 0.5, anchor_key=anchor)
    assert (anchor.double() @ edit).abs().max() < 1e-10

    def objective(d):
        return ((keys.double() @ d - wanted.double()) ** 2).sum() / 20 \
            + 0.5 * ((neutral.double() @ d) ** 2).sum() / 30 \
            + 1e-6 * torch.trace(keys.double().T @ keys.double() / 20
                                 + 0.5 * neutral.double().T @ neutral.double() / 30) / 6 * (d ** 2).sum()

    # any other edit that keeps the anchor fixed costs more
    projector = (torch.eye(6, dtype=torch.float64)
                 - torch.outer(anchor.double(), anchor.double()) / anchor.double().norm() ** 2)
    for _ in range(5):
        other = edit + 1e-3 * projector @ torch.randn(6, 3, generator=generator, dtype=torch.float64)
        assert objective(other) > objective(edit)


def test_weights_are_restored_bit_for_bit_also_on_error(tiny_lm):
    before = [block.mlp.W_out.detach().clone() for block in tiny_lm.model.blocks]
    edits = {0: torch.randn_like(before[0]) * 1e-3, 1: torch.randn_like(before[1]) * 1e-3}
    with pytest.raises(RuntimeError, match="boom"):
        with edited_weights(tiny_lm, edits):
            assert not torch.equal(tiny_lm.model.blocks[0].mlp.W_out, before[0])
            raise RuntimeError("boom")
    for block, original in zip(tiny_lm.model.blocks, before):
        assert torch.equal(block.mlp.W_out, original)


def test_fitted_edit_moves_job_outputs_off_the_gender_direction_and_spares_the_anchor(tiny_lm):
    method = LeastSquaresDebias(layers=(0,), preserve=0.1)
    method.fit(FitContext(tiny_lm, JOBS, FAMILY, seed=0))
    before = [block.mlp.W_out.detach().clone() for block in tiny_lm.model.blocks]
    anchor = [type("Example", (), {"tokens": tuple(tiny_lm.encode("")), "positions": (0,)})()]
    anchor_before = read_mlp(tiny_lm, anchor, 0)[1]
    with method.apply(tiny_lm):
        assert not torch.equal(tiny_lm.model.blocks[0].mlp.W_out, before[0])
        torch.testing.assert_close(read_mlp(tiny_lm, anchor, 0)[1], anchor_before, rtol=0, atol=1e-5)
    assert all(torch.equal(block.mlp.W_out, original) for block, original in zip(tiny_lm.model.blocks, before))
    assert method.fit_report["fit_residual_L0"] < 0.9  # the keys' gender components did move toward neutral


def test_jobs_move_to_their_own_balanced_midpoint_not_the_words_one(tiny_lm):
    # preserve 0: the 8 job keys are fitted exactly, so every training job's output lands on the neutral point c,
    # the mean of the two groups' mean projections, which the edit leaves where it was: the groups meet in the middle
    # and neither the jobs as a whole nor the male ones are pushed toward the female words
    method = LeastSquaresDebias(layers=(0,), preserve=0.0)
    method.fit(FitContext(tiny_lm, JOBS, FAMILY, seed=0))
    direction, neutral_point = method.axes[0]
    examples = [example.last_position_only() for example in job_examples(tiny_lm, JOBS, FAMILY, "word")]
    female = torch.tensor([example.label == 1 for example in examples])
    before = read_mlp(tiny_lm, examples, 0)[1] @ direction
    with method.apply(tiny_lm):
        after = read_mlp(tiny_lm, examples, 0)[1] @ direction
    assert neutral_point == pytest.approx(float(0.5 * (before[female].mean() + before[~female].mean())))
    assert after.tolist() == pytest.approx([neutral_point] * len(examples), abs=1e-3 * float(before.abs().max()))
    assert abs(before[female].mean() - before[~female].mean()) > 10 * abs(after[female].mean() - after[~female].mean())


def test_jobs_of_one_group_only_are_refused(tiny_lm):
    with pytest.raises(DebiasKitError, match="both groups"):
        LeastSquaresDebias(layers=(0,)).fit(FitContext(tiny_lm, JOBS[:2], FAMILY, seed=0))


def test_the_preserve_text_is_gender_free_and_names_no_job():
    text_words = set(re.findall(r"[a-z]+", (project_data_dir() / PRESERVE_TEXT_FILE).read_text().lower()))
    lists = read_gendered_word_lists()
    gendered = set(lists.female) | set(lists.male) | set(gendered_words().words())
    gendered |= {noun.word for noun in definitional_nouns()}
    jobs = {job.name.lower() for job in load_plugins().datasets.get("data set", "occupations40").load(None).occupations}
    assert not text_words & gendered and not text_words & jobs and len(text_words) > 500


def test_bad_layers_are_refused(tiny_lm):
    with pytest.raises(DebiasKitError, match="blocks 0 to 1"):
        LeastSquaresDebias(layers=(5,)).fit(FitContext(tiny_lm, JOBS, FAMILY, seed=0))
