"""Choosing the SAE latents that carry gender, shared by the SAE methods (`sae-ablation`, `sae-steer`).

Latent selection (per latent: mean activation of each group, their difference male - female, and how many of a
group's members activate it above `threshold`):
  contrast  definitional gendered words (`gendered_words()` fit pairs, the word's tokens): the `n_latents` latents
            with the largest |difference|. Nothing is fitted on occupations.
  seed      the seed's rule on the training jobs' tokens in the template family: latents active in at least
            STRONG_SHARE of one group's jobs and at most RARE_SHARE of the other's (the seed's 8 and 3 of 20 jobs).
  topk      the `n_latents` latents with the largest |difference| between the training jobs of the two groups.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from debiaskit.concepts import LabelledText, job_examples, labelled_text, read_at_positions
from debiaskit.data import project_data_dir
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import NEUTRAL_TEXT_FILE
from debiaskit.method import FitContext, Method
from debiaskit.model import LoadedModel
from debiaskit.options import Option
from debiaskit.reuse import Touches
from debiaskit.sae.activations import stop_layer
from debiaskit.sae.corpus import anchored_sequences
from debiaskit.sae.source import EMBEDDED, LoadedSAE, load_sae
from debiaskit.sae.top_activations import top_activating_tokens
from debiaskit.word_lists import gendered_words

SELECTIONS = ("contrast", "seed", "topk")
STRONG_SHARE = 8 / 20  # seed: a latent is "strong" in a group when at least 8 of its 20 jobs activate it
RARE_SHARE = 3 / 20  # ... and "rare" in the other group when at most 3 of 20 do
MIN_DIFFERENCE = 0.05  # seed: |male mean - female mean| must exceed this
LATENTS_SHOWN = 3  # latents listed in a table row (the rest are counted)
TOKENS_SHOWN = 3  # top-activating tokens shown per latent

SAE_OPTION = Option("sae", str, EMBEDDED, "'embedded' (smollm2), an SAELens disk directory, or RELEASE/SAE_ID")
SELECTION_OPTIONS = (
    SAE_OPTION,
    Option("selection", str, "contrast", "contrast: gendered words; seed: the seed's count rule on training jobs; "
           "topk: largest |difference| on training jobs", choices=SELECTIONS),
    Option("n_latents", int, 10, "latents kept by contrast and topk selection", minimum=1),
    Option("threshold", float, 0.2, "activation above which a word or job counts as activating a latent (seed: 0.2)",
           minimum=0),
)


@dataclass(frozen=True)
class LatentStats:
    """Per-latent statistics over two groups of examples (words or jobs), each example one mean activation vector."""

    male_mean: torch.Tensor  # [d_sae]
    female_mean: torch.Tensor  # [d_sae]
    male_count: torch.Tensor  # [d_sae] examples whose mean activation exceeds the threshold
    female_count: torch.Tensor
    n_male: int
    n_female: int

    @property
    def difference(self) -> torch.Tensor:
        return self.male_mean - self.female_mean

    @classmethod
    def of(cls, male: torch.Tensor, female: torch.Tensor, threshold: float) -> LatentStats:
        """`male` [n_male, d_sae] and `female` [n_female, d_sae] example vectors."""
        if not len(male) or not len(female):
            raise DebiasKitError("latent selection needs examples of both groups (male and female)")
        return cls(male.mean(0), female.mean(0), (male > threshold).sum(0), (female > threshold).sum(0),
                   len(male), len(female))


def select_by_counts(stats: LatentStats) -> list[int]:
    """The seed's rule: strong in one group, rare in the other, both directions, with counts scaled to group sizes."""
    male_strong = ((stats.difference > MIN_DIFFERENCE) & (stats.male_count >= math.ceil(STRONG_SHARE * stats.n_male))
                   & (stats.female_count <= math.floor(RARE_SHARE * stats.n_female)))
    female_strong = ((stats.difference < -MIN_DIFFERENCE)
                     & (stats.female_count >= math.ceil(STRONG_SHARE * stats.n_female))
                     & (stats.male_count <= math.floor(RARE_SHARE * stats.n_male)))
    return by_effect(stats, torch.nonzero(male_strong | female_strong).flatten().tolist())


def select_top(stats: LatentStats, n_latents: int) -> list[int]:
    """The `n_latents` latents with the largest |difference| (never one whose difference is 0)."""
    order = torch.argsort(stats.difference.abs(), descending=True)[:n_latents].tolist()
    return [latent for latent in order if stats.difference[latent] != 0]


def by_effect(stats: LatentStats, latents: Sequence[int]) -> list[int]:
    return sorted(latents, key=lambda latent: -abs(float(stats.difference[latent])))


class SAEMethod(Method):
    """Base of the SAE methods: load the SAE once per model and, for a method whose options include
    SELECTION_OPTIONS, choose the latents (`select_latents`) that its intervention then edits."""

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self.loaded: LoadedSAE | None = None
        self._loaded_for: tuple[int, str] | None = None
        self.latents: list[int] = []
        self.stats: LatentStats | None = None

    def uses_jobs(self) -> bool:
        return self.settings.get("selection", "contrast") != "contrast"

    def fitted_words(self) -> frozenset[str]:
        return frozenset(gendered_words().words()) if self.settings.get("selection") == "contrast" else frozenset()

    def select_latents(self, context: FitContext) -> None:
        """Measure the latent statistics on the selection's examples and keep the chosen latents."""
        loaded = self.load(context.model)
        width = loaded.sae.cfg.d_sae
        if self.settings.get("n_latents", 0) > width:
            raise DebiasKitError(f"option {self.name}.n_latents got {self.settings['n_latents']}; {loaded.source} "
                                 f"has {width} latents, so it takes 1 to {width}")
        if self.uses_jobs():
            examples = job_examples(context.model, context.train_jobs, context.templates, "word")
        else:
            examples = definitional_examples(context.model)
        self.stats = example_stats(context.model, loaded, examples, self.settings["threshold"])
        if self.settings["selection"] == "seed":
            self.latents = select_by_counts(self.stats)
        else:
            self.latents = select_top(self.stats, self.settings["n_latents"])
        print(f"debiaskit: {self.name} chose {len(self.latents)} latents of {loaded.source}: "
              f"{describe_latents(context.model, loaded, self.stats, self.latents, len(self.latents))}",
              file=sys.stderr)

    def require_stats(self) -> LatentStats:
        if self.stats is None:
            raise DebiasKitError(f"{self.name} was applied before it was fitted; call fit() first")
        return self.stats

    def latent_details(self) -> dict[str, Any]:
        """The table row's account of the chosen latents: how many, and the first few with their top tokens."""
        loaded = self.require_loaded()
        return {"sae": loaded.source, "n_latents": len(self.latents),
                "latents": describe_latents(None, loaded, self.require_stats(), self.latents, LATENTS_SHOWN)}

    def load(self, lm: LoadedModel) -> LoadedSAE:
        key = (id(lm), self.settings["sae"])
        if self.loaded is None or self._loaded_for != key:
            self.loaded, self._loaded_for = load_sae(self.settings["sae"], lm), key
        return self.loaded

    def check(self, lm: LoadedModel) -> None:
        self.load(lm)  # the SAE must exist, load from safetensors, and fit lm's hook point and width

    def touches(self, lm: LoadedModel) -> Touches:
        return Touches(hook_points=(self.require_loaded().hook_name,))  # every SAE method hooks its SAE's point

    def require_loaded(self) -> LoadedSAE:
        if self.loaded is None:
            raise DebiasKitError(f"{self.name} was applied before it was fitted; call fit() first")
        return self.loaded


def definitional_examples(lm: LoadedModel) -> list[LabelledText]:
    """Every fit pair's words (never the control pairs) in every neutral context; one group per word."""
    return [labelled_text(lm, sentence, word, "word", label, word)
            for sentence, word, label in gendered_words().fit_sentences()]


def example_stats(lm: LoadedModel, loaded: LoadedSAE, examples: Sequence[LabelledText],
                  threshold: float) -> LatentStats:
    """Mean latent activation over each example group's tokens (a word over its contexts, a job over its templates),
    then per-latent statistics over the groups labelled male (0) and female (1)."""
    inputs = read_at_positions(lm, examples, [loaded.hook_name],
                               stop_at_layer=stop_layer(loaded.hook_name))[loaded.hook_name]
    with torch.no_grad():
        latents = loaded.sae.encode(inputs.to(lm.device, torch.float32)).float().cpu()  # [n_positions, d_sae]
    group_of_row = [example.group for example in examples for _ in example.positions]
    label_of = {example.group: example.label for example in examples}
    means = {group: latents[[row for row, g in enumerate(group_of_row) if g == group]].mean(0) for group in label_of}
    male = [means[g] for g in means if label_of[g] == 0]
    female = [means[g] for g in means if label_of[g] == 1]
    return LatentStats.of(torch.stack(male) if male else torch.empty(0),
                          torch.stack(female) if female else torch.empty(0),
                          threshold)


def describe_latents(lm: LoadedModel | None, loaded: LoadedSAE, stats: LatentStats, latents: Sequence[int],
                     limit: int) -> str:
    """`id(+difference: token|token|token); ...` for the first `limit` latents; tokens from the SAE's shipped
    top_tokens.json (held-out corpus text), else computed on the shipped neutral text when `lm` is given."""
    shown = list(latents)[:limit]
    tops = top_tokens(lm, loaded, shown) if lm is not None or loaded.top_tokens is not None else {}
    parts = []
    for latent in shown:
        words = "|".join(token.strip() or repr(token) for _, token, _ in tops.get(str(latent), [])[:TOKENS_SHOWN])
        parts.append(f"{latent}({float(stats.difference[latent]):+.2f}{': ' + words if words else ''})")
    more = f"; +{len(latents) - len(shown)} more" if len(latents) > len(shown) else ""
    return "; ".join(parts) + more


def top_tokens(lm: LoadedModel | None, loaded: LoadedSAE, latents: Sequence[int]) -> dict[str, list[list[Any]]]:
    if loaded.top_tokens is not None:
        return {str(latent): loaded.top_tokens.get(str(latent), []) for latent in latents}
    if lm is None:
        return {}
    text = (project_data_dir() / NEUTRAL_TEXT_FILE).read_text(encoding="utf-8")
    return top_activating_tokens(lm, loaded.sae, anchored_sequences(lm, text), latents)
