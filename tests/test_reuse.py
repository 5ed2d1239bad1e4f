"""Reusing the baseline's residuals (debiaskit.reuse): every built-in method is scored the same with the forward
started above what it touches as with the full forward, and a method that hooks what it did not declare fails."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from debiaskit import FitContext, Intervention, Method, Touches, hooked
from debiaskit.compare import Comparer
from debiaskit.data import project_data_dir
from debiaskit.evaluator import NEUTRAL_TEXT_FILE, NeutralText
from debiaskit.gendered_text import GENDERED_TEXT_FILE, GenderedText, split_passages
from debiaskit.plugin_host import load_plugins
from debiaskit.reuse import KeptResiduals, block_of, first_touched_block
from tests.conftest import make_tiny_lm
from tests.test_cda import CORPUS
from tests.test_cda import QUICK as CDA_QUICK
from tests.test_dama import QUICK as DAMA_QUICK
from tests.test_reliability import JOBS
from tests.test_sae_ablation import save_tiny_sae

TOLERANCE = 1e-5
LOGITS_ONLY = {"logit-rebalance", "self-debias"}


def test_block_of_names_the_block_a_hook_point_or_weight_lies_in(tiny_lm):
    n_layers = tiny_lm.n_layers  # 2
    assert block_of("blocks.1.hook_resid_post", n_layers) == 1
    assert block_of("blocks.0.attn.hook_z", n_layers) == 0
    assert block_of("blocks.1.mlp.W_out", n_layers) == 1
    assert block_of("ln_final.hook_normalized", n_layers) == 2
    assert block_of("unembed.W_U", n_layers) == 2
    assert block_of("hook_embed", n_layers) == 0
    assert first_touched_block(tiny_lm, None) == 0  # undeclared: the full forward
    assert first_touched_block(tiny_lm, Touches()) == 2  # a logits transform only: the final norm and unembedding
    assert first_touched_block(tiny_lm, Touches(("blocks.1.hook_resid_post",), ("blocks.0.mlp.W_out",))) == 0


def builtin_options(tmp_path) -> dict[str, dict]:
    """Every built-in method at its smallest real setting on the 2-layer tiny model, touching block 1 where it can
    choose (block 0 would leave nothing to reuse)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS * 3, encoding="utf-8")
    sae = save_tiny_sae(tmp_path / "sae")
    return {
        "leace": {"layers": "1"},
        "logit-rebalance": {},
        "sae-ablation": {"sae": sae},
        "sae-splice": {"sae": sae},
        "lsdm": {"layers": "1"},
        "sae-steer": {"sae": sae},
        "occupation-gate": {"layers": "1"},
        "inlp": {"layer": 1, "iterations": 2},
        "sentence-debias": {"layer": 1, "sentences": 6, "corpus": str(corpus)},
        "self-debias": {},
        "caa": {"layer": 1},
        "dama": {"layers": "1", **DAMA_QUICK},
        "cda": {**CDA_QUICK, "corpus": str(corpus)},
    }


def comparer(lm, host, reuse):
    """A Comparer on a short neutral text and a few gendered passages, with the baseline scored."""
    family = host.templates.get("template family", "pronoun")
    runner = Comparer(lm, JOBS, family, n_folds=2, heldout_templates=2, reuse_residuals=reuse)
    runner.neutral = NeutralText(lm, (project_data_dir() / NEUTRAL_TEXT_FILE).read_text(encoding="utf-8")[:800])
    passages = split_passages((project_data_dir() / GENDERED_TEXT_FILE).read_text(encoding="utf-8"))
    runner.gendered = GenderedText(lm, runner.gendered.targets, "\n\n".join(passages[:6]))
    runner.run("none", host.methods.get("method", "none"), {})
    return runner


def test_every_builtin_method_scores_the_same_on_the_reused_path(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_CACHE_DIR", str(tmp_path / "cache"))
    host = load_plugins()
    options = builtin_options(tmp_path)
    assert set(options) == set(host.methods.things) - {"none"}, "a built-in method is missing from this test"
    full_path, reused_path = comparer(tiny_lm, host, reuse=False), comparer(tiny_lm, host, reuse=True)
    for name, given in options.items():
        method = host.methods.get("method", name)
        full = full_path.run(name, method, given)
        first = reused_path.run(name, method, given)  # may compute what it starts from
        read_before = reused_path.residuals.batches_read.copy()
        again = reused_path.run(name, method, given)  # reads it
        if name == "cda":  # it trains every weight: it declares nothing and gets the full forward
            assert method(**given).touches(tiny_lm) is None
        else:  # a logits transform starts at the final norm (block 2), every other method at its block 1
            start = 2 if name in LOGITS_ONLY else 1
            assert reused_path.residuals.batches_read[start] > read_before[start], f"{name} read nothing at {start}"
        for reused in (first, again):
            assert full.ok and reused.ok, (full.row["error"], reused.row["error"])
            for kind in ("prompts", "controls"):
                for column in ("p_male", "p_female"):
                    np.testing.assert_allclose(reused.results[kind][column], full.results[kind][column],
                                               atol=TOLERANCE, rtol=0, err_msg=f"{name} {kind} {column}")
            for column in ("kl", "ppl_ratio", "kl_gendered", "agreement_share"):
                assert reused.row[column] == pytest.approx(full.row[column], abs=TOLERANCE), f"{name} {column}"


class DeclaresTooLittle(Method):
    name = "declares-too-little"
    description = "hooks block 1 but declares a logits transform only"

    @contextmanager
    def apply(self, lm):
        with hooked(lm, [("blocks.1.hook_resid_post", lambda resid, hook: resid * 0.5)]):
            yield Intervention()

    def touches(self, lm):
        return Touches()


def test_a_method_that_hooks_what_it_did_not_declare_fails_its_row(tiny_lm):
    host = load_plugins()
    runner = Comparer(tiny_lm, JOBS, host.templates.get("template family", "pronoun"))
    runner.neutral = NeutralText(tiny_lm, "The river ran past the mill and on to the sea.")
    runner.run("none", host.methods.get("method", "none"), {})
    run = runner.run("declares-too-little", DeclaresTooLittle, {})
    assert run.row["status"] == "failed"
    assert "hooks blocks.1.hook_resid_post but its touches() declares no hook point" in run.row["error"]


def fitted_tensors(method) -> dict[str, torch.Tensor]:
    """What a bottom-up fit learned per layer: LSDM's and DAMA's W_out edits, occupation-gate's u and v."""
    if hasattr(method, "gates"):
        return {f"{layer} {part}": getattr(gate, part) for layer, gate in method.gates.items()
                for part in ("direction", "weights")}
    return {str(layer): edit for layer, edit in method.edits.items()}


@pytest.mark.parametrize("name, given", [("lsdm", {"layers": (0, 1, 2)}),
                                         ("dama", {"layers": (1, 2), **DAMA_QUICK, "dimension": 2}),
                                         ("occupation-gate", {"layers": (0, 1, 2)})])
def test_a_bottom_up_fit_is_the_same_starting_from_kept_residuals(name, given, monkeypatch):
    lm = make_tiny_lm(n_layers=3)
    host = load_plugins()
    context = FitContext(lm, JOBS.occupations, host.templates.get("template family", "pronoun"), seed=0)
    hits = []
    read = KeptResiduals.read

    def counted(self, block, keys, width):
        found = read(self, block, keys, width)
        hits.append(found is not None)
        return found

    monkeypatch.setattr(KeptResiduals, "read", counted)
    reused = host.methods.get("method", name)(**given)
    reused.fit(context)
    assert any(hits), f"{name}: no read started from kept residuals"
    monkeypatch.setattr(KeptResiduals, "read", lambda self, block, keys, width: None)  # every read from the embedding
    full = host.methods.get("method", name)(**given)
    full.fit(context)
    learned, expected = fitted_tensors(reused), fitted_tensors(full)
    assert set(learned) == set(expected) and {int(key.split()[0]) for key in expected} == set(given["layers"])
    for key, tensor in expected.items():
        torch.testing.assert_close(learned[key], tensor, rtol=1e-4, atol=1e-6, msg=f"{name} {key}")
