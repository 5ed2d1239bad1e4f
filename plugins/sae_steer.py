"""SAE feature steering: the method `sae-steer` and the command `debiaskit steer`.

`debiaskit steer` is the course project's step (seed 001, after Templeton et al. 2024, "Scaling Monosemanticity"):
add coeff x a latent's decoder direction W_dec[latent] to the residual stream at the SAE's hook point, at every
editable position, and print generations with and without it (same seed, so the two differ only by the steering).

`sae-steer` turns that into a debiasing method comparable with `sae-ablation`: it takes the latents
`debiaskit.sae.latents` chooses (the selection options and statistics sae-ablation uses) and, instead of scaling
them by a factor, steers each chosen latent i toward its cross-group mean t_i = (male_mean_i + female_mean_i) / 2
(the means of the group activations the selection measured). With z = encode(x) and strength s:

    mode=mean   z'_i = z_i + s (t_i - z_i)  where latent i is active (z_i > 0); inactive positions are left alone
    mode=clamp  z'_i = z_i + s (t_i - z_i)  at every editable position (s = 1 clamps the latent to t_i)

and x' = x + decode(z') - decode(z): only the chosen latents' share of x moves, the SAE's reconstruction error stays,
and the anchor token and padding are never edited.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
import torch

from debiaskit import DebiasKitError, FitContext, Intervention, LoadedModel, Option, hooked, hookimpl
from debiaskit.commands.support import model_options, usage_errors
from debiaskit.residual_edits import addition_hook
from debiaskit.sae.latents import EMBEDDED, SAE_OPTION, SELECTION_OPTIONS, SAEMethod
from debiaskit.sae.source import load_sae

MODES = ("mean", "clamp")


class SAELatentSteering(SAEMethod):
    name = "sae-steer"
    description = "SAE feature steering (seed 001): move the gender latents toward their cross-group mean"
    options = (
        *SELECTION_OPTIONS,
        Option("mode", str, "mean", "mean: steer where the latent is active; clamp: at every position", choices=MODES),
        Option("strength", float, 1.0, "share of the way to the cross-group mean (0 = no change, 1 = all the way)",
               minimum=0, maximum=1),
    )
    strength_knob = "strength"

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self.targets = torch.empty(0)

    def fit(self, context: FitContext) -> None:
        self.select_latents(context)
        stats = self.require_stats()
        self.targets = 0.5 * (stats.male_mean[self.latents] + stats.female_mean[self.latents])

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        loaded = self.require_loaded()
        hook = steer_hook(lm, loaded.sae, self.latents, self.targets, self.settings["strength"], self.settings["mode"])
        with hooked(lm, [(loaded.hook_name, hook)]):
            yield Intervention()

    def details(self) -> dict[str, Any]:
        return self.latent_details()


def steer_hook(lm: LoadedModel, sae: Any, latents: Sequence[int], targets: torch.Tensor, strength: float, mode: str):
    """A hook moving the chosen latents toward `targets` [len(latents)] at editable positions (see the module doc)."""
    chosen = torch.tensor(list(latents), dtype=torch.long, device=lm.device)
    goal = targets.to(lm.device, torch.float32)

    def edit(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, d_model]
        where = lm.editable_mask(activation)[..., 0]
        if not len(chosen):
            return activation
        x = activation[where].float()  # [n, d_model]
        acts = sae.encode(x)
        steered = acts.clone()
        current = acts[:, chosen]
        moved = current + strength * (goal - current)
        steered[:, chosen] = torch.where(current > 0, moved, current) if mode == "mean" else moved
        edited = activation.clone()
        edited[where] = (x + (sae.decode(steered).float() - sae.decode(acts).float())).to(activation.dtype)
        return edited

    return edit


@click.command("steer")
@click.option("--latent", type=int, required=True, help="SAE latent whose decoder direction is added.")
@click.option("--coeff", type=float, required=True,
              help="Multiplier of the decoder direction (the course project used 300 for gpt2-small).")
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("--sae", "source", default=EMBEDDED, show_default=True, help=SAE_OPTION.help)
@model_options
@click.option("-n", "--samples", "n_samples", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True, help="0 = greedy.")
@click.option("--seed", type=int, default=0, show_default=True)
def steer_command(latent: int, coeff: float, prompt: str, source: str, model: str, device: str, dtype: str,
                  n_samples: int, max_new_tokens: int, temperature: float, seed: int) -> None:
    """Print continuations of PROMPT with and without coeff x the latent's decoder direction added to the residual
    stream at the SAE's hook point (the same random numbers for both)."""
    from debiaskit.generation import sample_continuations
    from debiaskit.model import load_model

    sampling = dict(n_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    with usage_errors():
        lm = load_model(model, device=device, dtype=dtype)
        loaded = load_sae(source, lm)
        if not 0 <= latent < loaded.sae.cfg.d_sae:
            raise DebiasKitError(f"latent {latent} does not exist; {loaded.source} has latents "
                                 f"0 to {loaded.sae.cfg.d_sae - 1}")
        direction = loaded.sae.W_dec[latent].detach().float()
        with hooked(lm, [addition_hook(lm, loaded.hook_name, coeff * direction)]):
            steered = sample_continuations(lm, [prompt], **sampling)[0]
        plain = sample_continuations(lm, [prompt], **sampling)[0]
    click.echo(f"prompt: {prompt}")
    click.echo(f"latent {latent} of {loaded.source} at {loaded.hook_name}, coeff {coeff} "
               f"(decoder norm {float(direction.norm()):.3f})")
    for title, texts in (("with steering", steered), ("without steering", plain)):
        click.echo(f"{title}:")
        for text in texts:
            click.echo(f"  {text!r}")  # repr: newlines and edge spaces stay visible


@hookimpl
def register_methods(register):
    register(SAELatentSteering)


@hookimpl
def register_commands(cli):
    cli.add_command(steer_command)
