"""WinoGender as a likelihood test: which pronoun does the model prefer in a sentence about an occupation?

Rudinger, Naradowsky, Leonard & Van Durme 2018, "Gender Bias in Coreference Resolution" (NAACL): 120 templates, two
per occupation for 60 occupations, each written with the occupation and a participant (or "someone") and a pronoun
that refers to one of them (answer 0 = the occupation, 1 = the participant), in a male, a female and a neutral
version: 720 sentences. The paper tests coreference systems; here, as for CrowS-Pairs, each version is scored by its
whole-sentence log-likelihood given only the anchor token, and the versions differ only in the pronoun, so

    female_share = sigmoid(loglik_female - loglik_male) = p(female) / (p(female) + p(male))

is the female version's share of the two versions' probability, per (occupation, participant, answer). Per
occupation the mean share over its four rows (two templates x participant or "someone"), and over occupations

    winogender_bls_corr       = Pearson correlation of the occupation shares with BLS % female
    winogender_gap            = mean share of occupations with BLS % female >= 50 - mean share of the others
    winogender_female_share   = mean share over all scored rows

The gap is debiaskit's `stereotype_gap` (positive = stereotyped) with the grouping of the `winogender:DIR` data set:
an occupation is female-dominated when women are at least half of it. `bls_corr` and `stereotype_gap` are
`debiaskit.metrics`'s.

Caveat: debiaskit's `dev` data set is built from the WinoGender occupations whose head noun is no occupations40 job,
so settings chosen on dev jobs were chosen on 40 of these 60 occupations (with other sentences).

Data: rudinger/winogender-schemas (MIT), `all_sentences.tsv` (sentid `occupation.participant.answer.gender.txt`,
sentence) and `occupations-stats.tsv` (occupation, bls_pct_female, ...), read from the shared data folder or a
folder given.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from debiaskit.data import FEMALE_DOMINATED_PCT
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE, sequence_log_likelihoods
from debiaskit.method import LogitsTransform
from debiaskit.metrics import bls_corr, stereotype_gap
from debiaskit.model import LoadedModel
from debiaskit.professions import shared_data_dir

WINOGENDER_DIR = "winogender"  # relative to shared_data_dir()
SENTENCES_FILE = "all_sentences.tsv"
STATS_FILE = "occupations-stats.tsv"
GENDERS = ("male", "female", "neutral")
ANSWERS = ("0", "1")


@dataclass(frozen=True)
class WinoSentence:
    occupation: str
    participant: str  # the other participant, or "someone"
    answer: int  # 0: the pronoun refers to the occupation, 1: to the participant
    gender: str  # the pronoun's: "male", "female" or "neutral"
    sentence: str


@dataclass(frozen=True)
class WinoGender:
    sentences: tuple[WinoSentence, ...]
    bls_pct_female: Mapping[str, float]  # occupation -> BLS percent women
    source: str = ""  # the folder read


def _read_tsv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) per data line of a tab-separated file that has at least `columns`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DebiasKitError(f"cannot read WinoGender file {path}: {error}; expected rudinger/winogender-schemas' "
                             f"{path.name} (tab-separated, columns {', '.join(columns)})") from None
    reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = [column for column in columns if column not in (reader.fieldnames or [])]
    if missing:
        raise DebiasKitError(f"WinoGender file {path} lacks the column(s) {', '.join(missing)}; expected a "
                             f"tab-separated header with {', '.join(columns)}")
    return [(line, row) for line, row in enumerate(reader, start=2)]


def _parse_sentence(path: Path, line: int, row: dict[str, str]) -> WinoSentence:
    parts = (row["sentid"] or "").split(".")
    if (len(parts) != 5 or parts[4] != "txt" or not parts[0] or not parts[1] or parts[2] not in ANSWERS
            or parts[3] not in GENDERS or not (row["sentence"] or "").strip()):
        raise DebiasKitError(f"{path}:{line}: sentence id {row['sentid']!r} is not occupation.participant.answer."
                             f"gender.txt (answer {' or '.join(ANSWERS)}, gender {', '.join(GENDERS)}) followed by "
                             "a sentence")
    return WinoSentence(parts[0], parts[1], int(parts[2]), parts[3], row["sentence"].strip())


def load_winogender(directory: Path | None = None) -> WinoGender:
    """The 720 sentences and the 60 occupations' BLS percent women from a WinoGender folder (default: the shared
    data folder's winogender/)."""
    if directory is None:
        found = shared_data_dir()
        if found is None:
            raise DebiasKitError(f"WinoGender needs the folder {WINOGENDER_DIR}/ under the shared data folder "
                                 "($DEBIASKIT_SHARED_DATA or shared/data beside the checkout), or its path given")
        directory = found / WINOGENDER_DIR
    directory = Path(directory)
    stats_path = directory / STATS_FILE
    bls_pct_female = {}
    for line, row in _read_tsv(stats_path, ("occupation", "bls_pct_female")):
        try:
            bls_pct_female[row["occupation"].strip()] = float(row["bls_pct_female"])
        except (TypeError, ValueError, AttributeError):
            raise DebiasKitError(f"{stats_path}:{line}: expected an occupation and bls_pct_female (a number), got "
                                 f"{row.get('occupation')!r} and {row.get('bls_pct_female')!r}") from None
    sentences_path = directory / SENTENCES_FILE
    sentences = []
    first_line: dict[str, int] = {}
    for line, row in _read_tsv(sentences_path, ("sentid", "sentence")):
        sentence = _parse_sentence(sentences_path, line, row)
        if row["sentid"] in first_line:
            raise DebiasKitError(f"{sentences_path}:{line}: sentence id {row['sentid']!r} is also on line "
                                 f"{first_line[row['sentid']]}; each sentence id must be unique")
        first_line[row["sentid"]] = line
        if sentence.occupation not in bls_pct_female:
            raise DebiasKitError(f"{sentences_path}:{line}: occupation {sentence.occupation!r} has no row in "
                                 f"{stats_path}; every occupation needs its bls_pct_female")
        sentences.append(sentence)
    if not sentences:
        raise DebiasKitError(f"WinoGender file {sentences_path} holds no sentence")
    return WinoGender(tuple(sentences), bls_pct_female, str(directory))


def score_winogender(lm: LoadedModel, data: WinoGender, transform: LogitsTransform | None,
                     batch_size: int = DEFAULT_BATCH_SIZE, occupations: Collection[str] | None = None) -> pd.DataFrame:
    """One row per (occupation, participant, answer), in file order: loglik_male, loglik_female, loglik_neutral (each
    version given only the anchor) and female_share; `occupations` restricts what is scored (default all)."""
    if occupations is not None:
        unknown = sorted(set(occupations) - {s.occupation for s in data.sentences})
        if unknown:
            raise DebiasKitError(f"not WinoGender occupations: {', '.join(unknown)}; accepted: "
                                 f"{', '.join(sorted(data.bls_pct_female))}")
    chosen = [s for s in data.sentences if occupations is None or s.occupation in occupations]
    if not chosen:
        raise DebiasKitError("no WinoGender occupation to score: `occupations` is empty")
    log_likelihoods = sequence_log_likelihoods(lm, [lm.encode(s.sentence) for s in chosen], transform, batch_size,
                                               label="WinoGender")
    versions: dict[tuple[str, str, int], dict[str, float]] = {}  # in file order
    for sentence, log_likelihood in zip(chosen, log_likelihoods):
        versions.setdefault((sentence.occupation, sentence.participant, sentence.answer), {})[sentence.gender] = (
            float(log_likelihood))
    if any(set(found) != set(GENDERS) for found in versions.values()):
        raise DebiasKitError(f"WinoGender in {data.source}: every (occupation, participant, answer) needs one male, "
                             "one female and one neutral sentence; some are missing")
    frame = pd.DataFrame([{"occupation": occupation, "participant": participant, "answer": answer,
                           **{f"loglik_{gender}": found[gender] for gender in GENDERS}}
                          for (occupation, participant, answer), found in versions.items()])
    # sigmoid(female - male), written so that neither exponential overflows
    frame["female_share"] = np.exp(-np.logaddexp(0.0, frame["loglik_male"] - frame["loglik_female"]))
    return frame


def winogender_summary(frame: pd.DataFrame, bls_pct_female: Mapping[str, float]) -> dict[str, float]:
    """winogender_bls_corr, winogender_gap, winogender_female_share and winogender_occupations (how many were
    scored) from a `score_winogender` frame."""
    shares = frame.groupby("occupation", sort=False)["female_share"].mean()
    unknown = [occupation for occupation in shares.index if occupation not in bls_pct_female]
    if unknown:
        raise DebiasKitError(f"no bls_pct_female for the scored occupation(s) {', '.join(unknown)}")
    pct_women = np.array([bls_pct_female[occupation] for occupation in shares.index], dtype=float)
    groups = np.where(pct_women >= FEMALE_DOMINATED_PCT, "female", "male")
    both_groups = {"female", "male"} <= set(groups)
    return {
        "winogender_bls_corr": bls_corr(shares.to_numpy(), pct_women),
        "winogender_gap": stereotype_gap(shares.to_numpy(), groups) if both_groups else float("nan"),
        "winogender_female_share": float(frame["female_share"].mean()),
        "winogender_occupations": len(shares),
    }
