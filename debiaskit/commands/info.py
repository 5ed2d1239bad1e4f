"""`debiaskit plugins`, `methods` and `datasets`: what is loaded and what each thing accepts."""

from __future__ import annotations

import click

from debiaskit.commands.support import host_of


@click.command("plugins")
@click.pass_context
def plugins_command(context: click.Context) -> None:
    """List the loaded plugins, where each came from, and what it registers."""
    host = host_of(context)
    for row in host.plugin_rows():
        click.echo(f"{row['plugin']}\t{row['from']}\t{row['registers']}")
    for problem in host.load_errors:
        click.echo(f"(failed)\t{problem}")


@click.command("methods")
@click.pass_context
def methods_command(context: click.Context) -> None:
    """List the debiasing methods with their options and defaults."""
    registry = host_of(context).methods
    for name, method_class in registry.things.items():
        click.echo(f"{name}: {method_class.description}  [{registry.sources[name]}]")
        settings = [f"-o {name}.{option.name}={option.as_typed(option.default)}" for option in method_class.options]
        width = max(map(len, settings), default=0)
        for option, setting in zip(method_class.options, settings):
            knob = "  (strength knob)" if option.name == method_class.strength_knob else ""
            click.echo(f"    {setting:<{width}}  [{option.describe_type()}] {option.help}{knob}")


@click.command("datasets")
@click.pass_context
def datasets_command(context: click.Context) -> None:
    """List occupation data sets and template families."""
    host = host_of(context)
    click.echo("data sets (--dataset NAME[:ARGUMENT]):")
    for name, spec in host.datasets.things.items():
        click.echo(f"    {name}: {spec.description}  [{host.datasets.sources[name]}]")
    click.echo("template families (--templates NAME):")
    for name, family in host.templates.things.items():
        click.echo(f"    {name}: {family.description} ({len(family.templates)} templates)")
