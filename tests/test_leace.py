"""LEACE erasure: edits only editable positions, leaves no hooks behind, and drives a gender probe to chance."""

import pytest
import torch
from click.testing import CliRunner

from debiaskit import DebiasKitError, FitContext, hooked
from debiaskit.cli import cli
from debiaskit.concepts import labelled_text
from debiaskit.plugin_host import load_plugins
from debiaskit.plugins.leace import LeaceErasure
from debiaskit.probes import Activations, cross_validated_probe_accuracy, probe_accuracy
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
    method = fitted(tiny_lm, layers=(0,), edit_positions="all")
    batch = tiny_lm.make_batch([tiny_lm.encode("The nurse said that she"), tiny_lm.encode("The cook")])
    before, erased = resid_after(tiny_lm, batch, 0), resid_after(tiny_lm, batch, 0, method)
    untouched = ~batch.editable  # both anchors and the second row's padding
    assert int(untouched.sum()) == 2 + 3
    assert torch.equal(erased[untouched], before[untouched])
    assert (erased[batch.editable] != before[batch.editable]).any(dim=-1).all()


def changed_positions(lm, batch, method, layer=0):
    """[batch, pos] bool: where the method's hook changed the residual stream after block `layer`."""
    return (resid_after(lm, batch, layer) != resid_after(lm, batch, layer, method)).any(-1)


def test_edit_positions_last_and_word_change_only_those_positions(tiny_lm):
    prompts = [tiny_lm.encode("The nurse said that the boy"), tiny_lm.encode("The girl")]
    prompt_batch = tiny_lm.make_batch(prompts)  # scored at the last position only
    text_batch = tiny_lm.make_batch(prompts, score_every_position=True)  # a cost text: every position is read
    last = fitted(tiny_lm, layers=(0,), edit_positions="last")
    assert torch.equal(changed_positions(tiny_lm, prompt_batch, last), prompt_batch.scored)
    assert torch.equal(changed_positions(tiny_lm, text_batch, last), text_batch.editable)
    word = fitted(tiny_lm, layers=(0,), edit_positions="word")  # seed 0 fits girl/boy (the rest are probe pairs)
    expected = torch.isin(prompt_batch.tokens, word.edited_tokens) & prompt_batch.editable
    assert expected.sum() == 2  # " boy" in the first row, " girl" in the second, nothing else is a fitted token
    assert torch.equal(changed_positions(tiny_lm, prompt_batch, word), expected)
    occupations = tiny_lm.make_batch([tiny_lm.encode("The nurse said that")])
    assert not changed_positions(tiny_lm, occupations, word).any()  # no fitted word: nothing to erase


def test_occupations_fitted_and_erased_at_the_last_position_leave_no_group_difference_there(tiny_lm):
    # LEACE's guarantee on its own fit data: no linear signal of the job's group left at the last position, i.e.
    # equal class means of the erased activations (Cov(r(X), Z) = 0)
    method = fitted(tiny_lm, layers=(0,), concept="occupations", fit_positions="last", edit_positions="last")
    context = fit_context(tiny_lm)
    prompts = [(context.templates.prompt(template, job.name), job.group == "female")
               for job in context.train_jobs for template in context.templates.templates]
    batch = tiny_lm.make_batch([tiny_lm.encode(prompt) for prompt, _ in prompts])
    female = torch.tensor([is_female for _, is_female in prompts])
    before, after = resid_after(tiny_lm, batch, 0)[:, -1].double(), resid_after(tiny_lm, batch, 0, method)[:, -1]
    gap_before = (before[female].mean(0) - before[~female].mean(0)).norm()
    gap_after = (after.double()[female].mean(0) - after.double()[~female].mean(0)).norm()
    assert gap_before > 0.01 and gap_after < 1e-4 * before.norm(dim=-1).mean()
    assert torch.equal(changed_positions(tiny_lm, batch, method), batch.scored)


def test_blend_zero_changes_nothing_and_blend_half_goes_halfway(tiny_lm):
    batch = tiny_lm.make_batch([tiny_lm.encode("The nurse said that")])
    plain = resid_after(tiny_lm, batch, 1)
    full, half, none = (resid_after(tiny_lm, batch, 1, fitted(tiny_lm, layers=(1,), blend=b, edit_positions="all"))
                        - plain for b in (1.0, 0.5, 0.0))
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
    # the default edits where the eraser was fitted
    assert LeaceErasure().edit == "word" and LeaceErasure(fit_positions="last").edit == "last"
    assert LeaceErasure(concept="occupations").edit == "all"  # a job's tokens are unknown in other text
    assert LeaceErasure(concept="occupations", fit_positions="last").edit == "last"
    with pytest.raises(DebiasKitError, match="edit_positions=word needs concept=definitional"):
        LeaceErasure(concept="occupations", edit_positions="word")
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
