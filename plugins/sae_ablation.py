"""SAE latent ablation: scale down the sparse-autoencoder latents that carry gender, at every editable position.

The method of the SAE-ablation study debiaskit grew from (seed 000: SAELens `HookedSAETransformer`, latents chosen
by their male/female activation difference and activation counts, then multiplied by 0.3 everywhere). A sparse
autoencoder (Bricken et al. 2023, "Towards Monosemanticity"; Cunningham et al. 2023, arXiv:2309.08600) writes an
activation x as z = encode(x), x ~ decode(z) = W_dec z + b_dec with few latents active. With z' = z after multiplying
the chosen latents by `factor`, the edited activation is

    error_term=true   x' = x + decode(z') - decode(z)     only the chosen latents' share of x changes; the SAE's
                                                          reconstruction error x - decode(z) passes through, so with
                                                          nothing scaled x' == x bit for bit
    error_term=false  x' = decode(z')                     the seed's splice: the SAE replaces x, and its
                                                          reconstruction error is paid at every position

`sae-splice` is the second line with nothing scaled: the reconstruction cost on its own.

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
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from debiaskit import DebiasKitError, FitContext, Intervention, LoadedModel, Method, Option, hooked, hookimpl
from debiaskit.concepts import LabelledText, job_examples, labelled_text, read_at_positions
from debiaskit.data import gendered_words, project_data_dir
from debiaskit.evaluator import NEUTRAL_TEXT_FILE
from debiaskit.sae_source import EMBEDDED, LoadedSAE, load_sae, stop_layer
from debiaskit.sae_training import ARCHITECTURES

SELECTIONS = ("contrast", "seed", "topk")
POSITIONS = ("all", "last")
STRONG_SHARE = 8 / 20  # seed: a latent is "strong" in a group when at least 8 of its 20 jobs activate it
RARE_SHARE = 3 / 20  # ... and "rare" in the other group when at most 3 of 20 do
MIN_DIFFERENCE = 0.05  # seed: |male mean - female mean| must exceed this
LATENTS_SHOWN = 3  # latents listed in a table row (the rest are counted)
TOKENS_SHOWN = 3  # top-activating tokens shown per latent

SAE_OPTION = Option("sae", str, EMBEDDED, "'embedded' (smollm2), an SAELens disk directory, or RELEASE/SAE_ID")


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
        return cls(male.mean(0), female.mean(0), (male > threshold).sum(0), (female > threshold).sum(0), len(male), len(female))


def select_by_counts(stats: LatentStats) -> list[int]:
    """The seed's rule: strong in one group, rare in the other, both directions, with counts scaled to group sizes."""
    male_strong = ((stats.difference > MIN_DIFFERENCE) & (stats.male_count >= math.ceil(STRONG_SHARE * stats.n_male))
                   & (stats.female_count <= math.floor(RARE_SHARE * stats.n_female)))
    female_strong = ((stats.difference < -MIN_DIFFERENCE) & (stats.female_count >= math.ceil(STRONG_SHARE * stats.n_female))
                     & (stats.male_count <= math.floor(RARE_SHARE * stats.n_male)))
    return by_effect(stats, torch.nonzero(male_strong | female_strong).flatten().tolist())


def select_top(stats: LatentStats, n_latents: int) -> list[int]:
    """The `n_latents` latents with the largest |difference| (never one whose difference is 0)."""
    order = torch.argsort(stats.difference.abs(), descending=True)[:n_latents].tolist()
    return [latent for latent in order if stats.difference[latent] != 0]


def by_effect(stats: LatentStats, latents: Sequence[int]) -> list[int]:
    return sorted(latents, key=lambda latent: -abs(float(stats.difference[latent])))


class SAEMethod(Method):
    """Shared by both SAE methods: load the SAE once per model, and splice it in."""

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self.loaded: LoadedSAE | None = None
        self._loaded_for: tuple[int, str] | None = None

    def load(self, lm: LoadedModel) -> LoadedSAE:
        key = (id(lm), self.settings["sae"])
        if self.loaded is None or self._loaded_for != key:
            self.loaded, self._loaded_for = load_sae(self.settings["sae"], lm), key
        return self.loaded

    def check(self, lm: LoadedModel) -> None:
        self.load(lm)  # the SAE must exist, load from safetensors, and fit lm's hook point and width

    def require_loaded(self) -> LoadedSAE:
        if self.loaded is None:
            raise DebiasKitError(f"{self.name} was applied before it was fitted; call fit() first")
        return self.loaded


class SAELatentAblation(SAEMethod):
    name = "sae-ablation"
    description = "SAE latent ablation (seed 000): scale the SAE latents that carry gender by a factor"
    options = (
        SAE_OPTION,
        Option("selection", str, "contrast", "contrast: gendered words; seed: the seed's count rule on training jobs; "
               "topk: largest |difference| on training jobs", choices=SELECTIONS),
        Option("n_latents", int, 10, "latents kept by contrast and topk selection"),
        Option("threshold", float, 0.2, "activation above which a word or job counts as activating a latent (seed: 0.2)"),
        Option("factor", float, 0.3, "multiply the chosen latents by this (seed: 0.3; 0 = zero ablation; 1 = no change)"),
        Option("positions", str, "all", "edit every editable position, or only the last", choices=POSITIONS),
        Option("error_term", bool, True, "keep the SAE's reconstruction error (false: the seed's full splice)"),
    )
    strength_knob = "factor"

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        for key, low in (("factor", 0.0), ("threshold", 0.0), ("n_latents", 1)):
            if self.settings[key] < low:
                raise DebiasKitError(f"option sae-ablation.{key} got {self.settings[key]}; it takes a number >= {low}")
        self.latents: list[int] = []
        self.stats: LatentStats | None = None

    def uses_jobs(self) -> bool:
        return self.settings["selection"] != "contrast"

    def fit(self, context: FitContext) -> None:
        loaded = self.load(context.model)
        if self.uses_jobs():
            examples = job_examples(context.model, context.train_jobs, context.templates, "word")
        else:
            examples = definitional_examples(context.model)
        self.stats = example_stats(context.model, loaded, examples, self.settings["threshold"])
        if self.settings["selection"] == "seed":
            self.latents = select_by_counts(self.stats)
        else:
            self.latents = select_top(self.stats, self.settings["n_latents"])
        print(f"debiaskit: sae-ablation chose {len(self.latents)} latents of {loaded.source}: "
              f"{describe_latents(context.model, loaded, self.stats, self.latents, len(self.latents))}", file=sys.stderr)

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        loaded = self.require_loaded()
        hook = splice_hook(lm, loaded.sae, self.latents, self.settings["factor"], self.settings["positions"],
                           self.settings["error_term"])
        with hooked(lm, [(loaded.hook_name, hook)]):
            yield Intervention()

    def details(self) -> dict[str, Any]:
        loaded = self.require_loaded()
        assert self.stats is not None
        return {"sae": loaded.source, "n_latents": len(self.latents),
                "latents": describe_latents(None, loaded, self.stats, self.latents, LATENTS_SHOWN)}


class SAESplice(SAEMethod):
    name = "sae-splice"
    description = "the SAE spliced in without its error term, nothing ablated: the reconstruction cost alone"
    options = (SAE_OPTION,)

    def fit(self, context: FitContext) -> None:
        self.load(context.model)

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        loaded = self.require_loaded()
        with hooked(lm, [(loaded.hook_name, splice_hook(lm, loaded.sae, [], 1.0, "all", error_term=False))]):
            yield Intervention()

    def details(self) -> dict[str, Any]:
        return {"sae": self.require_loaded().source}


def splice_hook(lm: LoadedModel, sae: Any, latents: Sequence[int], factor: float, positions: str, error_term: bool):
    """A hook that rewrites the editable positions (all, or only the last column) through the SAE; the anchor and
    padding keep their exact values."""
    chosen = torch.tensor(list(latents), dtype=torch.long, device=lm.device)

    def scale(acts: torch.Tensor) -> torch.Tensor:  # [n, d_sae]
        if not len(chosen):
            return acts
        scaled = acts.clone()
        scaled[:, chosen] = scaled[:, chosen] * factor
        return scaled

    def reconstruct(x: torch.Tensor, edit: bool) -> torch.Tensor:
        # encode before every decode: SAEs that normalise their input per token keep that norm between the two
        acts = sae.encode(x)
        return sae.decode(scale(acts) if edit else acts).float()

    def edit(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, ...]
        where = lm.editable_mask(activation)[..., 0]  # [batch, pos]
        if positions == "last":
            where = where & (torch.arange(where.shape[1], device=where.device) == where.shape[1] - 1)
        x = activation[where].float()  # [n, ...]
        if error_term:
            new = x + (reconstruct(x, edit=True) - reconstruct(x, edit=False))
        else:
            new = reconstruct(x, edit=True)
        edited = activation.clone()
        edited[where] = new.to(activation.dtype)
        return edited

    return edit


def definitional_examples(lm: LoadedModel) -> list[LabelledText]:
    """Every fit pair's words (never the control pairs) in every neutral context; one group per word."""
    return [labelled_text(lm, sentence, word, "word", label, word) for sentence, word, label in gendered_words().fit_sentences()]


def example_stats(lm: LoadedModel, loaded: LoadedSAE, examples: Sequence[LabelledText], threshold: float) -> LatentStats:
    """Mean latent activation over each example group's tokens (a word over its contexts, a job over its templates),
    then per-latent statistics over the groups labelled male (0) and female (1)."""
    inputs = read_at_positions(lm, examples, [loaded.hook_name], stop_at_layer=stop_layer(loaded.hook_name))[loaded.hook_name]
    with torch.no_grad():
        latents = loaded.sae.encode(inputs.to(lm.device, torch.float32)).float().cpu()  # [n_positions, d_sae]
    group_of_row = [example.group for example in examples for _ in example.positions]
    label_of = {example.group: example.label for example in examples}
    means = {group: latents[[row for row, g in enumerate(group_of_row) if g == group]].mean(0) for group in label_of}
    male = [means[g] for g in means if label_of[g] == 0]
    female = [means[g] for g in means if label_of[g] == 1]
    return LatentStats.of(torch.stack(male) if male else torch.empty(0), torch.stack(female) if female else torch.empty(0),
                          threshold)


def describe_latents(lm: LoadedModel | None, loaded: LoadedSAE, stats: LatentStats, latents: Sequence[int], limit: int) -> str:
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
    from debiaskit.sae_training import anchored_sequences, top_activating_tokens

    text = (project_data_dir() / NEUTRAL_TEXT_FILE).read_text(encoding="utf-8")
    return top_activating_tokens(lm, loaded.sae, anchored_sequences(lm, text), latents)


# --- the `debiaskit sae` commands -------------------------------------------------------------------------------


@click.group("sae")
def sae_group() -> None:
    """Train, inspect and choose latents of the sparse autoencoders used by sae-ablation."""


@sae_group.command("train")
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write the SAE to.")
@click.option("--model", default="smollm2", show_default=True, help="As for `debiaskit compare`.")
@click.option("--hook", "hook_name", default="blocks.8.hook_resid_post", show_default=True, help="Hook point to read.")
@click.option("--width", "d_sae", type=click.IntRange(min=1), default=4608, show_default=True, help="Number of latents.")
@click.option("--k", type=click.IntRange(min=1), default=32, show_default=True,
              help="Active latents per token (topk, batchtopk).")
@click.option("--architecture", type=click.Choice(ARCHITECTURES), default="topk", show_default=True,
              help="topk/batchtopk: k latents per token; standard: ReLU + L1 penalty; jumprelu: JumpReLU + L0 penalty.")
@click.option("--sparsity-coefficient", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="The L1 (standard) or L0 (jumprelu) penalty coefficient.")
@click.option("--tokens", "training_tokens", type=click.IntRange(min=1), default=800_000, show_default=True,
              help="Training token budget.")
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--batch-tokens", type=click.IntRange(min=1), default=2048, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def train_command(corpus: Path, out: Path, model: str, hook_name: str, d_sae: int, k: int, architecture: str,
                  sparsity_coefficient: float, training_tokens: int, lr: float, batch_tokens: int, seed: int,
                  device: str) -> None:
    """Train an SAE on the *.txt files under CORPUS (Gutenberg boilerplate stripped) and write it with card.json."""
    from debiaskit.model import load_model, resolve_device
    from debiaskit.sae_training import TrainingSettings, train_sae

    try:
        if out.exists() and any(out.iterdir()):
            raise DebiasKitError(f"--out {out} is not empty; pass a new folder")
        settings = TrainingSettings(hook_name=hook_name, d_sae=d_sae, k=k, architecture=architecture,
                                    sparsity_coefficient=sparsity_coefficient, training_tokens=training_tokens, seed=seed, device=resolve_device(device), lr=lr,
                                    batch_tokens=batch_tokens)
        lm = load_model(model, device=device)
        card = train_sae(lm, corpus, out, settings, command=shlex.join(["debiaskit", *sys.argv[1:]]))
    except DebiasKitError as error:
        raise click.UsageError(str(error)) from None
    quality = card["quality"]
    click.echo(f"{out}: {card['tokens_seen']} tokens seen; explained variance {quality['explained_variance']:.3f}, "
               f"mean L0 {quality['mean_l0']:.1f}, dead latents {quality['dead_latent_fraction']:.1%}, "
               f"CE loss recovered {quality['ce_loss_recovered']:.3f} (vs zero ablation)")


@sae_group.command("latents")
@click.option("--sae", "source", default=EMBEDDED, show_default=True, help=SAE_OPTION.help)
@click.option("--model", default="smollm2", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--selection", type=click.Choice(SELECTIONS), default="contrast", show_default=True)
@click.option("-n", "--n-latents", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--threshold", type=float, default=0.2, show_default=True)
@click.option("--dataset", default="occupations40", show_default=True, help="Jobs for seed/topk selection (all of them).")
@click.option("--templates", "template_family", default="pronoun", show_default=True)
@click.pass_context
def latents_command(context: click.Context, source: str, model: str, device: str, selection: str, n_latents: int,
                    threshold: float, dataset: str, template_family: str) -> None:
    """Print the latents sae-ablation would choose, with their difference, counts and top-activating tokens
    (seed and topk selection are fitted on all jobs of --dataset here)."""
    from debiaskit.model import load_model
    from debiaskit.plugin_host import load_plugins

    try:
        method = SAELatentAblation(sae=source, selection=selection, n_latents=n_latents, threshold=threshold)
        host = load_plugins(context.find_root().params.get("plugins_dir"))
        name, _, argument = dataset.partition(":")
        jobs = host.datasets.get("data set", name).load(argument or None).occupations
        family = host.templates.get("template family", template_family)
        lm = load_model(model, device=device)
        method.fit(FitContext(lm, jobs, family, seed=0))
    except DebiasKitError as error:
        raise click.UsageError(str(error)) from None
    loaded, stats = method.require_loaded(), method.stats
    assert stats is not None
    tops = top_tokens(lm, loaded, method.latents)
    click.echo("latent\tdifference\tmale_mean\tfemale_mean\tmale_count\tfemale_count\ttop tokens")
    for latent in method.latents:
        tokens = " | ".join(f"{context_text}[{token}] {value:.2f}" for context_text, token, value in tops.get(str(latent), []))
        click.echo(f"{latent}\t{float(stats.difference[latent]):+.3f}\t{float(stats.male_mean[latent]):.3f}\t"
                   f"{float(stats.female_mean[latent]):.3f}\t{int(stats.male_count[latent])}/{stats.n_male}\t"
                   f"{int(stats.female_count[latent])}/{stats.n_female}\t{tokens}")


@sae_group.command("inspect")
@click.argument("latent_ids", nargs=-1, type=int, required=True)
@click.option("--sae", "source", default=EMBEDDED, show_default=True, help=SAE_OPTION.help)
@click.option("--model", default="smollm2", show_default=True)
@click.option("--device", default="auto", show_default=True)
def inspect_command(latent_ids: tuple[int, ...], source: str, model: str, device: str) -> None:
    """Print the tokens that activate each of LATENT_IDS most (held-out corpus text for a trained SAE with
    top_tokens.json, else the shipped neutral text)."""
    from debiaskit.model import load_model

    try:
        lm = load_model(model, device=device)
        loaded = load_sae(source, lm)
        bad = [latent for latent in latent_ids if not 0 <= latent < loaded.sae.cfg.d_sae]
        if bad:
            raise DebiasKitError(f"latent {bad[0]} does not exist; {loaded.source} has latents 0 to {loaded.sae.cfg.d_sae - 1}")
    except DebiasKitError as error:
        raise click.UsageError(str(error)) from None
    tops = top_tokens(lm, loaded, latent_ids)
    for latent in latent_ids:
        rows = tops.get(str(latent), [])
        click.echo(f"latent {latent}: " + (" | ".join(f"{c}[{t}] {v:.2f}" for c, t, v in rows) or "never active"))


@hookimpl
def register_methods(register):
    register(SAELatentAblation)
    register(SAESplice)


@hookimpl
def register_commands(cli):
    cli.add_command(sae_group)
