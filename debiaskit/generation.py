"""Sampling continuations with a method applied, and the gendered words counted in them.

Every step runs a full forward through `LoadedModel.run` (no key-value cache), so activation hooks see the whole
sequence with `lm.running` set exactly as when the evaluator scores; an applied method's logits transform gets
the logits of every position and the last one is sampled. The N samples of every prompt run as one batch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from debiaskit.data import Occupation, TemplateFamily
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import build_prompts
from debiaskit.method import FitContext, LogitsTransform, Method
from debiaskit.metrics import count_gendered_words
from debiaskit.model import LoadedModel
from debiaskit.word_lists import GenderedWordLists

DEFAULT_GENERATION_BATCH_SIZE = 64  # rows per forward; the logits of one row are [pos, vocab]


def fitted_method(lm: LoadedModel, method_class: type[Method], given: Mapping[str, Any], jobs: Sequence[Occupation],
                  family: TemplateFamily, seed: int) -> Method:
    """A method created from its options and fitted once on `jobs` (all of them: generation has no held-out split;
    none for a method that does not learn from jobs)."""
    method = method_class(**dict(given))
    method.fit(FitContext(lm, tuple(jobs) if method.uses_jobs() else (), family, seed))
    return method


def sample_continuations(lm: LoadedModel, prompts: Sequence[str], transform: LogitsTransform | None = None, *,
                         n_samples: int = 1, max_new_tokens: int = 20, temperature: float = 1.0, seed: int = 0,
                         batch_size: int = DEFAULT_GENERATION_BATCH_SIZE) -> list[list[str]]:
    """`n_samples` continuations of each prompt (decoded, without the prompt), in prompt order.

    Sampling is at `temperature` (0 = greedy) by inverting the cumulative distribution at uniform numbers drawn
    up front from a generator seeded with `seed`, one per row and step: a row's text depends on the seed and its
    place in the list only, not on `batch_size` or the other rows, and the same seed gives a method and the
    baseline the same random numbers. A row stops at the end-of-sequence token or the document-start anchor (the
    model ends a document with it); neither is part of the text.
    """
    if n_samples < 1 or max_new_tokens < 1:
        raise DebiasKitError("need at least one sample and one new token "
                             f"(got {n_samples} samples, {max_new_tokens} tokens)")
    if temperature < 0:
        raise DebiasKitError(f"temperature {temperature} is negative; use 0 for greedy decoding or a positive number")
    starts = [lm.encode(prompt) for prompt in prompts for _ in range(n_samples)]
    longest = max((len(s) for s in starts), default=0) + max_new_tokens
    if longest > lm.model.cfg.n_ctx:
        raise DebiasKitError(f"a prompt plus {max_new_tokens} new tokens is {longest} tokens; {lm.name} takes at most "
                             f"{lm.model.cfg.n_ctx}: shorten the prompt or lower --max-new-tokens")
    stop_ids = {token for token in (lm.tokenizer.eos_token_id, lm.anchor_token_id) if token is not None}
    uniforms = torch.rand((len(starts), max_new_tokens), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)
    generated: list[list[int]] = []
    chunks = range(0, len(starts), batch_size)
    for start in tqdm(chunks, desc="generating", file=sys.stderr, leave=False, disable=len(chunks) < 2):
        generated += _sample_batch(lm, starts[start:start + batch_size], transform, temperature, stop_ids,
                                   uniforms[start:start + batch_size])
    texts = [lm.tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
    return [texts[i:i + n_samples] for i in range(0, len(texts), n_samples)]


def sample_with_method(lm: LoadedModel, method: Method, prompts: Sequence[str], **sampling: Any) -> list[list[str]]:
    """`sample_continuations` while `method` is applied (its hooks, weight edits and logits transform)."""
    with method.apply(lm) as intervention:
        return sample_continuations(lm, prompts, intervention.logits_transform, **sampling)


def _sample_batch(lm: LoadedModel, starts: Sequence[Sequence[int]], transform: LogitsTransform | None,
                  temperature: float, stop_ids: set[int], uniforms: torch.Tensor) -> list[list[int]]:
    """New token ids per row; `uniforms` [row, step] are the row's random numbers."""
    sequences = [list(s) for s in starts]
    new_tokens: list[list[int]] = [[] for _ in starts]
    running = list(range(len(starts)))  # finished rows leave the batch
    with torch.no_grad():
        for step in range(uniforms.shape[1]):
            if not running:
                break
            batch = lm.make_batch([sequences[row] for row in running], [len(new_tokens[row]) for row in running])
            logits = lm.run(batch)  # [batch, pos, vocab]
            if transform is not None:
                logits = transform(logits, batch)
            step_uniforms = uniforms[running, step].to(logits.device)
            chosen = _next_tokens(logits[:, -1], temperature, step_uniforms).tolist()
            still_running = []
            for row, token in zip(running, chosen):
                if token in stop_ids:
                    continue
                sequences[row].append(token)
                new_tokens[row].append(token)
                still_running.append(row)
            running = still_running
    return new_tokens


def _next_tokens(last_logits: torch.Tensor, temperature: float, uniforms: torch.Tensor) -> torch.Tensor:
    """[batch] token ids from last-position logits [batch, vocab] and one uniform number in [0, 1) per row."""
    if temperature == 0:
        return last_logits.argmax(-1)
    cumulative = torch.softmax(last_logits.double() / temperature, dim=-1).cumsum(-1)
    # the first token whose cumulative probability exceeds u: a token of probability 0 is never chosen
    chosen = torch.searchsorted(cumulative, (uniforms * cumulative[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return chosen.clamp(max=last_logits.shape[-1] - 1)


def generation_frame(lm: LoadedModel, method: Method, jobs: Sequence[Occupation], family: TemplateFamily,
                     templates: Sequence[int], words: GenderedWordLists, **sampling: Any) -> pd.DataFrame:
    """One row per sampled continuation: job, group, pct_women, template, prompt, sample, text, and its counts of
    female and male words; `sampling` goes to `sample_continuations`."""
    prompts = build_prompts(jobs, family, templates)
    texts = sample_with_method(lm, method, list(prompts["prompt"]), **sampling)
    rows = []
    for prompt_row, samples in zip(prompts.to_dict("records"), texts):
        for sample, text in enumerate(samples):
            female, male = count_gendered_words(text, words.female, words.male)
            rows.append({**prompt_row, "sample": sample, "text": text, "female_words": female, "male_words": male})
    return pd.DataFrame(rows)
