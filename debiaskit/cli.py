"""The `debiaskit` command. Results go to stdout; progress and messages to stderr."""

from __future__ import annotations

import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from debiaskit.compare import BASELINE, DEFAULT_FOLDS, Comparison, MethodRun, run_comparison
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE
from debiaskit.model import DEVICE_CHOICES, DTYPES, EMBEDDED_MODEL, load_model
from debiaskit.options import parse_assignments, resolve_settings
from debiaskit.plugin_host import PluginHost, load_plugins
from debiaskit.reporting import FORMATS, check_writable, render, write_run

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
        for option in method_class.options:
            knob = "  (strength knob)" if option.name == method_class.strength_knob else ""
            click.echo(f"    -o {name}.{option.name}={option.default!r:<12} {option.describe_type():<14} {option.help}{knob}")


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
@click.option("-m", "--method", "methods", multiple=True, help="Method to run (repeatable). Default: all registered.")
@click.option("--model", default=EMBEDDED_MODEL, show_default=True,
              help="'smollm2' (embedded), a local Llama Hugging Face folder, or a TransformerLens model name.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True)
@click.option("--dataset", default="occupations40", show_default=True, help="Data set name, NAME:ARGUMENT for loaders that take one.")
@click.option("--templates", "template_family", default="pronoun", show_default=True, help="Template family.")
@click.option("-o", "--option", "assignments", multiple=True, help="Method option, method.key=value (repeatable).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write per-prompt results, summary and manifest here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--folds", type=int, default=DEFAULT_FOLDS, show_default=True, help="k of the k-fold split over jobs.")
@click.option("--in-sample", is_flag=True, help="Fit job-fitted methods on all jobs and score the same jobs (labelled in-sample).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.pass_context
def compare_command(context: click.Context, methods: tuple[str, ...], model: str, device: str, dtype: str, dataset: str,
                    template_family: str, assignments: tuple[str, ...], fmt: str, out: Path | None, seed: int, folds: int,
                    in_sample: bool, batch_size: int) -> None:
    """Score methods side by side on the same prompts and print one row per method (baseline first)."""
    host = _host(context)
    try:
        plan = _plan_methods(host, methods, assignments)
        occupations, family = _load_data(host, dataset, template_family)
        if out is not None:
            check_writable(out)
        lm = load_model(model, device=device, dtype=dtype)
    except DebiasKitError as error:
        raise UserError(str(error)) from None
    manifest = {
        "command": _rerun_command(context), "model": model, "device": str(lm.device), "dtype": dtype,
        "dataset": dataset, "templates": template_family, "seed": seed, "folds": folds, "in_sample": in_sample,
        "batch_size": batch_size, "methods": [{"method": name, "options": given} for name, _, given in plan],
        "versions": _versions(),
    }

    def save(comparison: Comparison, _: MethodRun) -> None:
        if out is not None:
            write_run(out, comparison.header(), comparison.rows(), comparison.frame(), manifest)

    try:
        comparison = run_comparison(lm, occupations, family, plan, seed=seed, n_folds=folds, in_sample=in_sample,
                                    batch_size=batch_size, on_result=save)
    except DebiasKitError as error:
        raise UserError(str(error)) from None
    click.echo(render(comparison.header(), comparison.rows(), fmt), nl=False)
    failed = [run.row["method"] for run in comparison.runs if not run.ok]
    if failed:
        click.echo(f"debiaskit: {len(failed)} method(s) failed: {', '.join(failed)}", err=True)
        context.exit(1)


def _plan_methods(host: PluginHost, methods: tuple[str, ...], assignments: tuple[str, ...]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, class, checked options) per method, baseline first; every option is checked before the model loads."""
    names = list(dict.fromkeys(methods)) if methods else list(host.methods.things)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    given = parse_assignments(assignments)
    for target in given:
        host.methods.get("method", target)
        if target not in names:
            raise DebiasKitError(f"options given for {target!r}, which is not among the methods to run ({', '.join(names)})")
    plan = []
    for name in names:
        method_class = host.methods.get("method", name)
        resolve_settings(name, method_class.options, given.get(name, {}))
        plan.append((name, method_class, given.get(name, {})))
    return plan


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
