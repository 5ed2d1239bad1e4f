"""Shared fixtures: a tiny random Llama-shaped model (fast, offline) and the embedded SmolLM2 (marker `model`); and
the comparison of two runs' table rows to float rounding."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from debiaskit.model import LoadedModel, anchor_token_id, load_model, smollm2_gguf_location


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    directory, gguf_file = smollm2_gguf_location()
    return AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file)


def make_tiny_lm(seed: int = 0, n_layers: int = 2, d_model: int = 64) -> LoadedModel:
    """A random Llama-architecture HookedSAETransformer with SmolLM2's tokenizer (so real words tokenize)."""
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    tokenizer = smollm2_tokenizer()
    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        d_model=d_model, d_head=16, n_heads=d_model // 16, d_mlp=4 * d_model, n_layers=n_layers, n_ctx=256,
        d_vocab=len(tokenizer), act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=16, final_rms=True, gated_mlp=True, original_architecture="LlamaForCausalLM",
        default_prepend_bos=False, device="cpu", seed=seed,
    )
    model = HookedSAETransformer(cfg, tokenizer=tokenizer, move_to_device=False).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-llama", anchor_token_id=anchor_token_id(tokenizer))


@pytest.fixture
def tiny_lm() -> LoadedModel:
    return make_tiny_lm()


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """The real embedded model, loaded once per test session. Tests must leave it unhooked and unedited."""
    return load_model("smollm2", device="cpu")


def save_tiny_llama(directory, seed: int = 0):
    """A random 2-layer Llama saved as a Hugging Face folder in `directory`: the offline stand-in for a hub model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smollm2_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def two_tiny_llama_dirs(tmp_path_factory):
    """Two random 2-layer Llamas of different seeds, in folders named tiny-a and tiny-b."""
    base = tmp_path_factory.mktemp("two-models")
    return save_tiny_llama(base / "tiny-a", seed=1), save_tiny_llama(base / "tiny-b", seed=2)


def numbers(row):
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "seconds"}


def assert_same_numbers(here, there, at_least=1, rel=1e-6):
    """Two rows have the same numeric columns (at least `at_least`), each equal to `rel` relative or 1e-6 absolute
    (NaN equal to NaN)."""
    a, b = numbers(here), numbers(there)
    assert a.keys() == b.keys() and len(a) >= at_least
    for column in a:
        assert (math.isnan(a[column]) and math.isnan(b[column])) or b[column] == pytest.approx(
            a[column], rel=rel, abs=1e-6), (here.get("model"), here["method"], here.get("value"), column)


def assert_same_rows(first, again, rel=1e-4):
    """Two runs' table rows (summary.json's "methods") are the same rows: the same methods in order, the same text
    columns, the same numbers to float rounding (`rel` relative, 1e-6 absolute: a row's forward may start from
    residuals another method kept, and ratios of small differences, such as the change of a tiny model's gap of
    0.001, carry that rounding further than the probabilities do)."""
    assert [row["method"] for row in again] == [row["method"] for row in first]
    for row_first, row_again in zip(first, again):
        assert {k: v for k, v in row_again.items() if k not in numbers(row_again) and k != "seconds"} == {
            k: v for k, v in row_first.items() if k not in numbers(row_first) and k != "seconds"}
        assert_same_numbers(row_first, row_again, rel=rel)
