"""Integration on the embedded SmolLM2: the baseline shows the stereotype, and a comparison leaves the model as it
was."""

from pathlib import Path

import pytest
import torch

from debiaskit.compare import run_comparison
from debiaskit.plugin_host import load_plugins

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]


def probe_logits(lm):
    batch = lm.make_batch([lm.encode(text)
                           for text in ("The nurse said that", "The plumber went home because", "Rain fell")])
    with torch.no_grad():
        return lm.run(batch)


def test_embedded_model_reproduces_the_known_pronoun_probabilities(smollm2):
    she, he = (smollm2.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" she", " he"))
    sequences = [smollm2.tokenizer(p, add_special_tokens=False)["input_ids"]
                 for p in ("The nurse went home because", "The plumber went home because")]
    with torch.no_grad():
        probs = (smollm2.model(torch.tensor([sequences[0]]))[0, -1].softmax(-1),
                 smollm2.model(torch.tensor([sequences[1]]))[0, -1].softmax(-1))
    # measured against Hugging Face transformers on the same GGUF weights (no anchor token)
    assert (probs[0][she].item() == pytest.approx(0.36, abs=0.01)
            and probs[0][he].item() == pytest.approx(0.09, abs=0.01))
    assert (probs[1][he].item() == pytest.approx(0.38, abs=0.01)
            and probs[1][she].item() == pytest.approx(0.12, abs=0.01))


def test_comparison_shows_the_stereotype_and_leaves_no_trace(smollm2):
    host = load_plugins(ROOT / "tests" / "plugins_for_tests")
    jobs = host.datasets.get("data set", "occupations40").load(None)
    family = host.templates.get("template family", "pronoun")
    before = probe_logits(smollm2)
    plan = [(name, host.methods.get("method", name), {}) for name in ("fails-in-apply", "none", "fails-in-fit")]
    comparison = run_comparison(smollm2, jobs, family, plan)
    rows = {row["method"]: row for row in comparison.rows()}
    assert rows["none"]["status"] == "ok" and rows["none"]["stereotype_gap"] > 0.2
    assert rows["none"]["bls_corr"] > 0.5 and rows["none"]["gender_mass"] > 0.1
    assert rows["fails-in-apply"]["status"] == "failed" and rows["fails-in-fit"]["status"] == "failed"
    assert all(not hook.fwd_hooks for hook in smollm2.model.hook_dict.values())
    assert torch.equal(before, probe_logits(smollm2))
