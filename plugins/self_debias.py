"""Self-Debias: let the model's own reading of a bias description veto the words it would make likelier.

Schick, Udupa, Schuetze 2021, "Self-Diagnosis and Self-Debiasing: A Proposal for Reducing Corpus-Based Bias in NLP"
(TACL, arXiv:2103.00453), section 3.2, as bias-bench (Meade et al. 2022) runs it for gender. For each next-token
prediction after the text x, with p(w | x) the model's distribution and p(w | y, x) the same with the bias-describing
prefix y ("The following text discriminates against people because of their gender: ") in front of x:

    delta(w)   = p(w | y, x) - p(w | x)
    alpha(w)   = max(epsilon, exp(-lambda * max(0, delta(w))))
    p~(w | x)  = alpha(w) p(w | x) / sum_v alpha(v) p(v | x)

with lambda 50 (`decay`) and epsilon 0.01, the paper's values. A word the prefix makes likelier is scaled down
exponentially in how much likelier; every other word keeps its probability before renormalising. It is a logits
transform: at every scored position the transform runs the model once more on the prefixed text (the contract lets
a transform run the model itself), and returns log p~ as the new logits. It learns nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from debiaskit import Intervention, LoadedModel, Method, Option, Touches, hookimpl
from debiaskit.model import Batch

PAPER_PREFIX = "The following text discriminates against people because of their gender: "


class SelfDebias(Method):
    name = "self-debias"
    description = "Self-Debias (Schick et al. 2021): decay the words a bias-describing prefix makes likelier"
    options = (
        Option("decay", float, 50.0, "lambda: how fast a word's probability decays with the prefix's boost",
               minimum=0),
        Option("epsilon", float, 0.01, "the smallest factor a probability is scaled by", minimum=0, maximum=1),
        Option("prefix", str, PAPER_PREFIX, "the bias-describing text put in front of the input"),
    )
    strength_knob = "decay"

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        prefix_ids = lm.tokenizer(self.settings["prefix"], add_special_tokens=False)["input_ids"]

        def transform(logits: torch.Tensor, batch: Batch) -> torch.Tensor:  # logits [batch, pos, vocab]
            prefixed = prefixed_logits(lm, batch, prefix_ids, logits.shape[1])
            debiased = torch.empty_like(logits)
            for row in range(len(logits)):  # row by row: the formula's vocabulary-wide temporaries stay one row big
                debiased[row] = self_debiased_log_probs(logits[row], prefixed[row], self.settings["decay"],
                                                        self.settings["epsilon"])
            return debiased

        yield Intervention(logits_transform=transform)

    def touches(self, lm: LoadedModel) -> Touches:
        return Touches()  # a logits transform only (its own forward on the prefixed text changes nothing)


def prefixed_logits(lm: LoadedModel, batch: Batch, prefix_ids: list[int], width: int) -> torch.Tensor:
    """[batch, width, vocab]: the model's logits on each row of `batch` with `prefix_ids` put after its anchor,
    aligned with the row's own columns (left padding keeps every row's last token in the last column, so column i
    of the result predicts the same next token as column i of the unprefixed logits)."""
    anchor = 1 if lm.anchor_token_id is not None else 0
    sequences = []
    for row, mask in zip(batch.tokens.tolist(), batch.attention_mask.tolist()):
        real = [token for token, kept in zip(row, mask) if kept]
        sequences.append(real[:anchor] + prefix_ids + real[anchor:])
    return lm.run(lm.make_batch(sequences, score_every_position=True))[:, -width:]


def self_debiased_log_probs(logits: torch.Tensor, prefixed: torch.Tensor, decay: float,
                            epsilon: float) -> torch.Tensor:
    """log p~ of the module docstring [..., vocab], in log space (so no probability underflows to log 0)."""
    log_plain = torch.log_softmax(logits.float(), dim=-1)
    delta = torch.softmax(prefixed.float(), dim=-1) - log_plain.exp()
    log_alpha = torch.clamp(-decay * delta.clamp(min=0), min=float(torch.log(torch.tensor(epsilon))))
    return torch.log_softmax(log_plain + log_alpha, dim=-1).to(logits.dtype)


@hookimpl
def register_methods(register):
    register(SelfDebias)
