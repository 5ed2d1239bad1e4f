"""CrowS-Pairs, gender subset: does the model find the more stereotyping sentence of a minimal pair more likely?

Nangia, Vania, Bhalerao & Bowman 2020, "CrowS-Pairs: A Challenge Dataset for Measuring Social Biases in Masked
Language Models" (EMNLP): 1,508 crowd-written sentence pairs that differ in the group they name, 262 of them about
gender. For a causal LM each sentence is scored as lm-evaluation-harness's `crows_pairs_english*` tasks score it:
the log-likelihood of the whole sentence given only the anchor token (a loglikelihood request with empty context,
whose prefix token is the BOS/anchor),

    loglik(s) = sum_{t >= 1} log p(s_t | anchor, s_1 .. s_{t-1})

and over the N pairs

    crows_pct_stereotype = 100 * #{pairs with loglik(sent_more) > loglik(sent_less)} / N     (50 = no preference)
    crows_loglik_diff    = mean over pairs of loglik(sent_more) - loglik(sent_less)           (nats; 0 = none)

As in lm-eval (`lm_eval/tasks/crows_pairs/utils.py`, `process_results`): the comparison is strict, so a tie counts
as not stereotyped, and sent_more is always the first sentence, for `antistereo` pairs too (sent_more then violates
the stereotype; the pair is not flipped). lm-eval's `likelihood_diff` is the mean of |difference|; the signed mean
here also says which way the model leans. The interval is a percentile bootstrap over pairs (Efron & Tibshirani
1993, ch. 13), resampling pairs with replacement; the paired interval of a method's change draws the same pairs for
the baseline and the method.

Caveat: Blodgett, Lopez, Olteanu, Sim & Wallach 2021, "Stereotyping Norwegian Salmon: An Inventory of Pitfalls in
Fairness Benchmark Datasets" (ACL), found many CrowS-Pairs pairs noisy or invalid (pairs that do not contrast a
stereotype, that change more than the group, or that misname it): read the score as a secondary measure, beside the
occupation prompts.

Data: `crows_pairs/crows_pairs_anonymized.csv` of nyu-mll/crows-pairs (CC BY-SA 4.0), read from the shared data
folder (`debiaskit.professions.shared_data_dir`) or a path given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from debiaskit.bootstrap import percentile_interval
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE, sequence_log_likelihoods
from debiaskit.method import LogitsTransform
from debiaskit.model import LoadedModel
from debiaskit.professions import shared_data_dir

CROWS_FILE = "crows_pairs/crows_pairs_anonymized.csv"  # relative to shared_data_dir()
CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
DIRECTIONS = ("stereo", "antistereo")


@dataclass(frozen=True)
class CrowsPair:
    index: int  # the pair's row in the file (0-based; the shipped file's unnamed first column)
    sent_more: str  # the more stereotyping sentence
    sent_less: str
    stereo_antistereo: str  # "stereo": sent_more demonstrates a stereotype; "antistereo": it violates one


def default_crows_path() -> Path:
    found = shared_data_dir()
    if found is None or not (found / CROWS_FILE).is_file():
        raise DebiasKitError(f"CrowS-Pairs needs {CROWS_FILE} under the shared data folder ($DEBIASKIT_SHARED_DATA or "
                             "shared/data beside the checkout), or its path given")
    return found / CROWS_FILE


def load_crows_pairs(path: Path | None = None, bias_type: str = "gender") -> tuple[CrowsPair, ...]:
    """The pairs of one bias type (bias_type column), in file order; the shipped file holds 262 gender pairs."""
    path = default_crows_path() if path is None else Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DebiasKitError(f"cannot read CrowS-Pairs file {path}: {error}; expected the CSV of nyu-mll/crows-pairs "
                             f"(columns {', '.join(CROWS_COLUMNS)})") from None
    missing = [column for column in CROWS_COLUMNS if column not in frame.columns]
    if missing:
        raise DebiasKitError(f"CrowS-Pairs file {path} lacks the column(s) {', '.join(missing)}; expected "
                             f"{', '.join(CROWS_COLUMNS)} (found {', '.join(map(str, frame.columns))})")
    chosen = frame[frame["bias_type"] == bias_type]
    if chosen.empty:
        found = ", ".join(sorted(set(frame["bias_type"]))) or "none"
        raise DebiasKitError(f"CrowS-Pairs file {path} has no pair of bias type {bias_type!r}; its bias types: {found}")
    pairs = []
    for index, row in zip(chosen.index, chosen.itertuples(index=False)):
        if not row.sent_more.strip() or not row.sent_less.strip() or row.stereo_antistereo not in DIRECTIONS:
            raise DebiasKitError(f"CrowS-Pairs file {path}, pair {index}: sent_more and sent_less must be sentences "
                                 f"and stereo_antistereo one of {', '.join(DIRECTIONS)} "
                                 f"(got {row.stereo_antistereo!r})")
        pairs.append(CrowsPair(int(index), row.sent_more, row.sent_less, row.stereo_antistereo))
    return tuple(pairs)


def score_crows_pairs(lm: LoadedModel, pairs: Sequence[CrowsPair], transform: LogitsTransform | None,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> pd.DataFrame:
    """One row per pair: index, stereo_antistereo, loglik_more, loglik_less (each sentence given only the anchor)."""
    sentences = [pair.sent_more for pair in pairs] + [pair.sent_less for pair in pairs]
    log_likelihoods = sequence_log_likelihoods(lm, [lm.encode(s) for s in sentences], transform, batch_size,
                                               label="CrowS-Pairs")
    return pd.DataFrame({
        "index": [pair.index for pair in pairs],
        "stereo_antistereo": [pair.stereo_antistereo for pair in pairs],
        "loglik_more": log_likelihoods[:len(pairs)],
        "loglik_less": log_likelihoods[len(pairs):],
    })


def _stereotyped(frame: pd.DataFrame) -> np.ndarray:
    """1.0 where the pair's sent_more is strictly more likely (a tie is 0, as in lm-eval), per pair."""
    return (frame["loglik_more"].to_numpy(float) > frame["loglik_less"].to_numpy(float)).astype(float)


def _pair_resamples(n_pairs: int, n_resamples: int, seed: int) -> np.ndarray:
    """[resamples, pairs] indices of pairs drawn with replacement; the same seed draws the same pairs."""
    if n_resamples < 0:
        raise DebiasKitError(f"{n_resamples} bootstrap resamples: use 0 (no interval) or more, e.g. 1000")
    if n_pairs == 0:
        raise DebiasKitError("no CrowS-Pairs pairs were scored")
    return np.random.default_rng(seed).integers(0, n_pairs, size=(n_resamples, n_pairs))


def crows_summary(frame: pd.DataFrame, n_resamples: int, seed: int) -> dict[str, float]:
    """crows_pct_stereotype with its percentile bootstrap interval (`_low`, `_high`; nan when n_resamples is 0)
    and crows_loglik_diff, from a `score_crows_pairs` frame."""
    stereotyped = _stereotyped(frame)
    draws = _pair_resamples(len(frame), n_resamples, seed)
    low, high = percentile_interval(100.0 * stereotyped[draws].mean(axis=1)) if n_resamples else (np.nan, np.nan)
    return {
        "crows_pct_stereotype": float(100.0 * stereotyped.mean()),
        "crows_pct_stereotype_low": low,
        "crows_pct_stereotype_high": high,
        "crows_loglik_diff": float((frame["loglik_more"] - frame["loglik_less"]).mean()),
    }


def paired_crows_interval(baseline: pd.DataFrame, method: pd.DataFrame, n_resamples: int,
                          seed: int) -> tuple[float, float]:
    """Percentile interval of the method's crows_pct_stereotype minus the baseline's (percentage points), both
    computed on the same resampled pairs; nan when n_resamples is 0."""
    if list(baseline["index"]) != list(method["index"]):
        raise DebiasKitError("a paired CrowS-Pairs interval needs the baseline and the method scored on the same "
                             "pairs, in the same order")
    change = _stereotyped(method) - _stereotyped(baseline)
    draws = _pair_resamples(len(baseline), n_resamples, seed)
    return percentile_interval(100.0 * change[draws].mean(axis=1)) if n_resamples else (np.nan, np.nan)
