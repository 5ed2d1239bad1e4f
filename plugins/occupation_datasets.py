"""Occupation data sets and template families that ship with debiaskit, and loaders for a user's files.

  occupations40          the 40 jobs of the SAE-ablation study (datasets/occupations40.csv)
  csv:FILE               a user's CSV with columns occupation,group,pct_women
  winogender:DIR         the 60 WinoGender occupations (DIR/occupations-stats.tsv, BLS % female;
                         a job is female-dominated when women are at least half of it)
"""

import csv
from pathlib import Path

from debiaskit import DatasetSpec, DebiasKitError, hookimpl
from debiaskit.data import Occupation, OccupationSet, project_data_dir, read_occupations_csv, read_template_families


def load_occupations40(argument):
    _refuse_argument("occupations40", argument)
    return read_occupations_csv(project_data_dir() / "occupations40.csv", "occupations40",
                                "SAE-ablation study (seed 000) with US BLS percent women")


def load_user_csv(argument):
    if not argument:
        raise DebiasKitError("data set csv needs a file: --dataset csv:PATH (columns occupation,group,pct_women)")
    return read_occupations_csv(Path(argument), f"csv:{argument}", str(argument))


def load_winogender(argument):
    if not argument:
        raise DebiasKitError("data set winogender needs the WinoGender folder: --dataset winogender:DIR (holding occupations-stats.tsv)")
    path = Path(argument) / "occupations-stats.tsv"
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines(), delimiter="\t"))
    except OSError as error:
        raise DebiasKitError(f"cannot read {path}: {error.strerror or error}") from None
    jobs = []
    for line, row in enumerate(rows, start=2):
        try:
            pct = float(row["bls_pct_female"])
            name = row["occupation"].strip()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DebiasKitError(f"{path}:{line}: expected columns occupation and bls_pct_female (a number)") from None
        jobs.append(Occupation(name, "female" if pct >= 50.0 else "male", pct))
    return OccupationSet("winogender", "WinoGender (Rudinger et al. 2018), BLS percent female", tuple(jobs))


def _refuse_argument(name, argument):
    if argument:
        raise DebiasKitError(f"data set {name} takes no ':' argument (got {argument!r})")


@hookimpl
def register_datasets(register):
    register(DatasetSpec("occupations40", "the 40 jobs of the SAE-ablation study, 20 per group, with percent women", load_occupations40))
    register(DatasetSpec("csv", "your own CSV (csv:PATH) with columns occupation,group,pct_women", load_user_csv))
    register(DatasetSpec("winogender", "the 60 WinoGender occupations (winogender:DIR), grouped at 50% women", load_winogender))


@hookimpl
def register_templates(register):
    for family in read_template_families(project_data_dir() / "templates.json"):
        register(family)
