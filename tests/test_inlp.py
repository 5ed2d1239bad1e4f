"""inlp: the nullspace projection drives a fresh linear classifier to chance on held-out examples, and the fitted
method projects exactly that subspace out at every position but the anchor."""

from __future__ import annotations

import torch

from debiaskit import FitContext, resid_post
from debiaskit.concepts import read_at_positions, word_pair_examples
from debiaskit.plugins.inlp import IterativeNullspaceProjection, nullspace_projection
from debiaskit.probes import Activations
from debiaskit.residual_edits import project_out


def gendered_points(seed: int, n: int = 400, d: int = 20) -> Activations:
    """Gaussian points whose label shifts them by 1.5 along each of e0, e1 and e2: linearly readable gender."""
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=generator) < 0.5).double()
    values = torch.randn(n, d, generator=generator, dtype=torch.float64)
    values[:, :3] += 1.5 * (2 * labels.unsqueeze(1) - 1)
    return Activations(values, labels, tuple(str(i) for i in range(n)))


def test_the_projection_brings_a_held_out_linear_classifier_to_chance():
    basis, accuracies = nullspace_projection(gendered_points(0), gendered_points(1), iterations=8)
    assert accuracies[0] > 0.95  # gender is readable before
    assert abs(accuracies[-1] - 0.5) < 0.08  # and not after eight nullspace projections
    assert basis.shape == (20, 8)
    torch.testing.assert_close(basis.T @ basis, torch.eye(8, dtype=torch.float64))
    # P is a projection that removes span(B): P P = P and B^T P x = 0
    x = torch.randn(5, 20, dtype=torch.float64)
    torch.testing.assert_close(project_out(project_out(x, basis), basis), project_out(x, basis))
    assert (project_out(x, basis) @ basis).abs().max() < 1e-12


def test_fitted_on_a_real_forward_it_projects_every_position_but_the_anchor(tiny_lm):
    method = IterativeNullspaceProjection(layer=0, iterations=3)
    method.fit(FitContext(tiny_lm, (), None, seed=0))
    assert method.basis.shape == (64, 3)
    assert method.details()["directions_removed"] == 3
    assert len(method.details()["probe_acc_by_iteration"].split(",")) == 4
    examples = word_pair_examples(tiny_lm, [("queen", "king")], ["The {word} spoke."], "all")
    anchored = [type(e)(e.tokens, (0, *e.positions), e.label, e.group) for e in examples]
    name = resid_post(0)
    before = read_at_positions(tiny_lm, anchored, [name], stop_at_layer=1)[name]
    with method.apply(tiny_lm):
        after = read_at_positions(tiny_lm, anchored, [name], stop_at_layer=1)[name]
    assert not any(hook.fwd_hooks for hook in tiny_lm.model.hook_dict.values())
    anchor = torch.tensor([i == 0 for e in anchored for i in e.positions])
    torch.testing.assert_close(after[anchor], before[anchor], rtol=0, atol=0)
    torch.testing.assert_close(after[~anchor], project_out(before[~anchor], method.basis), rtol=1e-5, atol=1e-5)
    assert (after[~anchor] - before[~anchor]).abs().max() > 1e-3
