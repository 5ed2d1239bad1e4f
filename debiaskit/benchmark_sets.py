"""The field's sentence-level benchmarks as columns of `compare`: CrowS-Pairs (gender) and WinoGender.

Each benchmark is scored with the method applied exactly as the occupation prompts are (its hooks, weight edits and
logits transform at every scored position, the anchor first), in the same folds: a method that learns from jobs
scores each WinoGender occupation in a fold that did not train on a job of the same head noun ("teacher" is held
out wherever "kindergarten teacher" is), and one with no such fold is left out and counted; CrowS-Pairs' pairs name
no job and are spread over the folds, each scored once. The formulas are in `crows_pairs` and `winogender`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from debiaskit.crows_pairs import CrowsPair, crows_summary, load_crows_pairs, paired_crows_interval, score_crows_pairs
from debiaskit.errors import DebiasKitError
from debiaskit.method import LogitsTransform
from debiaskit.metrics import gap_change_pct
from debiaskit.model import LoadedModel
from debiaskit.winogender import WinoGender, load_winogender, score_winogender, winogender_summary

BENCHMARKS = ("crows", "winogender")


def parse_benchmarks(value: str) -> tuple[str, ...]:
    """`--benchmarks`: `none`, `all`, or a comma-separated list of BENCHMARKS."""
    if value.strip() in ("", "none"):
        return ()
    if value.strip() == "all":
        return BENCHMARKS
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise DebiasKitError(f"unknown benchmark {unknown[0]!r}; accepted: {', '.join(BENCHMARKS)}, all or none "
                             "(comma-separated, e.g. --benchmarks crows,winogender)")
    return names


@dataclass(frozen=True)
class BenchmarkSets:
    """The benchmarks a run scores, loaded once (from the shared data folder)."""

    crows: tuple[CrowsPair, ...] | None = None
    winogender: WinoGender | None = None

    @classmethod
    def load(cls, names: Sequence[str]) -> BenchmarkSets:
        return cls(load_crows_pairs() if "crows" in names else None,
                   load_winogender() if "winogender" in names else None)

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in BENCHMARKS if getattr(self, name) is not None)

    def occupations(self) -> list[str]:
        """WinoGender's occupations, in file order (none without WinoGender)."""
        if self.winogender is None:
            return []
        return list(dict.fromkeys(sentence.occupation for sentence in self.winogender.sentences))

    def fingerprint(self) -> str:
        """sha256 of what is scored, for `compare --resume` (empty without benchmarks)."""
        if not self.names():
            return ""
        content: dict[str, Any] = {}
        if self.crows is not None:
            content["crows"] = [[p.index, p.sent_more, p.sent_less, p.stereo_antistereo] for p in self.crows]
        if self.winogender is not None:
            content["winogender"] = [[s.occupation, s.participant, s.answer, s.gender, s.sentence]
                                     for s in self.winogender.sentences]
            content["bls_pct_female"] = dict(self.winogender.bls_pct_female)
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()

    def score(self, lm: LoadedModel, transform: LogitsTransform | None, batch_size: int, part: int, n_parts: int,
              occupations: Collection[str]) -> dict[str, pd.DataFrame]:
        """This fold's share of each benchmark, scored with whatever is applied now: the CrowS pairs with
        position % n_parts == part, and the WinoGender `occupations`."""
        scored: dict[str, pd.DataFrame] = {}
        if self.crows is not None:
            pairs = self.crows[part::n_parts]
            scored["crows"] = (score_crows_pairs(lm, pairs, transform, batch_size) if pairs
                               else pd.DataFrame(columns=["index", "stereo_antistereo", "loglik_more", "loglik_less"]))
        if self.winogender is not None:
            scored["winogender"] = (score_winogender(lm, self.winogender, transform, batch_size, occupations)
                                    if occupations else pd.DataFrame(columns=["occupation", "female_share"]))
        return scored

    def columns(self, baseline: dict[str, pd.DataFrame], scored: dict[str, pd.DataFrame], left_out: int,
                resamples: int, seed: int) -> dict[str, Any]:
        """The benchmark columns of a method's row, from its scored frames (all folds) and the baseline's."""
        row: dict[str, Any] = {}
        if self.crows is not None:
            method, base = _by_pair(scored["crows"]), _by_pair(baseline["crows"])
            row.update(crows_summary(method, resamples, seed))
            row["crows_change"] = row["crows_pct_stereotype"] - crows_summary(base, 0, seed)["crows_pct_stereotype"]
            if resamples:
                row["crows_change_low"], row["crows_change_high"] = paired_crows_interval(base, method, resamples,
                                                                                          seed)
        if self.winogender is not None:
            frame = scored["winogender"]
            if frame.empty:
                raise DebiasKitError("no WinoGender occupation could be scored held out (each shares a head noun "
                                     "with a training job of every fold); run with --benchmarks crows")
            row.update(winogender_summary(frame, self.winogender.bls_pct_female))
            same = baseline["winogender"][baseline["winogender"]["occupation"].isin(set(frame["occupation"]))]
            baseline_gap = winogender_summary(same, self.winogender.bls_pct_female)["winogender_gap"]
            row["winogender_gap_change_pct"] = gap_change_pct(row["winogender_gap"], baseline_gap)
            row["winogender_left_out"] = left_out
        return row


def _by_pair(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("index", kind="stable").reset_index(drop=True)
