"""The `debiaskit` command. Results go to stdout; progress and messages to stderr."""

from __future__ import annotations

import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from debiaskit.compare import BASELINE, DEFAULT_FOLDS, Comparison, MethodRun, check_folds, check_methods, run_comparison
from debiaskit.bootstrap import DEFAULT_RESAMPLES
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE
from debiaskit.command_options import model_options, professions_option, stacked
from debiaskit.model import load_model
from debiaskit.options import parse_assignments, resolve_settings
from debiaskit.plugin_host import PluginHost, load_plugins
from debiaskit.professions import professions_from_option
from debiaskit.reporting import FORMATS, atomic_write_text, check_writable, headline_table, render, write_run
from debiaskit.report import CONTROLS_FILE, PROFESSIONS_FILE, write_report
from debiaskit.sweep import parse_seeds
from debiaskit.data import template_split
from debiaskit.resume import check_resumable, data_fingerprint, resume_command, resume_option_callback

VERSIONED_PACKAGES = ("debiaskit", "torch", "transformer-lens", "sae-lens", "transformers", "concept-erasure", "pandas", "numpy")


class UserError(click.UsageError):
    """Bad input: a message and exit code 2, no traceback."""


def _host(context: click.Context) -> PluginHost:
    """The plugin host of this invocation, loaded once (with --plugins-dir when given)."""
    root = context.find_root()
    if "host" not in root.meta:
        try:
            root.meta["host"] = load_plugins(root.params.get("plugins_dir"))
        except DebiasKitError as error:
            raise UserError(str(error)) from None
        for problem in root.meta["host"].load_errors:
            click.echo(f"debiaskit: plugin failed to load: {problem}", err=True)
    host: PluginHost = root.meta["host"]
    return host


class PluginCommands(click.Group):
    """The built-in commands plus those plugins add through the `register_commands` hook."""

    def _plugin_group(self, context: click.Context) -> click.Group:
        group = click.Group()
        _host(context).manager.hook.register_commands(cli=group)
        return group

    def list_commands(self, context: click.Context) -> list[str]:
        return sorted({*super().list_commands(context), *self._plugin_group(context).list_commands(context)})

    def get_command(self, context: click.Context, name: str) -> click.Command | None:
        return super().get_command(context, name) or self._plugin_group(context).get_command(context, name)


@click.group(cls=PluginCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugins-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also load every *.py in this folder as a plugin.")
@click.pass_context
def cli(context: click.Context, plugins_dir: Path | None) -> None:
    """Compare debiasing methods for language models on occupational gender bias."""
    _host(context)


@cli.command("plugins")
@click.pass_context
def plugins_command(context: click.Context) -> None:
    """List the loaded plugins, where each came from, and what it registers."""
    for row in _host(context).plugin_rows():
        click.echo(f"{row['plugin']}\t{row['from']}\t{row['registers']}")
    for problem in _host(context).load_errors:
        click.echo(f"(failed)\t{problem}")


@cli.command("methods")
@click.pass_context
def methods_command(context: click.Context) -> None:
    """List the debiasing methods with their options and defaults."""
    registry = _host(context).methods
    for name, method_class in registry.things.items():
        click.echo(f"{name}: {method_class.description}  [{registry.sources[name]}]")
        settings = [f"-o {name}.{option.name}={option.as_typed(option.default)}" for option in method_class.options]
        width = max(map(len, settings), default=0)
        for option, setting in zip(method_class.options, settings):
            knob = "  (strength knob)" if option.name == method_class.strength_knob else ""
            click.echo(f"    {setting:<{width}}  [{option.describe_type()}] {option.help}{knob}")


@cli.command("datasets")
@click.pass_context
def datasets_command(context: click.Context) -> None:
    """List occupation data sets and template families."""
    host = _host(context)
    click.echo("data sets (--dataset NAME[:ARGUMENT]):")
    for name, spec in host.datasets.things.items():
        click.echo(f"    {name}: {spec.description}  [{host.datasets.sources[name]}]")
    click.echo("template families (--templates NAME):")
    for name, family in host.templates.things.items():
        click.echo(f"    {name}: {family.description} ({len(family.templates)} templates)")


@cli.command("compare")
@click.option("-m", "--method", "methods", multiple=True,
              help="Method to run (repeatable). Default: all registered. NAME@LABEL runs NAME again as its own row "
                   "with its own options (-o NAME@LABEL.key=value).")
@model_options
@click.option("--dataset", default="occupations40", show_default=True, help="Data set name, NAME:ARGUMENT for loaders that take one.")
@click.option("--templates", "template_family", default="pronoun", show_default=True, help="Template family.")
@click.option("-o", "--option", "assignments", multiple=True, help="Method option, method.key=value (repeatable).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write per-prompt results, summary and manifest here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--folds", type=int, default=DEFAULT_FOLDS, show_default=True, help="k of the k-fold split over jobs.")
@click.option("--in-sample", is_flag=True, help="Fit job-fitted methods on all jobs and score the same jobs (labelled in-sample).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--bootstrap", type=click.IntRange(min=0), default=DEFAULT_RESAMPLES, show_default=True,
              help="Paired bootstrap resamples over jobs and templates for the intervals (0 = no intervals).")
@click.option("--seeds", default=None, help="Comma-separated further seeds: methods with a random step are rerun with each "
              "and the spread (sd) is reported, e.g. 1,2.")
@click.option("--heldout-templates", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fit on the other templates and score only on this many (drawn with --seed); 0 = all templates.")
@professions_option
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path), is_eager=True,
              callback=resume_option_callback, help="Finish the run an interrupted --out DIR holds, with its recorded "
              "settings; methods already scored there are kept, not run again.")
@click.pass_context
def compare_command(context: click.Context, methods: tuple[str, ...], model: str, device: str, dtype: str, dataset: str,
                    template_family: str, assignments: tuple[str, ...], fmt: str, out: Path | None, seed: int, folds: int,
                    in_sample: bool, batch_size: int, bootstrap: int, seeds: str | None, heldout_templates: int,
                    professions: str, resume: Path | None) -> None:
    """Score methods side by side on the same prompts and print one row per method (baseline first)."""
    host = _host(context)
    try:
        if context.meta.get("previous_run") is not None:
            check_resumable(context.meta["previous_run"], context.params, context.find_root().params.get("plugins_dir"),
                            context.command)
        plan = _plan_methods(host, methods, assignments)
        occupations, family = _load_data(host, dataset, template_family)
        extra_seeds = parse_seeds(seeds or "")
        template_split(family, heldout_templates, seed)  # checked before the model loads
        check_folds(occupations, plan, folds, seed, in_sample)
        profession_list = professions_from_option(professions)
        if out is not None:
            check_writable(out)
        lm = load_model(model, device=device, dtype=dtype)
    except DebiasKitError as error:
        raise UserError(str(error)) from None
    manifest = {
        "command": _rerun_command(context), "model": model, "device": str(lm.device), "dtype": dtype,
        "dataset": dataset, "templates": template_family, "seed": seed, "folds": folds, "in_sample": in_sample,
        "batch_size": batch_size, "bootstrap": bootstrap, "seeds": list(extra_seeds), "heldout_templates": heldout_templates,
        "methods": [{"method": name, "options": given} for name, _, given in plan],
        "versions": _versions(), "data_sha256": data_fingerprint(occupations, family, profession_list),
    }
    previous = context.meta.get("previous_run")
    try:
        if previous is not None:
            check_resumable(previous, context.params, context.find_root().params.get("plugins_dir"), context.command, manifest)
        check_methods(lm, plan)
    except DebiasKitError as error:
        raise UserError(str(error)) from None

    def save(comparison: Comparison, _: MethodRun) -> None:
        if out is not None:
            write_run(out, comparison.header(), comparison.rows(), comparison.frame(), manifest)
            atomic_write_text(out / CONTROLS_FILE, comparison.control_frame().to_csv(index=False))
            atomic_write_text(out / PROFESSIONS_FILE, comparison.profession_frame().to_csv(index=False))

    try:
        comparison = run_comparison(lm, occupations, family, plan, seed=seed, n_folds=folds, in_sample=in_sample,
                                    batch_size=batch_size, on_result=save, bootstrap=bootstrap, seeds=extra_seeds,
                                    heldout_templates=heldout_templates,
                                    finished=previous.finished if previous is not None else (), professions=profession_list)
    except DebiasKitError as error:
        raise UserError(str(error)) from None
    except KeyboardInterrupt:
        _report_interrupt(context, out)
    if fmt == "table":
        click.echo(headline_table(comparison.header(), comparison.rows()), nl=False)
    else:
        click.echo(render(comparison.header(), comparison.rows(), fmt), nl=False)
    if out is not None:
        report = write_report(out)
        click.echo(f"debiaskit: report written to {report}", err=True)
    failed = [run.row["method"] for run in comparison.runs if not run.ok]
    if failed:
        click.echo(f"debiaskit: {len(failed)} method(s) failed: {', '.join(failed)}", err=True)
        context.exit(1)


def _report_interrupt(context: click.Context, out: Path | None) -> None:
    """Ctrl-C: say where the finished methods are and how to finish the rest, and exit 130 (128 + SIGINT)."""
    if out is not None and (out / "summary.json").is_file():
        command = resume_command(out, context.find_root().params.get("plugins_dir"))
        click.echo(f"debiaskit: interrupted; the methods that finished are saved in {out}. Finish the rest with:\n  {command}", err=True)
    else:
        saved = "no method had finished" if out is not None else "nothing was saved (no --out)"
        click.echo(f"debiaskit: interrupted; {saved}. Run with --out DIR to keep each finished method and resume with "
                   "--resume DIR", err=True)
    context.exit(130)


def _plan_methods(host: PluginHost, methods: tuple[str, ...], assignments: tuple[str, ...]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, class, checked options) per method, baseline first; every option is checked before the model loads."""
    names = list(dict.fromkeys(methods)) if methods else list(host.methods.things)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    given = parse_assignments(assignments)
    for target in given:
        _method_class(host, target)
        if target not in names:
            raise DebiasKitError(f"options given for {target!r}, which is not among the methods to run ({', '.join(names)})")
    plan = []
    for name in names:
        method_class = _method_class(host, name)
        resolve_settings(name, method_class.options, given.get(name, {}))
        plan.append((name, method_class, given.get(name, {})))
    return plan


def _method_class(host: PluginHost, label: str) -> Any:
    """The class of `NAME` or of `NAME@LABEL`: the same method again as its own row, with its own `-o NAME@LABEL.key=value`."""
    name, at, tag = label.partition("@")
    if at and not tag:
        raise DebiasKitError(f"method {label!r} has an empty label; write NAME@LABEL, e.g. sae-ablation@zero")
    return host.methods.get("method", name)


def _load_data(host: PluginHost, dataset: str, template_family: str) -> tuple[Any, Any]:
    name, _, argument = dataset.partition(":")
    spec = host.datasets.get("data set", name)
    return spec.load(argument or None), host.templates.get("template family", template_family)


def _rerun_command(context: click.Context) -> str:
    """The command that reruns this comparison, every setting spelt out."""
    words = ["debiaskit"]
    plugins_dir = context.find_root().params.get("plugins_dir")
    if plugins_dir is not None:
        words += ["--plugins-dir", str(plugins_dir)]
    words.append(context.info_name or "compare")
    for parameter in context.command.params:
        value = context.params.get(parameter.name)
        if parameter.name == "resume":
            continue  # the recorded command reruns the whole comparison from scratch
        flag = max(parameter.opts, key=len)  # type: ignore[attr-defined]
        if value is None or value is False or value == ():
            continue
        if value is True:
            words.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _versions() -> dict[str, str]:
    found = {}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    found["python"] = sys.version.split()[0]
    return found


def main() -> None:
    cli(prog_name="debiaskit")


def _generation_options(max_new_tokens: int) -> Any:
    """The options `generate` and `generation-eval` share: model, data the methods are fitted on, method options,
    seed, and sampling."""
    return stacked(
        model_options,
        click.option("--dataset", default="occupations40", show_default=True, help="Jobs the methods are fitted on (all of them)."),
        click.option("--templates", "template_family", default="pronoun", show_default=True, help="Template family."),
        click.option("-o", "--option", "assignments", multiple=True, help="Method option, method.key=value (repeatable)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seeds the fit and the sampling."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=max_new_tokens, show_default=True),
        click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True, help="0 = greedy."),
    )


@cli.command("generate")
@click.option("-m", "--method", required=True, help="The method to apply (any registered method).")
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("-n", "--samples", "n_samples", type=click.IntRange(min=1), default=3, show_default=True)
@_generation_options(max_new_tokens=20)
@click.pass_context
def generate_command(context: click.Context, method: str, prompt: str, n_samples: int, model: str, device: str,
                     dtype: str, dataset: str, template_family: str, assignments: tuple[str, ...], seed: int,
                     max_new_tokens: int, temperature: float) -> None:
    """Sample continuations of a prompt without and with a method, side by side (the same seed for both)."""
    from debiaskit.generation import fitted_method, sample_with_method

    host = _host(context)
    try:
        plan = _plan_methods(host, (method,), assignments)
        occupations, family = _load_data(host, dataset, template_family)
        lm = load_model(model, device=device, dtype=dtype)
        samples = {
            name: sample_with_method(lm, fitted_method(lm, method_class, given, occupations.occupations, family, seed),
                                     [prompt], n_samples=n_samples, max_new_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed)[0]
            for name, method_class, given in plan
        }
    except DebiasKitError as error:
        raise UserError(str(error)) from None
    width = max(len(name) for name in samples)
    click.echo(f"prompt: {prompt}")
    for index in range(n_samples):
        click.echo(f"sample {index + 1}")
        for name, texts in samples.items():
            click.echo(f"  {name:<{width}}  {texts[index]!r}")  # repr: newlines and edge spaces stay visible


@cli.command("generation-eval")
@click.option("-m", "--method", "methods", multiple=True, help="Method to run (repeatable). Default: all registered.")
@click.option("-n", "--samples", "n_samples", type=click.IntRange(min=1), default=2, show_default=True,
              help="Continuations per prompt.")
@click.option("--templates-per-job", type=click.IntRange(min=1), default=2, show_default=True,
              help="Templates per job, spread over the family.")
@click.option("--words", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON {\"female\": [...], \"male\": [...]} of the words counted (default: datasets/gendered_tokens.json).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@_generation_options(max_new_tokens=10)  # every step is a full forward: keep the default run small
@click.pass_context
def generation_eval_command(context: click.Context, methods: tuple[str, ...], n_samples: int, templates_per_job: int,
                            words: Path | None, fmt: str, model: str, device: str, dtype: str, dataset: str,
                            template_family: str, assignments: tuple[str, ...], seed: int, max_new_tokens: int,
                            temperature: float) -> None:
    """Sample continuations of occupation prompts with each method and count female and male words per job group."""
    import time

    from debiaskit.data import spread_templates
    from debiaskit.generation import fitted_method, generation_frame, read_gendered_word_lists
    from debiaskit.metrics import generation_summary

    host = _host(context)
    try:
        plan = _plan_methods(host, methods, assignments)
        occupations, family = _load_data(host, dataset, template_family)
        word_lists = read_gendered_word_lists(words)
        templates = spread_templates(family, templates_per_job)
        lm = load_model(model, device=device, dtype=dtype)
        rows = []
        for name, method_class, given in plan:
            started = time.perf_counter()
            method = fitted_method(lm, method_class, given, occupations.occupations, family, seed)
            frame = generation_frame(lm, method, occupations.occupations, family, templates, word_lists,
                                     n_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
            rows.append({"method": name, "status": "ok", **generation_summary(frame), "samples": len(frame),
                         "seconds": round(time.perf_counter() - started, 2),
                         "protocol": "in-sample" if method.uses_jobs() else "not fitted on jobs"})
    except DebiasKitError as error:
        raise UserError(str(error)) from None
    header = {"model": model, "dataset": dataset, "templates": template_family, "seed": seed,
              "template_indices": templates, "samples_per_prompt": n_samples, "max_new_tokens": max_new_tokens,
              "temperature": temperature, "words": word_lists.source}
    click.echo(render(header, rows, fmt), nl=False)


from debiaskit.evaluation_commands import report_command, sweep_command  # noqa: E402  (they use the helpers above)

cli.add_command(sweep_command)
cli.add_command(report_command)
