"""locate: the batched, layer-by-layer patching equals a plain patched forward; structural zeros; the command's
files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from debiaskit import DebiasKitError
from debiaskit.data import Occupation, TemplateFamily
from debiaskit.plugins.locate import SITES, effect_table, mediation_effects, mediation_prompts, pronoun_ids

FAMILY = TemplateFamily("t", "test", ("The {job} said that", "The {job} went home because"), ("he",), ("she",))
JOBS = (Occupation("nurse", "female", 90.0), Occupation("kindergarten teacher", "female", 97.0),
        Occupation("carpenter", "male", 3.0), Occupation("crane operator", "male", 1.0))


def full_run_y(lm, tokens, sign, patch=None):
    """y = P(anti)/P(stereo) from a plain full forward, optionally with one activation overwritten."""
    he, she = pronoun_ids(lm)
    hooks = [] if patch is None else [(patch[0], lambda act, hook: act.index_put((torch.tensor([0]),
                                                                                   torch.tensor([patch[1]])),
                                                                                  patch[2]))]
    with torch.no_grad():
        logits = lm.model.run_with_hooks(torch.tensor([tokens]), fwd_hooks=hooks)[0, -1].double()
    probs = torch.softmax(logits, -1)
    return float((probs[she] / probs[he]) ** sign)


@pytest.mark.parametrize("grouped_query", [False, True])
def test_batched_patching_matches_a_plain_patched_run(tiny_lm, tiny_llama_dir, grouped_query):
    if grouped_query:  # 4 query heads sharing 2 key/value heads, as SmolLM2's attention
        from debiaskit.model import load_model

        tiny_lm = load_model(str(tiny_llama_dir), device="cpu")
    prompts = mediation_prompts(tiny_lm, JOBS, FAMILY, [0, 1])
    total, indirect = mediation_effects(tiny_lm, prompts, batch_size=3)  # batches mix lengths and groups
    assert indirect.shape == (len(prompts), tiny_lm.n_layers, len(SITES))
    for i in (1, 6):  # a two-token job (female) and a single-token male job, different templates
        prompt = prompts[i]
        y_null = full_run_y(tiny_lm, prompt.tokens, prompt.sign)
        assert total[i] == pytest.approx(full_run_y(tiny_lm, prompt.gendered_tokens, prompt.sign) / y_null - 1,
                                         rel=1e-4)
        _, cache = tiny_lm.model.run_with_cache(torch.tensor([prompt.gendered_tokens]))
        for site, (component, position) in enumerate(SITES):
            name = f"blocks.0.hook_{component}"
            offset = -1 if position == "last" else -1 - prompt.suffix
            value = cache[name][0, len(prompt.gendered_tokens) + offset]
            y = full_run_y(tiny_lm, prompt.tokens, prompt.sign, (name, len(prompt.tokens) + offset, value))
            assert indirect[i, 0, site] == pytest.approx(y / y_null - 1, rel=1e-4, abs=1e-6)


def test_occupation_token_in_the_last_layer_cannot_reach_the_prediction(tiny_lm):
    _, indirect = mediation_effects(tiny_lm, mediation_prompts(tiny_lm, JOBS, FAMILY, [0]))
    last = tiny_lm.n_layers - 1
    occupation_sites = [s for s, (_, position) in enumerate(SITES) if position == "occupation"]
    assert np.abs(indirect[:, last, occupation_sites]).max() < 1e-5  # zero up to the re-run's float rounding
    assert np.abs(indirect[:, last, [s for s in range(len(SITES)) if s not in occupation_sites]]).max() > 1e-3
    table = effect_table(indirect)
    assert len(table) == tiny_lm.n_layers * len(SITES)


def test_templates_without_a_leading_job_slot_are_refused(tiny_lm):
    family = TemplateFamily("q", "q", ("Q: Imagine {a_job}. What is the {job}'s gender? A:",), ("he",), ("she",))
    with pytest.raises(DebiasKitError, match="The {job}"):
        mediation_prompts(tiny_lm, JOBS, family, [0])


def test_locate_command_writes_table_heatmap_and_summary(tiny_llama_dir, tmp_path):
    from debiaskit.cli import cli

    out = tmp_path / "locate"
    result = CliRunner().invoke(cli, ["locate", "--model", str(tiny_llama_dir), "--device", "cpu",
                                      "--templates-per-job", "1", "--out", str(out), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"locate.csv", "locate.png", "locate.json"}
    assert len(result.stdout.strip().splitlines()) == 3 + 3  # summary, paths, header, three sites


def test_every_shipped_job_and_pronoun_template_aligns(tiny_lm):
    from debiaskit.plugin_host import load_plugins

    host = load_plugins()
    jobs = host.datasets.get("data set", "occupations40").load(None).occupations
    family = host.templates.get("template family", "pronoun")
    prompts = mediation_prompts(tiny_lm, jobs, family, range(len(family.templates)))  # SmolLM2's tokenizer
    assert len(prompts) == len(jobs) * len(family.templates)
    assert {len(p.gendered_tokens) - p.suffix for p in prompts} == {3}  # anchor, "The", the gendered word
