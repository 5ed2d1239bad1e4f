"""The lm-evaluation-harness bridge: its three request types against debiaskit's own scoring, lm-eval's CrowS-Pairs
task on the shipped file against `debiaskit.crows_pairs`, and `debiaskit lm-eval` on good and bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from lm_eval.api.instance import Instance
from shared_data import needs_crows

from debiaskit import hooked
from debiaskit.cli import cli
from debiaskit.crows_pairs import CROWS_FILE, crows_summary, load_crows_pairs, score_crows_pairs
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import continuation_log_likelihoods, sequence_log_likelihoods
from debiaskit.generation import fitted_method, sample_continuations
from debiaskit.lm_eval_bridge import DebiasKitLM, check_tasks, evaluate_applied, task_manager
from debiaskit.plugin_host import load_plugins
from debiaskit.professions import shared_data_dir

TASK_TEMPLATE = Path(__file__).parent / "lm_eval_tasks" / "crows_gender_local.yaml"
TASK = "crows_gender_local"


def request(kind, *arguments):
    return Instance(request_type=kind, doc={}, arguments=tuple(arguments), idx=0)


@pytest.fixture
def local_task(tmp_path):
    """The CrowS-Pairs task YAML with its data file set to the shipped CSV (or to `data_file`)."""
    def write(data_file=None):
        data_file = data_file or shared_data_dir() / CROWS_FILE
        path = tmp_path / "tasks" / f"{TASK}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(TASK_TEMPLATE.read_text().replace("DATA_FILE", str(data_file)))
        return path

    return write


def test_loglikelihood_equals_debiaskits_scores(tiny_lm):
    model = DebiasKitLM(tiny_lm, batch_size=2)
    context, continuation = "The nurse said that", " she was tired"
    empty, given = model.loglikelihood([request("loglikelihood", "", "The nurse said that she was tired"),
                                        request("loglikelihood", context, continuation)])
    assert empty[0] == pytest.approx(sequence_log_likelihoods(tiny_lm, [tiny_lm.encode(context + continuation)],
                                                              None)[0], abs=1e-5)
    whole, context_ids = tiny_lm.encode(context + continuation), tiny_lm.encode(context)
    expected, _ = continuation_log_likelihoods(tiny_lm, [whole], [len(whole) - len(context_ids)], None)
    assert given[0] == pytest.approx(expected[0], abs=1e-5)
    assert given[0] > empty[0]  # fewer tokens scored


def test_greedy_flag_says_whether_the_continuation_is_the_argmax(tiny_lm):
    model = DebiasKitLM(tiny_lm)
    context = "The nurse said that"
    greedy_text = sample_continuations(tiny_lm, [context], None, max_new_tokens=3, temperature=0)[0][0]
    (_, is_greedy), (_, not_greedy) = model.loglikelihood([request("loglikelihood", context, greedy_text),
                                                           request("loglikelihood", context, " banana bread")])
    assert is_greedy and not not_greedy


def test_hooks_and_transforms_are_honoured(tiny_lm):
    sentence = "The engineer said that he was late"
    baseline = DebiasKitLM(tiny_lm).loglikelihood([request("loglikelihood", "", sentence)])[0][0]

    def scale(resid, hook):
        return resid * (1 + tiny_lm.editable_mask(resid))  # doubles every editable position

    with hooked(tiny_lm, [("blocks.0.hook_resid_post", scale)]):
        hooked_score = DebiasKitLM(tiny_lm).loglikelihood([request("loglikelihood", "", sentence)])[0][0]
        assert hooked_score == pytest.approx(
            sequence_log_likelihoods(tiny_lm, [tiny_lm.encode(sentence)], None)[0], abs=1e-5)
    assert abs(hooked_score - baseline) > 1e-3

    def uniform(logits, batch):
        return torch.zeros_like(logits)

    n_tokens = len(tiny_lm.encode(sentence)) - 1
    uniform_score = DebiasKitLM(tiny_lm, uniform).loglikelihood([request("loglikelihood", "", sentence)])[0][0]
    assert uniform_score == pytest.approx(-n_tokens * math.log(tiny_lm.model.cfg.d_vocab))


def test_rolling_predicts_every_token_once_in_windows_that_fit(tiny_lm):
    def uniform(logits, batch):
        return torch.zeros_like(logits)

    text = " ".join(f"word{i}" for i in range(200))  # longer than tiny_lm's 256-token context
    n_tokens = len(tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert n_tokens > 2 * tiny_lm.model.cfg.n_ctx
    [total] = DebiasKitLM(tiny_lm, uniform).loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert total == pytest.approx(-n_tokens * math.log(tiny_lm.model.cfg.d_vocab))
    short = "The nurse said that she was tired."
    [rolled] = DebiasKitLM(tiny_lm).loglikelihood_rolling([request("loglikelihood_rolling", short)])
    assert rolled == pytest.approx(sequence_log_likelihoods(tiny_lm, [tiny_lm.encode(short)], None)[0], abs=1e-5)


def test_generate_until_is_greedy_and_cut_at_stop_strings(tiny_lm):
    context = "The nurse said that"
    full = sample_continuations(tiny_lm, [context], None, max_new_tokens=6, temperature=0)[0][0]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    model = DebiasKitLM(tiny_lm)
    uncut, cut = model.generate_until([request("generate_until", context, {"until": ["\u2603"], "max_gen_toks": 6}),
                                       request("generate_until", context, {"until": [stop], "max_gen_toks": 6})])
    assert uncut == full and cut == full.split(stop)[0] and len(cut) < len(full)
    she = tiny_lm.tokenizer(" she", add_special_tokens=False)["input_ids"][0]

    def always_she(logits, batch):
        forced = torch.full_like(logits, -1e9)
        forced[..., she] = 0.0
        return forced

    [forced] = DebiasKitLM(tiny_lm, always_she).generate_until(
        [request("generate_until", context, {"until": ["\n"], "max_gen_toks": 3})])
    assert forced == " she she she"


@needs_crows
def test_lm_eval_crows_task_equals_debiaskits_score(tiny_lm, local_task):
    host, manager = load_plugins(), task_manager(include_defaults=False)
    tasks = check_tasks(manager, [str(local_task())])
    pairs = load_crows_pairs()
    jobs = host.datasets.get("data set", "occupations40").load(None).occupations
    family = host.templates.get("template family", "pronoun")
    frames = {}
    for name in ("none", "logit-rebalance"):
        method = fitted_method(tiny_lm, host.methods.get("method", name), {}, jobs, family, seed=0)
        with method.apply(tiny_lm) as intervention:
            results = evaluate_applied(tiny_lm, intervention.logits_transform, tasks, manager)["results"][TASK]
            frames[name] = score_crows_pairs(tiny_lm, pairs, intervention.logits_transform)
        stereotyped = results["pct_stereotype,none"] * 262
        assert results["sample_len"] == 262 and stereotyped == pytest.approx(round(stereotyped), abs=1e-9)
        assert crows_summary(frames[name], 0, 0)["crows_pct_stereotype"] == pytest.approx(
            100 * round(stereotyped) / 262, abs=1e-12)
        differences = frames[name]["loglik_more"] - frames[name]["loglik_less"]
        # the same sentences, batched in another order (so padded differently): equal to float32 rounding
        assert results["likelihood_diff,none"] == pytest.approx(differences.abs().mean(), abs=1e-6)
    changed = np.abs(frames["logit-rebalance"]["loglik_more"] - frames["none"]["loglik_more"])
    assert changed.max() > 1e-3  # the method's transform reached the scores


@needs_crows
def test_missing_or_malformed_data_files_are_bad_input(tmp_path, local_task):
    manager = task_manager(include_defaults=False)
    with pytest.raises(DebiasKitError, match=f"cannot load lm-eval task .*{TASK}.yaml: .*dataset_path"):
        check_tasks(manager, [str(local_task(tmp_path / "missing.csv"))])
    no_bias_type = tmp_path / "no_bias_type.csv"
    no_bias_type.write_text("sent_more,sent_less\nHe ran.,She ran.\n")
    with pytest.raises(DebiasKitError, match="cannot load lm-eval task .*'bias_type'"):
        check_tasks(manager, [str(local_task(no_bias_type))])
    with pytest.raises(DebiasKitError, match="unknown lm-eval task\\(s\\): no_such_task; `lm-eval ls tasks`"):
        check_tasks(manager, ["no_such_task"])


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_unknown_task_exits_2_and_says_how_to_list_them():
    result = invoke("lm-eval", "--tasks", "crows_pairs_english_gender,no_such_task")
    assert result.exit_code == 2
    assert "unknown lm-eval task(s): no_such_task; `lm-eval ls tasks` lists the accepted names" in result.stderr


@needs_crows
def test_cli_prints_a_table_per_method_and_writes_json(tiny_llama_dir, local_task, tmp_path):
    out = tmp_path / "results.json"
    result = invoke("lm-eval", "-m", "logit-rebalance", "--tasks", str(local_task()), "--limit", "20",
                    "--model", str(tiny_llama_dir), "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("none\n|") and "\nlogit-rebalance\n|" in result.stdout
    assert result.stdout.count("pct_stereotype") == 2
    document = json.loads(out.read_text())
    assert [m["method"] for m in document["methods"]] == ["none", "logit-rebalance"]
    for run in document["methods"]:
        assert run["lm_eval"]["results"][TASK]["sample_len"] == 20
        assert 0.0 <= run["lm_eval"]["results"][TASK]["pct_stereotype,none"] <= 1.0
