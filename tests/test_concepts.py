"""read_at_positions runs each example only up to its last read position, and once for examples that agree up to
there: the activations are those of each example's full sequence read alone, in example order."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from debiaskit import hooked, resid_post
from debiaskit.concepts import LabelledText, labelled_text, read_at_positions

TEMPLATES = ("The {job} said that", "The {job} went home because", "A {job} was promoted because")


def full_sequence_read(lm, example: LabelledText, name: str, hooks=()) -> torch.Tensor:
    """The activations at `example`'s positions with its whole sequence run, on its own."""
    seen: dict[str, torch.Tensor] = {}

    def record(activation: torch.Tensor, hook: Any) -> None:
        seen["value"] = activation[0, list(example.positions)].double()

    with torch.no_grad(), hooked(lm, [*hooks, (name, record)]):
        lm.run(lm.make_batch([example.tokens]))
    return seen["value"]


def job_examples(lm, positions: str) -> list[LabelledText]:
    return [labelled_text(lm, template.format(job=job), job, positions, 0, job)
            for job in ("nurse", "software developer") for template in TEMPLATES]


def push_scored_positions(lm):
    """A hook on block 0's output that moves only the positions whose next token is scored (a prompt's last)."""
    def push(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        return resid + 10.0 * lm.scored_mask(resid)

    return [(resid_post(0), push)]


@pytest.mark.parametrize("positions", ["word", "last"])
def test_cut_and_shared_reads_equal_each_full_sequence_read_alone(tiny_lm, positions):
    examples = job_examples(tiny_lm, positions)
    name = resid_post(1)
    read = read_at_positions(tiny_lm, examples, [name])[name]
    expected = torch.cat([full_sequence_read(tiny_lm, example, name) for example in examples])
    assert read.shape == expected.shape == (sum(len(e.positions) for e in examples), tiny_lm.model.cfg.d_model)
    torch.testing.assert_close(read, expected, atol=1e-5, rtol=1e-5)


def test_a_hook_on_scored_positions_acts_as_in_the_full_sequence(tiny_lm):
    """At a job's word (cut short: its scored last token lies beyond) the hook changes nothing; at the last
    position (not cut) it moves the activation, as in the full sequence."""
    name, hooks = resid_post(1), push_scored_positions(tiny_lm)
    for positions in ("word", "last"):
        examples = job_examples(tiny_lm, positions)
        with hooked(tiny_lm, hooks):
            read = read_at_positions(tiny_lm, examples, [name])[name]
        expected = torch.cat([full_sequence_read(tiny_lm, example, name, hooks) for example in examples])
        unhooked = read_at_positions(tiny_lm, examples, [name])[name]
        torch.testing.assert_close(read, expected, atol=1e-5, rtol=1e-5)
        assert torch.allclose(read, unhooked, atol=1e-5) == (positions == "word")
