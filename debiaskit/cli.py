"""The `debiaskit` command group: the built-in commands (one module each under `debiaskit/commands/`) plus those
plugins add. Results go to stdout; progress and messages to stderr."""

from __future__ import annotations

from pathlib import Path

import click

from debiaskit.commands.compare import compare_command
from debiaskit.commands.generation import generate_command, generation_eval_command
from debiaskit.commands.info import datasets_command, methods_command, plugins_command
from debiaskit.commands.lm_eval import lm_eval_command
from debiaskit.commands.report import report_command
from debiaskit.commands.support import host_of
from debiaskit.commands.sweep import sweep_command

BUILT_IN_COMMANDS = (plugins_command, methods_command, datasets_command, compare_command, sweep_command,
                     report_command, generate_command, generation_eval_command, lm_eval_command)


class PluginCommands(click.Group):
    """The built-in commands plus those plugins add through the `register_commands` hook."""

    def plugin_commands(self, context: click.Context) -> click.Group:
        """The plugins' commands, collected once per invocation; one named like a built-in is refused."""
        root = context.find_root()
        if "plugin_commands" not in root.meta:
            group = click.Group()
            host_of(context).manager.hook.register_commands(cli=group)
            for name in sorted(set(group.commands) & set(self.commands)):
                click.echo(f"debiaskit: a plugin's command {name!r} has the name of a built-in command and is not "
                           "loaded; rename it", err=True)
                del group.commands[name]
            root.meta["plugin_commands"] = group
        plugin_commands: click.Group = root.meta["plugin_commands"]
        return plugin_commands

    def list_commands(self, context: click.Context) -> list[str]:
        return sorted({*super().list_commands(context), *self.plugin_commands(context).list_commands(context)})

    def get_command(self, context: click.Context, name: str) -> click.Command | None:
        return super().get_command(context, name) or self.plugin_commands(context).get_command(context, name)

    def invoke(self, context: click.Context) -> object:
        """Ctrl-C in a command that has no better advice: exit 130 (128 + SIGINT), not click's `Aborted!` and 1."""
        try:
            return super().invoke(context)
        except KeyboardInterrupt:
            click.echo("debiaskit: interrupted; run the command again to start over", err=True)
            raise click.exceptions.Exit(130) from None


@click.group(cls=PluginCommands, commands=BUILT_IN_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugins-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also load every *.py in this folder as a plugin.")
@click.pass_context
def cli(context: click.Context, plugins_dir: Path | None) -> None:
    """Compare debiasing methods for language models on occupational gender bias."""
    assert isinstance(context.command, PluginCommands)
    context.command.plugin_commands(context)  # loads the plugins, and says which of their commands are refused


def main() -> None:
    cli(prog_name="debiaskit")
