"""Occupation data sets and template families that ship with debiaskit, and loaders for a user's files.

  occupations40          the 40 jobs of the SAE-ablation study (datasets/occupations40.csv)
  csv:FILE               a user's CSV with columns occupation,group,pct_women
  winogender:DIR         the 60 WinoGender occupations (DIR/occupations-stats.tsv, BLS % female;
                         a job is female-dominated when women are at least half of it)
  dev[:DIR]              jobs to choose settings on, disjoint from occupations40 (DIR: the shared data folder holding
                         winogender/ and debiaswe/; default the one `professions.shared_data_dir` finds):
                         the WinoGender occupations whose head noun is no occupations40 job's (40 jobs, BLS % female,
                         grouped at 50%), and, to add stereotyped jobs WinoGender lacks, the Bolukbasi et al. 2016
                         professions rated stereotyped (|s| >= 0.7) but not gendered by definition (|f| <= 0.3) whose
                         head noun neither list has: the 6 female-stereotyped ones that are occupations and the 6 most
                         male-stereotyped (grouped by the sign of s; percent women unknown, so they are left out of
                         bls_corr)
"""

import csv
import json
import math
from pathlib import Path

from debiaskit import DatasetSpec, DebiasKitError, hookimpl
from debiaskit.data import (
    FEMALE_DOMINATED_PCT,
    Occupation,
    OccupationSet,
    head_noun,
    project_data_dir,
    read_occupations_csv,
    read_template_families,
)


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
        raise DebiasKitError("data set winogender needs the WinoGender folder: --dataset winogender:DIR "
                             "(holding occupations-stats.tsv)")
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
        jobs.append(Occupation(name, "female" if pct >= FEMALE_DOMINATED_PCT else "male", pct))
    return OccupationSet("winogender", "WinoGender (Rudinger et al. 2018), BLS percent female", tuple(jobs))


DEV_PER_SIDE = 6  # Bolukbasi professions per stereotyped side in `dev`: all six female-stereotyped ones
NOT_AN_OCCUPATION = {"soft spoken", "hooker"}  # a trait, and a slur


def load_dev(argument):
    from debiaskit.professions import shared_data_dir

    root = Path(argument) if argument else shared_data_dir()
    if root is None:
        raise DebiasKitError("data set dev needs the shared data folder (holding winogender/ and debiaswe/): "
                             "--dataset dev:DIR")
    winogender = load_winogender(str(root / "winogender")).occupations
    scored_heads = {head_noun(job.name) for job in load_occupations40(None).occupations}
    jobs = [job for job in winogender if head_noun(job.name) not in scored_heads]
    path = root / "debiaswe" / "professions.json"
    try:
        professions = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DebiasKitError(f"cannot read {path}: {error}") from None
    taken = scored_heads | {head_noun(job.name) for job in winogender}
    candidates = [(name.replace("_", " "), float(s)) for name, f, s in professions
                  if abs(float(f)) <= 0.3 and abs(float(s)) >= 0.7]
    candidates = [(name, s) for name, s in candidates
                  if head_noun(name) not in taken and name not in NOT_AN_OCCUPATION]
    female = [name for name, s in candidates if s < 0][:DEV_PER_SIDE]
    male = [name for name, s in sorted(candidates, key=lambda c: -c[1]) if s > 0][:DEV_PER_SIDE]
    jobs += ([Occupation(name, "female", math.nan) for name in female]
             + [Occupation(name, "male", math.nan) for name in male])
    return OccupationSet("dev", "WinoGender occupations and Bolukbasi et al. professions disjoint from occupations40",
                         tuple(jobs))


def _refuse_argument(name, argument):
    if argument:
        raise DebiasKitError(f"data set {name} takes no ':' argument (got {argument!r})")


@hookimpl
def register_datasets(register):
    register(DatasetSpec("occupations40", "the 40 jobs of the SAE-ablation study, 20 per group, with percent women",
                         load_occupations40))
    register(DatasetSpec("csv", "your own CSV (csv:PATH) with columns occupation,group,pct_women", load_user_csv))
    register(DatasetSpec("winogender", "the 60 WinoGender occupations (winogender:DIR), grouped at 50% women",
                         load_winogender))
    register(DatasetSpec("dev", "jobs disjoint from occupations40 to choose settings on (dev or dev:SHARED_DATA_DIR)",
                         load_dev))


@hookimpl
def register_templates(register):
    for family in read_template_families(project_data_dir() / "templates.json"):
        register(family)
