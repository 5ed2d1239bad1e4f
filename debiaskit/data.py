"""Occupation data sets, prompt template families, and the k-fold split over jobs."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from debiaskit.errors import DebiasKitError

GROUPS = ("female", "male")  # female- and male-dominated jobs


def project_data_dir() -> Path:
    """`datasets/` of a checkout, or `debiaskit/datasets/` of an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "datasets", here.parent / "datasets"):
        if (candidate / "templates.json").is_file():
            return candidate
    raise DebiasKitError(f"debiaskit's data files are missing (looked in {here / 'datasets'} and "
                         f"{here.parent / 'datasets'}); reinstall debiaskit")


FEMALE_DOMINATED_PCT = 50.0  # a job with at least this percent women is female-dominated (the WinoGender grouping)


def head_noun(name: str) -> str:
    """The last word of an occupation's name, lower-cased: "kindergarten teacher" -> "teacher"."""
    return name.split()[-1].lower()


@dataclass(frozen=True)
class Occupation:
    name: str
    group: str  # "female" or "male": which group dominates the job
    pct_women: float


@dataclass(frozen=True)
class OccupationSet:
    name: str
    source: str
    occupations: tuple[Occupation, ...]

    def in_group(self, group: str) -> tuple[Occupation, ...]:
        return tuple(job for job in self.occupations if job.group == group)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set. `load(argument)` gets what follows ':' in `--dataset NAME:ARGUMENT` (or None)."""

    name: str
    description: str
    load: Callable[[str | None], OccupationSet]


@dataclass(frozen=True)
class TemplateFamily:
    """Prompt templates with `{job}` (and optionally `{a_job}`, the job with its article) and the words whose
    next-token probability is summed for each gender."""

    name: str
    description: str
    templates: tuple[str, ...]
    male_words: tuple[str, ...]
    female_words: tuple[str, ...]

    def prompt(self, template: str, job: str) -> str:
        article = "an" if job[:1].lower() in "aeiou" else "a"
        return template.format(job=job, a_job=f"{article} {job}")


def read_occupations_csv(path: Path, name: str, source: str) -> OccupationSet:
    """Read `occupation,group,pct_women` rows; any bad row is an error naming the file and line."""
    required = ("occupation", "group", "pct_women")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (as spreadsheet programs write) is fine
    except OSError as error:
        raise DebiasKitError(f"cannot read occupation file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise DebiasKitError(f"{path} is not UTF-8 text; expected a CSV with columns {', '.join(required)}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = list(reader.fieldnames or [])
    missing = [column for column in required if column not in columns]
    if missing:
        raise DebiasKitError(f"{path}:1: missing column {missing[0]!r}; expected columns {', '.join(required)} "
                             f"(found {columns})")
    twice = sorted({column for column in columns if columns.count(column) > 1})
    if twice:
        raise DebiasKitError(f"{path}:1: column {twice[0]!r} appears twice; give each column once")
    jobs: list[Occupation] = []
    first_line = 2
    for row in reader:
        where = f"{path}:{first_line}"
        if reader.line_num != first_line:
            raise DebiasKitError(f"{where}: a quoted field runs over lines {first_line} to {reader.line_num}; "
                                 "each occupation takes one line")
        jobs.append(_parse_occupation_row(row, where))
        first_line = reader.line_num + 1
    if not jobs:
        raise DebiasKitError(f"{path} has a header but no occupations")
    _check_occupations(jobs, str(path))
    return OccupationSet(name=name, source=source, occupations=tuple(jobs))


def _parse_occupation_row(row: dict[str, str | None], where: str) -> Occupation:
    if None in row:
        raise DebiasKitError(f"{where}: more fields than the header has columns")
    job = (row.get("occupation") or "").strip()
    group = (row.get("group") or "").strip().lower()
    pct_text = (row.get("pct_women") or "").strip()
    if not job:
        raise DebiasKitError(f"{where}: empty occupation name")
    if group not in GROUPS:
        raise DebiasKitError(f"{where}: group {row.get('group')!r} for {job!r}; accepted: {', '.join(GROUPS)}")
    try:
        pct_women = float(pct_text)
    except ValueError:
        raise DebiasKitError(f"{where}: pct_women {pct_text!r} for {job!r} is not a number; "
                             "expected 0 to 100") from None
    if not 0.0 <= pct_women <= 100.0:
        raise DebiasKitError(f"{where}: pct_women {pct_text!r} for {job!r} is outside 0 to 100")
    return Occupation(job, group, pct_women)


def _check_occupations(jobs: Sequence[Occupation], where: str) -> None:
    names = [job.name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DebiasKitError(f"{where}: occupation {duplicates[0]!r} appears more than once")
    for group in GROUPS:
        if not any(job.group == group for job in jobs):
            raise DebiasKitError(f"{where}: no {group}-dominated job; the stereotype gap needs both groups")


def read_template_families(path: Path) -> list[TemplateFamily]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DebiasKitError(f"cannot read template families from {path}: {error}") from None
    return [
        TemplateFamily(name, spec["description"], tuple(spec["templates"]), tuple(spec["male_words"]),
                       tuple(spec["female_words"]))
        for name, spec in raw.items()
    ]


def job_folds(occupations: Sequence[Occupation], n_folds: int,
              seed: int) -> list[tuple[tuple[Occupation, ...], tuple[Occupation, ...]]]:
    """(train, held_out) per fold, stratified by group: each group is shuffled with `seed` and dealt round-robin."""
    smallest = min(sum(job.group == group for job in occupations) for group in GROUPS)
    if not 2 <= n_folds <= smallest:
        raise DebiasKitError(f"--folds {n_folds}: accepted 2 to {smallest} (the number of jobs in the smaller group)")
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    for group in GROUPS:
        names = [job.name for job in occupations if job.group == group]
        rng.shuffle(names)
        fold_of.update({name: index % n_folds for index, name in enumerate(names)})
    return [
        (tuple(j for j in occupations if fold_of[j.name] != fold),
         tuple(j for j in occupations if fold_of[j.name] == fold))
        for fold in range(n_folds)
    ]


def template_split(family: TemplateFamily, n_heldout: int, seed: int) -> tuple[TemplateFamily, list[int]]:
    """(the family a method is fitted on, the template indices scored). With `n_heldout` = 0 both are every template;
    otherwise `n_heldout` templates drawn with `seed` are scored and the family keeps only the others."""
    indices = list(range(len(family.templates)))
    if n_heldout == 0:
        return family, indices
    if not 1 <= n_heldout < len(indices):
        accepted = (f"accepted 0 (off) or 1 to {len(indices) - 1}" if len(indices) > 1
                    else "accepted only 0 (off): a family of one template has none to spare")
        raise DebiasKitError(f"--heldout-templates {n_heldout}: {accepted} (the {family.name!r} family has "
                             f"{len(indices)} template(s); at least one must stay for fitting)")
    heldout = sorted(random.Random(seed).sample(indices, n_heldout))
    kept = tuple(family.templates[i] for i in indices if i not in heldout)
    return replace(family, templates=kept), heldout


def spread_templates(family: TemplateFamily, count: int) -> list[int]:
    """Indices of `count` templates spread evenly over the family (first and last included), so a few templates
    still cover its different verbs."""
    if not 1 <= count <= len(family.templates):
        raise DebiasKitError(f"templates per job {count}: accepted 1 to {len(family.templates)} "
                             f"(family {family.name!r})")
    return spread(list(range(len(family.templates))), count)


def spread(items: Sequence[int], count: int) -> list[int]:
    """`count` of `items` (all when there are fewer) spread evenly, the first and the last included."""
    if count >= len(items):
        return list(items)
    if count == 1:
        return [items[0]]
    return [items[index] for index in sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)})]
