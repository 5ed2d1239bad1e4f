"""What the `debiaskit` commands share, built-in and plugin commands alike: the options they take, the plugin host
of the invocation (loaded once), planning methods, loading data, and the one place a DebiasKitError becomes a usage
error (exit 2, its message, no traceback)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from debiaskit.compare import BASELINE
from debiaskit.data import OccupationSet, TemplateFamily
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE, LAST_POSITION_BATCHES
from debiaskit.model import DEVICE_CHOICES, DTYPES, EMBEDDED_MODEL
from debiaskit.options import parse_assignments, resolve_settings
from debiaskit.plugin_host import PluginHost, load_plugins
from debiaskit.ray_executor import EXECUTORS, Pool
from debiaskit.run_dir import check_writable, run_lock

VERSIONED_PACKAGES = ("debiaskit", "torch", "transformer-lens", "sae-lens", "transformers", "concept-erasure", "pandas",
                      "numpy")
MODEL_HELP = "'smollm2' (embedded), a local Llama-architecture Hugging Face folder, or a TransformerLens model name."
DEVICE_HELP = "auto: cuda when torch sees a GPU, else cpu."

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
MethodPlan = list[tuple[str, Any, dict[str, Any]]]  # (row name, method class, options as given) per method


class UserError(click.UsageError):
    """Bad input: a message and exit code 2, no traceback."""


@contextmanager
def usage_errors() -> Iterator[None]:
    """Inside, a DebiasKitError (bad input the library found) leaves as a UserError with the same message."""
    try:
        yield
    except DebiasKitError as error:
        raise UserError(str(error)) from None


def host_of(context: click.Context) -> PluginHost:
    """The plugin host of this invocation, loaded once (with --plugins-dir when given) and shared by every command."""
    root = context.find_root()
    if "host" not in root.meta:
        with usage_errors():
            root.meta["host"] = load_plugins(root.params.get("plugins_dir"))
        for problem in root.meta["host"].load_errors:
            click.echo(f"debiaskit: plugin failed to load: {problem}", err=True)
    host: PluginHost = root.meta["host"]
    return host


def stacked(*options: Decorator) -> Decorator:
    """One decorator applying `options` so that `--help` lists them in the order given."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


DEVICE_OPTION = click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                             help=DEVICE_HELP)
DTYPE_OPTION = click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True,
                            help="Precision the model runs in.")
# --model, --device and --dtype; the command receives them as `model`, `device` and `dtype`
model_options = stacked(click.option("--model", default=EMBEDDED_MODEL, show_default=True, help=MODEL_HELP),
                        DEVICE_OPTION, DTYPE_OPTION)
# the same with --model repeatable; the command receives the models as `models`, a tuple
models_options = stacked(
    click.option("--model", "models", multiple=True, default=(EMBEDDED_MODEL,), show_default=True,
                 help=MODEL_HELP + " Repeatable: each model is scored on the same prompts, its rows marked with "
                 "its name; with --out, each model's run goes into a folder of its own."),
    DEVICE_OPTION, DTYPE_OPTION)


def data_options(dataset_help: str = "Data set name, NAME:ARGUMENT for loaders that take one.",
                 templates_help: str = "Template family.") -> Decorator:
    """--dataset and --templates; the command receives them as `dataset` and `template_family`."""
    return stacked(
        click.option("--dataset", default="occupations40", show_default=True, help=dataset_help),
        click.option("--templates", "template_family", default="pronoun", show_default=True, help=templates_help),
    )


# --batch-size, for the commands that score prompts; the command receives it as `batch_size`
batch_size_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
    help=f"Sequences per forward pass; prompts unembedded at their last position only take {LAST_POSITION_BATCHES}x "
    "as many.")


def method_options_option(help: str = "Method option, method.key=value (repeatable).") -> Decorator:
    """-o/--option, repeatable; the command receives them as `assignments`."""
    return click.option("-o", "--option", "assignments", multiple=True, help=help)


# --executor, --address, --workers and --gpus-per-worker; the command receives them under those names
executor_options = stacked(
    click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
                 help="Where the methods' rows are scored: one after another in this process, or on a Ray actor pool "
                      "(pip install ray)."),
    click.option("--address", default="", help="With --executor ray: empty starts Ray on this machine; 'auto' or "
                 "ray://HOST:PORT joins a running cluster."),
    click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                 help="With --executor ray: actors, each holding one replica of the model."),
    click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="With --executor ray: GPUs per actor; a fraction such as 0.25 puts several replicas on a GPU."),
)


def ray_pool(context: click.Context, address: str, workers: int, gpus_per_worker: float) -> Pool:
    return Pool(address, workers, gpus_per_worker, context.find_root().params.get("plugins_dir"))


professions_option = click.option(
    "--professions", default="auto", show_default=True,
    help="Bolukbasi et al.'s professions.json for the stereotype/factual regression (a_s, a_f): a file, `auto` "
         "(debiaswe/professions.json under $DEBIASKIT_SHARED_DATA or the shared/data folder beside a checkout) "
         "or `none`.")


def lock_out_dir(context: click.Context, out: Path) -> None:
    """`out` is writable and, until this command ends, locked against a second debiaskit run writing there."""
    check_writable(out)
    context.with_resource(run_lock(out))


def load_data(host: PluginHost, dataset: str, template_family: str) -> tuple[OccupationSet, TemplateFamily]:
    return host.load_occupations(dataset), host.template_family(template_family)


def plan_methods(host: PluginHost, methods: tuple[str, ...], assignments: tuple[str, ...]) -> MethodPlan:
    """(name, class, checked options) per method, baseline first; every option is checked before the model loads."""
    names = list(dict.fromkeys(methods)) if methods else list(host.methods.things)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    given = parse_assignments(assignments)
    for target in given:
        method_class(host, target)
        if target not in names:
            raise DebiasKitError(f"options given for {target!r}, which is not among the methods to run "
                                 f"({', '.join(names)})")
    plan = []
    for name in names:
        found = method_class(host, name)
        resolve_settings(name, found.options, given.get(name, {}))
        plan.append((name, found, given.get(name, {})))
    return plan


def method_class(host: PluginHost, label: str) -> Any:
    """The class of `NAME` or of `NAME@LABEL`: the same method again as its own row, with its own
    `-o NAME@LABEL.key=value`."""
    name, at, tag = label.partition("@")
    if at and not tag:
        raise DebiasKitError(f"method {label!r} has an empty label; write NAME@LABEL, e.g. sae-ablation@zero")
    return host.methods.get("method", name)


def rerun_command(context: click.Context, skipped: tuple[str, ...] = ("resume", "force"),
                  replaced: Mapping[str, Any] | None = None) -> str:
    """The command that reruns this one, every setting spelt out (the `skipped` parameters left out, the `replaced`
    ones given these values instead)."""
    values = {**context.params, **(replaced or {})}
    words = ["debiaskit"]
    plugins_dir = context.find_root().params.get("plugins_dir")
    if plugins_dir is not None:
        words += ["--plugins-dir", str(plugins_dir)]
    words.append(context.info_name or context.command.name or "")
    for parameter in context.command.params:
        value = values.get(parameter.name)
        if parameter.name in skipped or value is None or value is False or value == ():
            continue
        flag = max(parameter.opts, key=len)  # type: ignore[attr-defined]
        if value is True:
            words.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def package_versions() -> dict[str, str]:
    """The version of each package that changes numbers, and Python's, as a run's manifest records them."""
    found = {}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    found["python"] = sys.version.split()[0]
    return found
