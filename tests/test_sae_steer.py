"""sae-steer and `debiaskit steer`: what the steering hook changes (and what it must not), the method's hooks, and
the command's with/without generations; tiny random SAEs on the tiny model."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from test_sae_ablation import TEXTS, fitted, logits, no_hooks_left, save_tiny_sae

from debiaskit import DebiasKitError
from debiaskit.plugins.sae_ablation import SAELatentAblation
from debiaskit.plugins.sae_steer import SAELatentSteering, steer_hook
from debiaskit.sae.source import load_sae


@pytest.fixture
def tiny_sae(tmp_path):
    return save_tiny_sae(tmp_path / "sae")


@torch.no_grad()
@pytest.mark.parametrize("mode", ["mean", "clamp"])
def test_steering_moves_only_chosen_latents_at_editable_positions(tiny_lm, tiny_sae, mode):
    loaded = load_sae(tiny_sae, tiny_lm)
    batch = tiny_lm.make_batch([tiny_lm.encode(text) for text in TEXTS])
    torch.manual_seed(1)
    activation = torch.randn(*batch.tokens.shape, 64) * 3
    chosen = loaded.sae.encode(activation[:, -1]).gt(0).sum(0).topk(3).indices.tolist()
    targets = torch.tensor([0.5, 1.0, 2.0])
    tiny_lm.running = batch
    try:
        edited = steer_hook(tiny_lm, loaded.sae, chosen, targets, 0.5, mode)(activation.clone(), None)
    finally:
        tiny_lm.running = None
    assert torch.equal(edited[~batch.editable], activation[~batch.editable])  # anchor and padding exact
    acts = loaded.sae.encode(activation[batch.editable])[:, chosen]
    change = 0.5 * (targets - acts)
    if mode == "mean":
        change = torch.where(acts > 0, change, torch.zeros_like(change))
        assert (acts == 0).any() and (acts > 0).any()  # both branches were exercised
    expected = activation[batch.editable] + change @ loaded.sae.W_dec[chosen]  # the decoder is linear
    assert torch.allclose(edited[batch.editable], expected, atol=1e-5)


def test_strength_zero_is_the_unchanged_model_and_hooks_are_removed(tiny_lm, tiny_sae):
    base = logits(tiny_lm)
    method = fitted(tiny_lm, SAELatentSteering(sae=tiny_sae, strength=0.0, n_latents=4))
    assert len(method.latents) == 4 and method.targets.shape == (4,)
    with method.apply(tiny_lm):
        assert torch.equal(logits(tiny_lm), base)
    steered = fitted(tiny_lm, SAELatentSteering(sae=tiny_sae, mode="clamp", n_latents=4))
    with steered.apply(tiny_lm):
        assert not torch.allclose(logits(tiny_lm), base, atol=1e-4)
    assert no_hooks_left(tiny_lm) and torch.equal(logits(tiny_lm), base)
    assert "n_latents" in steered.details()


def test_targets_are_the_cross_group_means_of_the_selection(tiny_lm, tiny_sae):
    method = fitted(tiny_lm, SAELatentSteering(sae=tiny_sae, n_latents=5))
    stats = method.stats
    assert method.latents == fitted(tiny_lm, SAELatentAblation(sae=tiny_sae, n_latents=5)).latents  # the same selection
    torch.testing.assert_close(method.targets,
                               (stats.male_mean[method.latents] + stats.female_mean[method.latents]) / 2)
    with pytest.raises(DebiasKitError, match="from 0 to 1"):
        SAELatentSteering(sae=tiny_sae, strength=1.5)


def test_steer_command_prints_with_and_without(tiny_llama_dir, tmp_path):
    from debiaskit.cli import cli

    sae = save_tiny_sae(tmp_path / "sae")
    common = ["steer", "--model", str(tiny_llama_dir), "--device", "cpu", "--sae", sae, "--latent", "3",
              "--prompt", "The nurse said that", "-n", "2", "--max-new-tokens", "4"]
    zero = CliRunner().invoke(cli, [*common, "--coeff", "0"])
    assert zero.exit_code == 0, zero.output
    lines = zero.stdout.splitlines()
    with_block, without_block = (lines[lines.index("with steering:") + 1:][:2],
                                 lines[lines.index("without steering:") + 1:][:2])
    assert with_block == without_block  # coefficient 0: the same random numbers give the same text
    strong = CliRunner().invoke(cli, [*common, "--coeff", "200"])
    lines = strong.stdout.splitlines()
    assert lines[lines.index("with steering:") + 1:][:2] != lines[lines.index("without steering:") + 1:][:2]
    bad = CliRunner().invoke(cli, [*common, "--coeff", "1", "--latent", "9999"])
    assert bad.exit_code == 2 and "latents 0 to 255" in bad.output
