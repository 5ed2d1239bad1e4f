"""Sampling with a method applied (tiny model), the generated-text metrics on hand-made inputs, and the two commands."""

import json
from contextlib import contextmanager

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from debiaskit import DebiasKitError, Intervention, Method, hooked
from debiaskit.cli import cli
from debiaskit.data import spread_templates
from debiaskit.generation import sample_continuations, sample_with_method
from debiaskit.metrics import count_gendered_words, female_word_share, generation_summary, group_disparity
from debiaskit.plugin_host import load_plugins
from debiaskit.word_lists import read_gendered_word_lists

PROMPTS = ["The nurse said that", "The plumber went home because"]


def test_count_gendered_words_matches_lower_case_words_capitalised_and_titles_only_as_written():
    text = "She told him: her son met Ms Lee, ms later. HE shepherd's Mr. himself"
    # female: She, her, Ms (not 'ms', not the 'she' inside 'shepherd'); male: him, son, Mr, himself (not 'HE')
    assert count_gendered_words(text, ["she", "her", "Ms"], ["he", "him", "son", "Mr", "himself"]) == (3, 4)


def test_female_word_share_pools_counts_and_is_nan_without_gendered_words():
    assert female_word_share([1, 0, 2], [1, 2, 0]) == pytest.approx(0.5)  # 3 / 6
    assert female_word_share([0], [0]) != female_word_share([0], [0])


def test_group_disparity_is_the_seed_example():
    # seed 003: mean toxicity 0.5, 0.2, 0.9 -> |1.6/3 - 0.5| + |1.6/3 - 0.2| + |1.6/3 - 0.9|
    assert group_disparity({"man": 0.5, "woman": 0.2, "trans": 0.9}) == pytest.approx(1 / 30 + 1 / 3 + 11 / 30)


def test_generation_summary_on_a_hand_made_frame():
    frame = pd.DataFrame({"group": ["female", "female", "male", "male"], "female_words": [2, 1, 0, 1],
                          "male_words": [0, 1, 2, 1]})
    summary = generation_summary(frame)
    # female jobs 3/4, male jobs 1/4; mean 0.5, disparity 0.25 + 0.25; (2+2+2+2)/4 gendered words per sample
    assert summary == pytest.approx({"female_word_share_female_jobs": 0.75, "female_word_share_male_jobs": 0.25,
                                     "disparity": 0.5, "gendered_words_per_sample": 2.0})


def test_shipped_word_lists_load_and_a_bad_file_is_an_error(tmp_path):
    words = read_gendered_word_lists()
    assert "she" in words.female and "he" in words.male
    bad = tmp_path / "bad.json"
    bad.write_text('{"female": ["she"]}')
    with pytest.raises(DebiasKitError, match="'male' is missing"):
        read_gendered_word_lists(bad)


def test_templates_are_spread_over_the_family():
    family = load_plugins().templates.get("template family", "pronoun")
    assert spread_templates(family, 3) == [0, 8, 16]
    with pytest.raises(DebiasKitError, match="accepted 1 to 17"):
        spread_templates(family, 18)


def test_sampling_is_deterministic_under_a_seed_and_batches_the_samples(tiny_lm):
    first = sample_continuations(tiny_lm, PROMPTS, n_samples=3, max_new_tokens=4, seed=1)
    assert first == sample_continuations(tiny_lm, PROMPTS, n_samples=3, max_new_tokens=4, seed=1, batch_size=2)
    assert [len(samples) for samples in first] == [3, 3]
    assert first != sample_continuations(tiny_lm, PROMPTS, n_samples=3, max_new_tokens=4, seed=2)
    greedy = sample_continuations(tiny_lm, PROMPTS[:1], n_samples=3, max_new_tokens=4, temperature=0)[0]
    assert len(set(greedy)) == 1


def scripted(token_ids):
    """A transform that makes the n-th new token `token_ids[n]` certain (n: the tokens `batch.generated` marks)."""
    def transform(logits, batch):
        generated_so_far = batch.generated.sum(-1)
        assert (generated_so_far == generated_so_far[0]).all()  # the rows of one prompt move in step
        forced = torch.full_like(logits, -1e9)
        forced[..., token_ids[int(generated_so_far[0])]] = 0.0
        return forced
    return transform


def test_the_transform_decides_the_sampled_token_and_end_of_sequence_stops_a_row(tiny_lm):
    she = tiny_lm.tokenizer(" she", add_special_tokens=False)["input_ids"][0]
    always_she = scripted([she] * 3)
    assert (sample_continuations(tiny_lm, PROMPTS[:1], always_she, n_samples=2, max_new_tokens=3)
            == [[" she she she"] * 2])
    she_she_end = scripted([she, she, tiny_lm.tokenizer.eos_token_id])
    assert sample_continuations(tiny_lm, PROMPTS[:1], she_she_end, n_samples=2, max_new_tokens=10) == [[" she she"] * 2]


class EditableRecorder(Method):
    name = "editable-recorder"
    description = "records what a hook sees"

    @contextmanager
    def apply(self, lm):
        self.seen = []

        def record(resid, hook):
            self.seen.append(lm.editable_mask(resid)[:, :, 0].clone())
            return resid

        with hooked(lm, [("blocks.0.hook_resid_post", record)]):
            yield Intervention()


def test_hooks_run_on_every_step_with_the_anchor_not_editable(tiny_lm):
    method = EditableRecorder()
    sample_with_method(tiny_lm, method, PROMPTS[:1], n_samples=2, max_new_tokens=3)
    assert len(method.seen) == 3 and all(mask.shape[0] == 2 for mask in method.seen)
    assert all(not mask[:, 0].any() and mask[:, 1:].all() for mask in method.seen)
    assert not tiny_lm.model.hook_dict["blocks.0.hook_resid_post"].fwd_hooks


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_generate_prints_both_methods_side_by_side(tiny_llama_dir):
    result = invoke("generate", "-m", "logit-rebalance", "--prompt", "The nurse said that", "-n", "2",
                    "--max-new-tokens", "3", "--model", str(tiny_llama_dir), "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "prompt: The nurse said that"
    assert sum(line.lstrip().startswith("none ") for line in lines) == 2
    assert sum(line.lstrip().startswith("logit-rebalance ") for line in lines) == 2


def test_generation_eval_reports_shares_per_job_group_deterministically(tiny_llama_dir):
    args = ("generation-eval", "-m", "logit-rebalance", "-n", "1", "--templates-per-job", "1", "--max-new-tokens", "2",
            "--model", str(tiny_llama_dir), "--device", "cpu", "--format", "json")
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.stderr
    report, again = json.loads(first.stdout), json.loads(second.stdout)
    assert [row["method"] for row in report["methods"]] == ["none", "logit-rebalance"]
    assert all(row["samples"] == 40 for row in report["methods"])  # 40 jobs x 1 template x 1 sample
    drop_time = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert drop_time(report["methods"]) == drop_time(again["methods"])


def test_generation_eval_rejects_a_bad_option_before_loading_a_model():
    result = invoke("generation-eval", "-m", "logit-rebalance", "-o", "logit-rebalance.strength=x",
                    "--model", "nowhere")
    assert result.exit_code == 2 and "takes float" in result.output
