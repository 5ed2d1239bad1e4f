"""Store the weights in the memory layout TransformerLens's forward reads them in, so no forward copies them.

TransformerLens 3.9 turns each weight into the layout `F.linear` takes on every forward call: `W_gate.T.contiguous()`,
`W_in.T.contiguous()`, `W_out.T.contiguous()` in the gated MLP, `W_U.T.contiguous()` in the unembedding, and
`rearrange(W_Q, "h m d -> (h d) m")` (likewise K, V and `W_O`), which copies. For SmolLM2-135M that is every weight,
about 540 MB, copied once per batch: 18% of a batch of 64 short prompts and 30% of a batch of 16 gendered passages
on a 2-core CPU (benchmarks/README.md).

`lay_out_for_forward` keeps each such parameter's shape and values and changes only its strides, so that exactly
that expression is already contiguous and `.contiguous()` (or the reshape) returns a view. `F.linear` then receives
the same values in the same layout as before: the logits are bit-identical (tests/test_weight_layout.py), and every
reader of the parameters (hooks, methods that edit weights in place, `weight_fingerprint`) sees the same tensor.
A method that replaces a parameter outright gets the ordinary layout back, which is correct, only slower.
"""

from __future__ import annotations

import torch

# per parameter name: the permutation of its axes that TransformerLens's forward makes contiguous
_MLP_LAYOUT = {"W_gate": (1, 0), "W_in": (1, 0), "W_out": (1, 0)}  # [d_model, d_mlp] read as [d_mlp, d_model]
_UNEMBED_LAYOUT = {"W_U": (1, 0)}  # [d_model, d_vocab] read as [d_vocab, d_model]
# [head, d_model, d_head] read as [(head d_head), d_model]; W_O [head, d_head, d_model] as [d_model, (head d_head)]
_ATTENTION_LAYOUT = {"W_Q": (0, 2, 1), "W_K": (0, 2, 1), "W_V": (0, 2, 1), "_W_K": (0, 2, 1), "_W_V": (0, 2, 1),
                     "W_O": (2, 0, 1)}


def _layouts() -> dict[type, dict[str, tuple[int, ...]]]:
    """Per TransformerLens module class whose forward copies its weights: their layouts. (The plain MLP of GPT-2
    multiplies with `addmm` as its weights lie, so it is left as it is.)"""
    from transformer_lens.components import GatedMLP, Unembed
    from transformer_lens.components.abstract_attention import AbstractAttention

    return {GatedMLP: _MLP_LAYOUT, Unembed: _UNEMBED_LAYOUT, AbstractAttention: _ATTENTION_LAYOUT}


def lay_out_for_forward(model: torch.nn.Module) -> int:
    """Re-stride, in place, the weights whose forward would copy them; returns how many were re-strided."""
    layouts = _layouts()
    changed = 0
    with torch.no_grad():
        for module in model.modules():
            layout = next((found for kind, found in layouts.items() if isinstance(module, kind)), {})
            for name, order in layout.items():
                parameter = module._parameters.get(name)
                if parameter is None or parameter.dim() != len(order):
                    continue
                inverse = tuple(order.index(axis) for axis in range(len(order)))
                parameter.data = parameter.data.permute(*order).contiguous().permute(*inverse)
                changed += 1
    return changed
