"""`debiaskit.sae.training`: a tiny SAE trained through SAELens's runner on a tiny model, reloaded, and its card."""

from __future__ import annotations

import json
import math

import pytest
import torch

from debiaskit.errors import DebiasKitError
from debiaskit.sae.corpus import CONTEXT_SIZE, anchored_sequences, read_corpus, strip_gutenberg_boilerplate
from debiaskit.sae.decoder_bias import geometric_median, initial_decoder_bias
from debiaskit.sae.source import TOP_TOKENS_FILE
from debiaskit.sae.training import CARD_FILE, TrainingSettings, train_sae

ETEXT = """The Project Gutenberg Etext of A Book
Please take a look at the important information in this header.
*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*

Chapter 1. It was a bright cold day.

End of The Project Gutenberg Etext of A Book
More licence text.
"""

PROSE = (
    "The river ran past the mill and the miller watched the water turn the wheel. "
    "In the morning the bakers lit their ovens, and by noon the market was full of bread, apples and noise. "
    "A letter arrived for the schoolteacher, who read it twice before folding it into her coat. "
)


def test_gutenberg_header_and_licence_are_stripped():
    assert strip_gutenberg_boilerplate(ETEXT) == "Chapter 1. It was a bright cold day."
    newer = "Header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nBody.\n" \
            "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n" \
            "*END THE SMALL PRINT! FOR PUBLIC DOMAIN EBOOKS*Ver.02/11/02*END*\n"
    assert strip_gutenberg_boilerplate(newer) == "Body."
    assert strip_gutenberg_boilerplate("No markers here.") == "No markers here."


def test_every_sequence_starts_with_the_anchor(tiny_lm):
    sequences = anchored_sequences(tiny_lm, PROSE * 20)
    assert sequences and all(len(s) == CONTEXT_SIZE and s[0] == tiny_lm.anchor_token_id for s in sequences)


def test_geometric_median_by_hand():
    # on a line it is the ordinary median
    assert (geometric_median(torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)).item()
            == pytest.approx(1.0, abs=1e-6))
    # a point holding half the mass or more is the median, however far the rest lies (the mean here is (25, 0))
    majority = torch.tensor([[0.0, 0.0]] * 3 + [[100.0, 0.0]], dtype=torch.float64)
    assert geometric_median(majority).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    # symmetric points: the centre
    square = torch.tensor([[1.0, 1.0], [1.0, 3.0], [3.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    assert geometric_median(square).tolist() == pytest.approx([2.0, 2.0], abs=1e-9)


def test_decoder_bias_starts_at_the_median_of_non_anchor_activations(tiny_lm):
    sequences = anchored_sequences(tiny_lm, PROSE * 20)[:3]
    _, cache = tiny_lm.model.run_with_cache(torch.tensor(sequences), names_filter="blocks.1.hook_resid_post")
    without_anchor = cache["blocks.1.hook_resid_post"][:, 1:].reshape(-1, 64).double()
    expected = geometric_median(without_anchor)
    assert torch.allclose(initial_decoder_bias(tiny_lm, "blocks.1.hook_resid_post", sequences), expected, atol=1e-5)
    with_anchor = geometric_median(cache["blocks.1.hook_resid_post"].reshape(-1, 64).double())
    assert not torch.allclose(with_anchor, expected, atol=1e-5)


def test_corpus_needs_text(tiny_lm, tmp_path):
    with pytest.raises(DebiasKitError, match="no \\*.txt"):
        read_corpus(tiny_lm, tmp_path)


def test_tiny_sae_trains_reloads_and_has_a_card(tiny_lm, tmp_path):
    from sae_lens import SAE

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(PROSE * 60, encoding="utf-8")
    (corpus / "b.txt").write_text(ETEXT.replace("Chapter 1. It was a bright cold day.", PROSE * 40), encoding="utf-8")
    out = tmp_path / "sae"
    settings = TrainingSettings(hook_name="blocks.1.hook_resid_post", d_sae=256, k=8, training_tokens=4096,
                                batch_tokens=512, lr=1e-3, dead_feature_window=4)
    card = train_sae(tiny_lm, corpus, out, settings, command="debiaskit sae train (test)")

    sae = SAE.load_from_disk(out)
    assert sae.cfg.d_in == 64 and sae.cfg.d_sae == 256 and sae.W_dec.dtype == torch.float16
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    on_disk = json.loads((out / CARD_FILE).read_text())
    assert on_disk == card
    assert card["tokens_seen"] >= 4096 and card["command"] == "debiaskit sae train (test)"
    assert card["decoder_bias_init"].startswith("geometric median")
    assert [f["name"] for f in card["corpus"]["files"]] == ["a.txt", "b.txt"]
    assert all(len(f["sha256"]) == 64 and f["heldout_tokens"] > 0 for f in card["corpus"]["files"])
    quality = card["quality"]
    for key in ("explained_variance", "mean_l0", "dead_latent_fraction", "ce_clean", "ce_spliced", "ce_zero_ablation",
                "ce_loss_recovered"):
        assert isinstance(quality[key], float) and math.isfinite(quality[key]), key
    assert quality["explained_variance"] <= 1.0 and 0.0 <= quality["dead_latent_fraction"] <= 1.0
    assert 0.0 < quality["mean_l0"] <= 8.0  # TopK: never more than k latents per token
    assert quality["reconstruction_tokens"] == sum(f["heldout_tokens"] for f in card["corpus"]["files"])
    top_tokens = json.loads((out / TOP_TOKENS_FILE).read_text())
    assert top_tokens and all(0 <= int(latent) < 256 for latent in top_tokens)
    first = next(iter(top_tokens.values()))
    assert [row[2] for row in first] == sorted((row[2] for row in first), reverse=True)


def test_l1_sae_trains_through_the_same_runner(tiny_lm, tmp_path):
    from sae_lens import SAE

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(PROSE * 60, encoding="utf-8")
    settings = TrainingSettings(hook_name="blocks.0.hook_resid_post", d_sae=128, architecture="standard",
                                sparsity_coefficient=0.5, training_tokens=2048, batch_tokens=512, lr=1e-3)
    card = train_sae(tiny_lm, corpus, tmp_path / "sae", settings, command="test")
    sae = SAE.load_from_disk(tmp_path / "sae")
    assert sae.cfg.architecture() == "standard" and sae.cfg.d_sae == 128
    assert card["settings"]["sparsity_coefficient"] == 0.5 and 0.0 < card["quality"]["mean_l0"] <= 128


def test_unknown_architecture_is_refused(tiny_lm, tmp_path):
    with pytest.raises(DebiasKitError, match="accepted: topk, batchtopk, standard, jumprelu"):
        train_sae(tiny_lm, tmp_path, tmp_path / "out", TrainingSettings(architecture="gated"), command="test")
