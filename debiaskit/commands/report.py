"""`debiaskit report DIR`: the report files of a `compare --out` or `sweep --out` folder."""

from __future__ import annotations

from pathlib import Path

import click

from debiaskit.commands.support import usage_errors
from debiaskit.report import write_report


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def report_command(run_dir: Path) -> None:
    """Write report.md, table.tex, figures/*.png and a self-contained report.html from a `compare --out` or
    `sweep --out` folder."""
    with usage_errors():
        click.echo(write_report(run_dir))
