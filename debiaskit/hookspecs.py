"""The hooks a debiaskit plugin implements. Each receives a `register` callable and calls it once per thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click
import pluggy

if TYPE_CHECKING:
    from debiaskit.data import DatasetSpec, TemplateFamily
    from debiaskit.method import Method

PROJECT = "debiaskit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_methods(register: Callable[[type[Method]], None]) -> None:
    """Register debiasing methods: call `register(MethodSubclass)` for each. Names must be unique across plugins."""


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register occupation data sets: call `register(DatasetSpec(name, description, load))` for each."""


@hookspec
def register_templates(register: Callable[[TemplateFamily], None]) -> None:
    """Register prompt template families (templates plus the male and female target words) by calling `register`."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the `debiaskit` command line (e.g. `cli.add_command(my_command)`)."""
