"""CDA: counterfactual data augmentation, a short further training run on gender-swapped corpus text.

Zmigrod, Mielke, Wallach, Cotterell 2019, "Counterfactual Data Augmentation for Mitigating Gender Stereotypes in
Languages with Rich Morphology" (ACL, arXiv:1906.04571), and Webster, Wang, Tenney, Beutel, Pitler, Pavlick, Chen,
Chi, Petrov 2020, "Measuring and Reducing Gendered Correlations in Pre-trained Models" (arXiv:2010.06032), section
5.1, as bias-bench (Meade et al. 2022) runs it on GPT-2: two-sided augmentation (every sentence and its
counterfactual are both trained on) and further training with the model's own objective, here causal language
modelling:

    S   = a seeded sample of corpus sentences that name a word of datasets/gender_swaps.json
    S'  = {swap(s) : s in S}, every listed word replaced by its counterpart (both ways; him -> her one way)
    min_theta  L(theta) = -(1 / |T|) sum_{x in S u S'} sum_{t >= 1} log p_theta(x_t | x_<t)     (T: the tokens)

with AdamW (no weight decay) and a learning rate decaying linearly to 0, as Hugging Face's Trainer runs bias-bench's
run_clm.py. bias-bench trains 2,000 steps on Wikipedia; on a 2-core CPU `steps` of `batch_size` sentences (each
sentence once, its counterfactual in the same run) keep a fit to minutes. Every parameter is trained. The trained
weights are cached on disk (keyed by the model's weights, the settings and the training tokens; see
`debiaskit.weight_cache`), so a second run loads them; `apply` copies them in for the duration of the context and
the saved originals back afterwards, so the model is bit-for-bit what it was.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from debiaskit import DebiasKitError, FitContext, Intervention, LoadedModel, Method, Option, hookimpl
from debiaskit.containment import weight_fingerprint
from debiaskit.corpus import corpus_files, corpus_sentences, gendered_sentences
from debiaskit.method import model_gradients
from debiaskit.weight_cache import CACHE_DIR_ENV, cache_root, read_tensor_entry, write_tensor_entry
from debiaskit.word_lists import GenderSwaps, gender_swaps

TRAINER_VERSION = 1  # bump when the training below changes what it produces: older cache entries stop matching
LOSS_WINDOW = 10  # steps averaged for the first and the last loss reported (fewer in a run of under 20 steps)
CACHE_SUBDIR = "cda"
# lr stays at Trainer's default, 5e-5: on the dev jobs (`debiaskit sweep -m cda --knob cda.lr=5e-5,3e-4 --dataset
# dev`, sweeps/cda-lr.json) 100 steps cut the gap by 30% and 63%, kept 0.67 and 0.42 of definitional gender, and
# cost kl 0.44 and 0.71 on the neutral text: neither is within any budget, and the smaller step costs less. Each
# setting trained for about 8 minutes on the 2-core CPU.
DEFAULT_LR = 5e-5


class CounterfactualDataAugmentation(Method):
    name = "cda"
    description = "CDA (Webster et al. 2020): train further on corpus text with every gendered word also swapped"
    options = (
        Option("steps", int, 100, "optimiser steps (bias-bench: 2,000)", minimum=1),
        Option("batch_size", int, 8, "sequences per step, half of them counterfactuals", minimum=2),
        Option("lr", float, DEFAULT_LR, "AdamW's initial learning rate, decaying linearly to 0 (Trainer's default)",
               minimum=0),
        Option("max_tokens", int, 64, "longest training sequence in tokens, the anchor included", minimum=2),
        Option("corpus", str, "", "text file or folder of .txt files; empty = the shared Gutenberg corpus"),
    )
    strength_knob = "steps"
    random_fit = True  # the sentences and their order are drawn with the seed

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self.trained: dict[str, torch.Tensor] = {}
        self.report: dict[str, Any] = {}

    def fitted_words(self) -> frozenset[str]:
        return frozenset(gender_swaps().words())  # every one of them is trained on in both genders

    def check(self, lm: LoadedModel) -> None:
        if self.settings["corpus"]:  # a corpus the user named and that is not there stops the run before any scoring
            corpus_files(self.settings["corpus"], "cda.corpus")

    def fit(self, context: FitContext) -> None:
        lm, settings = context.model, self.settings
        pairs = settings["steps"] * settings["batch_size"] // 2
        originals = gendered_sentences(corpus_sentences(settings["corpus"], "cda.corpus"), gender_swaps(), pairs,
                                       context.seed)
        if len(originals) < pairs:
            raise DebiasKitError(f"cda needs {pairs} corpus sentences with a gendered word (steps x batch_size / 2); "
                                 f"the corpus has {len(originals)}. Pass a larger cda.corpus or fewer steps")
        sequences = training_sequences(lm, originals, gender_swaps(), settings["max_tokens"], context.seed)
        entry = cache_root() / CACHE_SUBDIR / cache_key(lm, settings, sequences)
        cached = read_tensor_entry(entry)
        if cached is not None:
            self.trained, record = cached
            self.report = {**record["report"], "cached": True}
        else:
            self.trained, report = train(lm, sequences, settings)
            self.report = {**report, "cached": False}
            try:
                write_tensor_entry(entry, self.trained, {"report": report})
            except OSError as error:
                print(f"debiaskit: could not cache cda's trained weights in {entry.parent} ({error}); set "
                      f"{CACHE_DIR_ENV} to a writable folder to skip the training next time", file=sys.stderr)
        print(f"debiaskit: cda {'loaded' if self.report['cached'] else 'trained'} {self.report['steps']} steps on "
              f"{self.report['tokens']} tokens, loss {self.report['loss_first']} -> {self.report['loss_last']}",
              file=sys.stderr)

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        if not self.trained:
            raise DebiasKitError("cda was applied before it was fitted; call fit() first")
        parameters = dict(lm.model.named_parameters())
        saved = {name: parameters[name].detach().clone() for name in self.trained}
        try:
            with torch.no_grad():
                for name, value in self.trained.items():
                    parameters[name].copy_(value)
            yield Intervention()
        finally:
            with torch.no_grad():
                for name, original in saved.items():
                    parameters[name].copy_(original)

    def details(self) -> dict[str, Any]:
        return dict(self.report)


def training_sequences(lm: LoadedModel, originals: Sequence[str], swaps: GenderSwaps, max_tokens: int,
                       seed: int) -> list[tuple[int, ...]]:
    """Each sentence and its counterfactual as anchored token sequences of at most `max_tokens`, in a seeded order
    that keeps a sentence and its counterfactual in the same batch when the batch holds both (two-sided CDA)."""
    pairs = [(sentence, swaps.swap(sentence)) for sentence in originals]
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [tuple(lm.encode(text)[:max_tokens]) for index in order for text in pairs[index]]


def cache_key(lm: LoadedModel, settings: dict[str, Any], sequences: Sequence[tuple[int, ...]]) -> str:
    """A key that changes with the model's weights, the training settings or any training token."""
    digest = hashlib.sha256(f"cda-trainer={TRAINER_VERSION};torch={torch.__version__}".encode())
    digest.update("\n".join(weight_fingerprint(lm.model)).encode())
    trained_on = {key: settings[key] for key in ("steps", "batch_size", "lr", "max_tokens")}
    digest.update(json.dumps(trained_on, sort_keys=True).encode())
    digest.update(json.dumps(list(sequences)).encode())
    return f"{lm.name.replace('/', '_')}-{digest.hexdigest()[:24]}"


def train(lm: LoadedModel, sequences: Sequence[tuple[int, ...]],
          settings: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train every parameter of `lm` on `sequences` (the module docstring's objective), then put the original
    weights back bit for bit: (the trained weights by parameter name, the run's report)."""
    parameters = dict(lm.model.named_parameters())
    originals = {name: parameter.detach().clone() for name, parameter in parameters.items()}
    optimiser = torch.optim.AdamW(parameters.values(), lr=settings["lr"], weight_decay=0.0)
    steps, size = settings["steps"], settings["batch_size"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
    losses, tokens = [], 0
    try:
        with model_gradients(lm, learn_weights=True):
            for step in range(steps):
                loss, counted = language_modelling_loss(lm, sequences[step * size:(step + 1) * size])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                losses.append(float(loss.detach()))
                tokens += counted
        trained = {name: parameter.detach().clone() for name, parameter in parameters.items()}
    finally:
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(originals[name])
        optimiser.zero_grad(set_to_none=True)
    window = max(1, min(LOSS_WINDOW, steps // 2))
    report = {"steps": steps, "sequences": min(len(sequences), steps * size), "tokens": tokens,
              "loss_first": round(float(np.mean(losses[:window])), 4),
              "loss_last": round(float(np.mean(losses[-window:])), 4)}
    return trained, report


def language_modelling_loss(lm: LoadedModel, sequences: Sequence[tuple[int, ...]]) -> tuple[torch.Tensor, int]:
    """The mean next-token cross-entropy over every real token after the first of each left-padded sequence, and
    how many tokens that is."""
    batch = lm.make_batch(sequences)
    logits = lm.model(batch.tokens, attention_mask=batch.attention_mask, padding_side="left")  # [b, pos, vocab]
    real = batch.attention_mask.bool()
    predicted = real[:, :-1] & real[:, 1:]  # a real token predicting the real token after it
    loss = torch.nn.functional.cross_entropy(logits[:, :-1][predicted].float(), batch.tokens[:, 1:][predicted])
    return loss, int(predicted.sum())


@hookimpl
def register_methods(register):
    register(CounterfactualDataAugmentation)
