"""LEACE erasure: edits only editable positions, leaves no hooks behind, and drives a gender probe to chance."""

import pytest
import torch
from click.testing import CliRunner

from debiaskit import DebiasKitError, FitContext, hooked
from debiaskit.cli import cli
from debiaskit.concepts import labelled_text
from debiaskit.plugin_host import load_plugins
from debiaskit.plugins.leace import Activations, LeaceErasure, cross_validated_probe_accuracy, probe_accuracy
from debiaskit.word_lists import gendered_words


def fit_context(lm, seed=0):
    host = load_plugins()
    jobs = host.datasets.get("data set", "occupations40").load(None).occupations
    return FitContext(lm, jobs, host.templates.get("template family", "pronoun"), seed)


def fitted(lm, **options):
    method = LeaceErasure(**options)
    method.fit(fit_context(lm))
    return method


def resid_after(lm, batch, layer, method=None):
    """The residual stream after block `layer` [batch, pos, d_model], read after the method's own hook if any."""
    seen = {}

    def record(resid, hook):
        seen["resid"] = resid.clone()

    with torch.no_grad(), (method.apply(lm) if method else hooked(lm, [])), \
            hooked(lm, [(f"blocks.{layer}.hook_resid_post", record)]):
        lm.run(batch)
    return seen["resid"]


def plant_gender(lm, scale=4.0):
    """Give every token of a female word +scale*v and of a male word -scale*v in the embedding, so gender is
    linearly readable in the tiny random model the way it is in a trained one."""
    def token_ids(words):
        return {i for w in words for i in lm.tokenizer(" " + w, add_special_tokens=False)["input_ids"]}

    pairs = gendered_words().fit_pairs
    female, male = token_ids(f for f, _ in pairs), token_ids(m for _, m in pairs)
    embedding = lm.model.embed.W_E.data  # [vocab, d_model]
    direction = torch.randn(embedding.shape[1], generator=torch.Generator().manual_seed(1))
    direction /= direction.norm()
    size = scale * embedding.norm(dim=-1).mean()
    embedding[sorted(female - male)] += size * direction
    embedding[sorted(male - female)] -= size * direction


def test_only_editable_positions_change_and_anchor_and_padding_are_bit_identical(tiny_lm):
    method = fitted(tiny_lm, layers=(0,))
    batch = tiny_lm.make_batch([tiny_lm.encode("The nurse said that she"), tiny_lm.encode("The cook")])
    before, erased = resid_after(tiny_lm, batch, 0), resid_after(tiny_lm, batch, 0, method)
    untouched = ~batch.editable  # both anchors and the second row's padding
    assert int(untouched.sum()) == 2 + 3
    assert torch.equal(erased[untouched], before[untouched])
    assert (erased[batch.editable] != before[batch.editable]).any(dim=-1).all()


def test_blend_zero_changes_nothing_and_blend_half_goes_halfway(tiny_lm):
    batch = tiny_lm.make_batch([tiny_lm.encode("The nurse said that")])
    plain = resid_after(tiny_lm, batch, 1)
    full, half, none = (resid_after(tiny_lm, batch, 1, fitted(tiny_lm, layers=(1,), blend=blend)) - plain
                        for blend in (1.0, 0.5, 0.0))
    assert torch.equal(none, torch.zeros_like(none))
    assert full.abs().max() > 1e-3
    assert torch.allclose(half, full / 2, atol=1e-5)


def test_hooks_are_gone_after_apply_also_when_the_body_raises(tiny_lm):
    method = fitted(tiny_lm, layers=(0, 1))
    with method.apply(tiny_lm):
        assert tiny_lm.model.blocks[0].hook_resid_post.fwd_hooks and tiny_lm.model.blocks[1].hook_resid_post.fwd_hooks
    assert all(not point.fwd_hooks for point in tiny_lm.model.hook_dict.values())
    with pytest.raises(RuntimeError, match="body failed"), method.apply(tiny_lm):
        raise RuntimeError("body failed")
    assert all(not point.fwd_hooks for point in tiny_lm.model.hook_dict.values())


def test_probe_reads_planted_gender_before_and_is_at_chance_after(tiny_lm):
    plant_gender(tiny_lm)
    details = fitted(tiny_lm, layers=(0, 1)).details()
    assert details["layers"] == "0,1"
    assert details["probe_acc_before"] >= 0.9
    assert details["probe_acc_after"] <= 0.55


def test_fit_positions_pick_the_words_tokens_the_last_token_or_all_but_the_anchor(tiny_lm):
    # tokens: <|endoftext|>, "The", " reception", "ist", " said", " that"
    texts = {positions: labelled_text(tiny_lm, "The receptionist said that", "receptionist", positions, 1, "job")
             for positions in ("word", "last", "all")}
    assert texts["word"].tokens[0] == tiny_lm.anchor_token_id and len(texts["word"].tokens) == 6
    assert texts["word"].positions == (2, 3)
    assert texts["last"].positions == (5,)
    assert texts["all"].positions == (1, 2, 3, 4, 5)
    with pytest.raises(DebiasKitError, match="cannot find the word 'nurse'"):
        labelled_text(tiny_lm, "The nurseries said that", "nurse", "word", 1, "job")


def test_probes_on_hand_made_activations():
    def activations(seed, shift):
        labels = torch.tensor([0.0, 1.0] * 40, dtype=torch.float64)
        values = torch.randn(80, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        values[:, 0] += shift * (2 * labels - 1)
        return Activations(values, labels, tuple(f"pair{i // 8}" for i in range(80)))  # 10 pairs, 4 of each word

    separable, other_separable, noise, other_noise = (activations(seed, shift) for seed, shift in
                                                      ((0, 4.0), (1, 4.0), (2, 0.0), (3, 0.0)))
    assert probe_accuracy(separable, other_separable) >= 0.95
    assert cross_validated_probe_accuracy(separable) >= 0.95
    assert abs(probe_accuracy(noise, other_noise) - 0.5) <= 0.15
    assert abs(cross_validated_probe_accuracy(noise) - 0.5) <= 0.2


def test_bad_settings_say_what_is_accepted(tiny_lm):
    with pytest.raises(DebiasKitError, match="leace.blend got 1.5; it takes a number from 0 to 1"):
        LeaceErasure(blend=1.5)
    with pytest.raises(DebiasKitError, match="leace.layers has 7; tiny-llama has blocks 0 to 1"):
        fitted(tiny_lm, layers=(1, 7))
    with pytest.raises(DebiasKitError, match="before it was fitted"), LeaceErasure().apply(tiny_lm):
        pass
    assert LeaceErasure(concept="occupations").uses_jobs() and not LeaceErasure().uses_jobs()


def test_sweep_prints_one_row_per_layer(tiny_llama_dir):
    arguments = ["leace-sweep", "--layers", "0,1", "--model", str(tiny_llama_dir), "--device", "cpu"]
    result = CliRunner().invoke(cli, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert {"stereotype_gap", "gap_change_pct", "definitional_retained", "kl", "kl_gendered", "probe_acc_before",
            "probe_acc_after"} <= set(lines[1].split())
    assert [line.split()[0] for line in lines[2:]] == ["none", "leace@0", "leace@1"]


@pytest.mark.model
def test_erasure_on_smollm2_drives_the_probe_to_chance(smollm2):
    details = fitted(smollm2).details()
    assert details["probe_acc_after"] <= 0.55
    assert details["probe_acc_before"] >= details["probe_acc_after"] + 0.25
