"""Re-strided weights (debiaskit.weight_layout): the same logits bit for bit, no copy left for the forward to make,
and the same tensors for every reader and editor of the weights."""

import copy

import einops
import pytest
import torch
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig

from debiaskit.containment import weight_fingerprint
from debiaskit.weight_layout import lay_out_for_forward

LLAMA_GQA = dict(d_model=64, d_head=16, n_heads=4, n_key_value_heads=2, d_mlp=128, n_layers=2, n_ctx=32, d_vocab=50,
                 act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=16,
                 final_rms=True, gated_mlp=True, original_architecture="LlamaForCausalLM")
GPT2_LIKE = dict(d_model=64, d_head=16, n_heads=4, d_mlp=128, n_layers=2, n_ctx=32, d_vocab=50, act_fn="gelu_new",
                 normalization_type="LN")


def tiny_pair(config: dict) -> tuple[HookedSAETransformer, HookedSAETransformer]:
    """A random model and a copy of it whose weights are laid out for the forward."""
    model = HookedSAETransformer(HookedTransformerConfig(**config, device="cpu", seed=0)).eval()
    laid_out = copy.deepcopy(model)
    assert lay_out_for_forward(laid_out) > 0
    return model, laid_out


def logits(model: HookedSAETransformer) -> torch.Tensor:
    tokens = torch.tensor([[1, 5, 7, 9, 11], [0, 0, 2, 4, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        return model(tokens, attention_mask=mask, padding_side="left")


@pytest.mark.parametrize("config", [LLAMA_GQA, GPT2_LIKE], ids=["llama-gqa", "gpt2-like"])
def test_the_forward_gives_the_same_logits_bit_for_bit(config):
    model, laid_out = tiny_pair(config)
    assert torch.equal(logits(model), logits(laid_out))
    assert weight_fingerprint(model) == weight_fingerprint(laid_out)  # the fingerprint reads values, not strides


def test_the_forwards_own_reshapes_of_the_weights_are_views_now():
    _, laid_out = tiny_pair(LLAMA_GQA)
    block = laid_out.blocks[0]
    mlp_weights = (block.mlp.W_gate, block.mlp.W_in, block.mlp.W_out, laid_out.unembed.W_U)
    assert all(weight.T.contiguous().data_ptr() == weight.data_ptr() for weight in mlp_weights)
    for weight in (block.attn.W_Q, block.attn._W_K, block.attn._W_V):  # TransformerLens's simple_attn_linear
        read = einops.rearrange(weight, "head_index d_model d_head -> (head_index d_head) d_model")
        assert read.data_ptr() == weight.data_ptr() and read.is_contiguous()
    read = einops.rearrange(block.attn.W_O, "head_index d_head d_model -> d_model (head_index d_head)")
    assert read.data_ptr() == block.attn.W_O.data_ptr() and read.is_contiguous()


def test_an_edit_in_place_reaches_the_forward_as_before():
    model, laid_out = tiny_pair(LLAMA_GQA)
    edit = torch.randn(128, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for each in (model, laid_out):
            each.blocks[1].mlp.W_out.add_(edit)
            each.blocks[0].attn.W_O[1, :, 3] = 0.5
    assert torch.equal(logits(model), logits(laid_out))
    assert not torch.equal(logits(laid_out), logits(tiny_pair(LLAMA_GQA)[1]))
