"""No leakage between methods, contained failures, and reproducible numbers, on the tiny model with real plugins.

After every method, succeeded or failed, the model's logits on a fixed probe batch are bit-identical to those before
the run and no hook is left; each method's row is bit-identical whatever ran before it (and whether or not a failing
method ran), so a fresh run with the same seed gives the same numbers. (Across processes: tests/test_resume.py.)"""

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from debiaskit import Intervention, Method, Option
from debiaskit.compare import Comparer
from debiaskit.data import Occupation, OccupationSet, project_data_dir
from debiaskit.evaluator import NEUTRAL_TEXT_FILE, NeutralText
from debiaskit.plugin_host import load_plugins

PLUGINS = Path(__file__).resolve().parent / "plugins_for_tests"
JOBS = OccupationSet("four", "test", (Occupation("nurse", "female", 91.3), Occupation("secretary", "female", 93.0),
                                      Occupation("plumber", "male", 2.3), Occupation("mechanic", "male", 1.8)))
PROBE = ["The nurse said that", "Yesterday the mechanic told us that it", "A"]
OPTIONS = {"leace": {"layers": "1", "edit_positions": "all"}}  # every position: it changes the neutral text too
NEUTRAL_CHARS = 2000


def comparer(lm, host, seed=0):
    family = host.templates.get("template family", "pronoun")
    runner = Comparer(lm, JOBS, family, seed=seed, n_folds=2, bootstrap=20, heldout_templates=2)
    text = (project_data_dir() / NEUTRAL_TEXT_FILE).read_text(encoding="utf-8")
    runner.neutral = NeutralText(lm, text[:NEUTRAL_CHARS])  # the KL and perplexity cost on a shorter text: faster
    return runner


def score(lm, host, names, after_each=None, seed=0):
    """Rows by method name (timings dropped), running `names` in this order on one Comparer."""
    runner = comparer(lm, host, seed)
    rows = {}
    for name in names:
        run = runner.run(name, host.methods.get("method", name), OPTIONS.get(name, {}))
        rows[name] = {k: v for k, v in run.row.items() if k != "seconds"}
        if after_each is not None:
            after_each(name)
    return rows


@pytest.fixture(scope="module")
def host():
    return load_plugins(PLUGINS)


def test_methods_leave_no_trace_and_are_scored_as_if_alone(tiny_lm, host):
    probe = tiny_lm.make_batch([tiny_lm.encode(text) for text in PROBE])
    with torch.no_grad():
        before = tiny_lm.run(probe)
    weights = {name: tensor.clone() for name, tensor in tiny_lm.model.state_dict().items()}

    def unchanged(name):
        with torch.no_grad():
            assert torch.equal(tiny_lm.run(probe), before), f"{name} changed the model's logits"
        assert all(torch.equal(weights[k], v) for k, v in tiny_lm.model.state_dict().items()), name
        assert not [p for p, hook in tiny_lm.model.hook_dict.items() if hook.fwd_hooks or hook.bwd_hooks], name

    with_failures = score(tiny_lm, host, ["none", "fails-in-fit", "logit-rebalance", "leaks-a-hook", "leace",
                                          "fails-in-apply"], after_each=unchanged)
    assert (with_failures["fails-in-fit"]["status"] == "failed"
            and "fit exploded" in with_failures["fails-in-fit"]["error"])
    assert "left a hook behind" in with_failures["leaks-a-hook"]["error"]
    assert "apply exploded" in with_failures["fails-in-apply"]["error"]

    reordered = score(tiny_lm, host, ["none", "leace", "logit-rebalance"])
    for name in ("none", "leace", "logit-rebalance"):
        assert reordered[name] == with_failures[name], name  # bit-identical rows, whatever ran before or failed
    assert with_failures["leace"]["status"] == "ok" and with_failures["leace"]["kl"] > 0



def test_run_files_are_whole_and_as_readable_as_any_file(tmp_path):
    import os

    from debiaskit.run_dir import atomic_write_text

    atomic_write_text(tmp_path / "summary.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o666 & ~mask


class EditsWeights(Method):
    """Doubles an MLP's output weights while applied; with `restore` false it never puts them back."""

    name = "edits-weights"
    description = "a temporary weight edit, restored or not"
    options = (Option("restore", bool, True, "put the original weights back on exit"),)

    @contextmanager
    def apply(self, lm):
        weight = lm.model.blocks[0].mlp.W_out
        original = weight.detach().clone()
        with torch.no_grad():
            weight.mul_(2)
        try:
            yield Intervention()
        finally:
            if self.settings["restore"]:
                with torch.no_grad():
                    weight.copy_(original)


def test_weights_left_edited_fail_the_method_and_stop_later_scoring(tiny_lm, host):
    lm = tiny_lm  # a fresh model per test: this one is left with its weights edited
    runner = comparer(lm, host)
    runner.run("none", host.methods.get("method", "none"), {})
    restored = runner.run("restores", EditsWeights, {"restore": True})
    assert restored.ok, restored.row["error"]
    assert restored.row["stereotype_gap"] != runner.comparison.runs[0].row["stereotype_gap"]  # the edit did act
    kept = runner.run("keeps-edit", EditsWeights, {"restore": False})
    later = runner.run("logit-rebalance", host.methods.get("method", "logit-rebalance"), {})
    assert not kept.ok and "did not restore them" in kept.row["error"]
    assert not later.ok and "keeps-edit left the model's weights changed" in later.row["error"]


class LeavesTorchHook(Method):
    """Adds a plain torch forward hook (not a TransformerLens one) in apply() and never removes it."""

    name = "leaves-torch-hook"
    description = "test: leaks a torch hook"

    @contextmanager
    def apply(self, lm):
        lm.model.blocks[0].mlp.register_forward_hook(lambda module, inputs, output: output * 3)
        yield Intervention()


class SwapsUnembedColumns(Method):
    """Swaps two columns of W_U and leaves them swapped: a permutation, invisible to sums of weights."""

    name = "swaps-columns"
    description = "test: permutes W_U"

    def fit(self, context):
        with torch.no_grad():
            unembed = context.model.model.W_U
            unembed[:, [0, 1]] = unembed[:, [1, 0]].clone()


class Exits(Method):
    """Calls sys.exit (or raises KeyboardInterrupt itself) while it is fitted."""

    name = "exits"
    description = "test: sys.exit in fit"
    options = (Option("how", str, "exit0", "exit0, exit3 or keyboard"),)

    def fit(self, context):
        import sys

        if self.settings["how"] == "keyboard":
            raise KeyboardInterrupt
        sys.exit(0 if self.settings["how"] == "exit0" else 3)


def test_a_leaked_torch_hook_sys_exit_or_keyboard_interrupt_is_that_methods_failed_row_only(tiny_lm, host):
    runner = comparer(tiny_lm, host)
    first = runner.run("none", host.methods.get("method", "none"), {})
    leaked = runner.run("leaves-torch-hook", LeavesTorchHook, {})
    exits = {how: runner.run(f"exits@{how}", Exits, {"how": how}) for how in ("exit0", "exit3", "keyboard")}
    again = runner.run("none@again", host.methods.get("method", "none"), {})
    assert not leaked.ok and "left 1 torch hook(s)" in leaked.row["error"] and "blocks.0.mlp" in leaked.row["error"]
    assert not tiny_lm.model.blocks[0].mlp._forward_hooks
    assert "sys.exit(0)" in exits["exit0"].row["error"] and "sys.exit(3)" in exits["exit3"].row["error"]
    assert exits["keyboard"].row["error"].startswith("KeyboardInterrupt")
    assert again.ok and again.row["stereotype_gap"] == first.row["stereotype_gap"]


def test_a_permutation_of_weights_left_in_place_is_found(tiny_lm, host):
    runner = comparer(tiny_lm, host)
    runner.run("none", host.methods.get("method", "none"), {})
    swapped = runner.run("swaps-columns", SwapsUnembedColumns, {})
    assert not swapped.ok and "did not restore them" in swapped.row["error"]


class RecordsJobs(Method):
    """Remembers the jobs it was given; it declares that it does not learn from them."""

    name = "records-jobs"
    description = "test: what FitContext.train_jobs holds"
    given: list = []

    def fit(self, context):
        RecordsJobs.given.append(context.train_jobs)


def test_a_method_that_does_not_learn_from_jobs_is_given_none(tiny_lm, host):
    runner = comparer(tiny_lm, host)
    runner.run("none", host.methods.get("method", "none"), {})
    assert runner.run("records-jobs", RecordsJobs, {}).ok
    assert RecordsJobs.given == [()]
