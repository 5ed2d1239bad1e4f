"""`debiaskit generate` and `generation-eval`: sampled continuations with a method applied, one prompt side by side
or counted over occupation prompts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from debiaskit.commands.support import (
    data_options,
    host_of,
    load_data,
    method_options_option,
    model_options,
    plan_methods,
    stacked,
    usage_errors,
)
from debiaskit.data import spread_templates
from debiaskit.generation import fitted_method, generation_frame, sample_with_method
from debiaskit.metrics import generation_summary
from debiaskit.model import load_model
from debiaskit.tables import FORMATS, render
from debiaskit.word_lists import read_gendered_word_lists


def _generation_options(max_new_tokens: int) -> Any:
    """The options `generate` and `generation-eval` share: model, data the methods are fitted on, method options,
    seed, and sampling."""
    return stacked(
        model_options,
        data_options(dataset_help="Jobs the methods are fitted on (all of them)."),
        method_options_option(),
        click.option("--seed", type=int, default=0, show_default=True, help="Seeds the fit and the sampling."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=max_new_tokens, show_default=True),
        click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True, help="0 = greedy."),
    )


@click.command("generate")
@click.option("-m", "--method", required=True, help="The method to apply (any registered method).")
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("-n", "--samples", "n_samples", type=click.IntRange(min=1), default=3, show_default=True)
@_generation_options(max_new_tokens=20)
@click.pass_context
def generate_command(context: click.Context, method: str, prompt: str, n_samples: int, model: str, device: str,
                     dtype: str, dataset: str, template_family: str, assignments: tuple[str, ...], seed: int,
                     max_new_tokens: int, temperature: float) -> None:
    """Sample continuations of a prompt without and with a method, side by side (the same seed for both)."""
    host = host_of(context)
    with usage_errors():
        plan = plan_methods(host, (method,), assignments)
        occupations, family = load_data(host, dataset, template_family)
        lm = load_model(model, device=device, dtype=dtype)
        samples = {
            name: sample_with_method(lm, fitted_method(lm, method_class, given, occupations.occupations, family, seed),
                                     [prompt], n_samples=n_samples, max_new_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed)[0]
            for name, method_class, given in plan
        }
    width = max(len(name) for name in samples)
    click.echo(f"prompt: {prompt}")
    for index in range(n_samples):
        click.echo(f"sample {index + 1}")
        for name, texts in samples.items():
            click.echo(f"  {name:<{width}}  {texts[index]!r}")  # repr: newlines and edge spaces stay visible


@click.command("generation-eval")
@click.option("-m", "--method", "methods", multiple=True, help="Method to run (repeatable). Default: all registered.")
@click.option("-n", "--samples", "n_samples", type=click.IntRange(min=1), default=2, show_default=True,
              help="Continuations per prompt.")
@click.option("--templates-per-job", type=click.IntRange(min=1), default=2, show_default=True,
              help="Templates per job, spread over the family.")
@click.option("--words", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON {\"female\": [...], \"male\": [...]} of the words counted "
                   "(default: datasets/gendered_tokens.json).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@_generation_options(max_new_tokens=10)  # every step is a full forward: keep the default run small
@click.pass_context
def generation_eval_command(context: click.Context, methods: tuple[str, ...], n_samples: int, templates_per_job: int,
                            words: Path | None, fmt: str, model: str, device: str, dtype: str, dataset: str,
                            template_family: str, assignments: tuple[str, ...], seed: int, max_new_tokens: int,
                            temperature: float) -> None:
    """Sample continuations of occupation prompts with each method and count female and male words per job group."""
    host = host_of(context)
    with usage_errors():
        plan = plan_methods(host, methods, assignments)
        occupations, family = load_data(host, dataset, template_family)
        word_lists = read_gendered_word_lists(words)
        templates = spread_templates(family, templates_per_job)
        lm = load_model(model, device=device, dtype=dtype)
        rows = []
        for name, method_class, given in plan:
            started = time.perf_counter()
            method = fitted_method(lm, method_class, given, occupations.occupations, family, seed)
            frame = generation_frame(lm, method, occupations.occupations, family, templates, word_lists,
                                     n_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                     seed=seed)
            rows.append({"method": name, "status": "ok", **generation_summary(frame), "samples": len(frame),
                         "seconds": round(time.perf_counter() - started, 2),
                         "protocol": "in-sample" if method.uses_jobs() else "not fitted on jobs"})
    header = {"model": model, "dataset": dataset, "templates": template_family, "seed": seed,
              "template_indices": templates, "samples_per_prompt": n_samples, "max_new_tokens": max_new_tokens,
              "temperature": temperature, "words": word_lists.source}
    click.echo(render(header, rows, fmt), nl=False)
