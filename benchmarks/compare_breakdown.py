"""Where the time of a full `debiaskit compare` goes: model load, each method's fit, each scoring pass, the
neutral-text kl pass, statistics and reporting, with the forward passes and tokens each used and peak memory.

It runs the real command in this process (same arguments as `debiaskit compare`) with timers wrapped around the
functions that do each part; nothing in debiaskit changes. Times are inclusive: a method's fit includes the forward
passes it made, and those are also listed in the `forward` columns of its line.

    python benchmarks/compare_breakdown.py [--json FILE] -- [compare arguments, e.g. -m none -m leace --out DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import debiaskit.cli
import debiaskit.commands.compare
import debiaskit.compare
from debiaskit.evaluator import NeutralText
from debiaskit.gendered_text import GenderedText
from debiaskit.model import LoadedModel
from debiaskit.plugin_host import load_plugins


class Profile:
    """Inclusive wall time per stage; forward passes, tokens and forward time credited to the innermost stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.forwards: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)
        self.forward_seconds: dict[str, float] = defaultdict(float)
        self.stack: list[str] = ["other"]

    def stage(self, name: str | Callable[..., str], function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = name(*args, **kwargs) if callable(name) else name
            self.stack.append(label)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1
                self.stack.pop()

        return timed

    def forward(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def counted(lm: LoadedModel, batch: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(lm, batch, **kwargs)
            finally:
                if lm.device.type == "cuda":
                    torch.cuda.synchronize()
                label = self.stack[-1]
                self.forward_seconds[label] += time.perf_counter() - started
                self.forwards[label] += 1
                self.tokens[label] += int(batch.attention_mask.sum())

        return counted


def score_label(lm: Any, prompts: Any, targets: Any, transform: Any = None, batch_size: Any = None,
                label: str = "scoring") -> str:
    """`score: METHOD` for occupation prompts, `score: METHOD (control)` for the definitional control prompts and
    `score: METHOD (professions)` for the profession prompts of the stereotype/factual regression."""
    method = label.split(" fold")[0].split(" seed")[0]
    for part in ("control", "professions"):
        if label.endswith(f" {part}"):
            return f"score: {method.removesuffix(' ' + part)} ({part})"
    return f"score: {method}"


def instrument(profile: Profile) -> None:
    LoadedModel.run = profile.forward(LoadedModel.run)
    debiaskit.commands.compare.load_model = profile.stage("model load", debiaskit.commands.compare.load_model)
    debiaskit.compare.score_prompts = profile.stage(score_label, debiaskit.compare.score_prompts)
    NeutralText.record_baseline = profile.stage("neutral-text kl: baseline", NeutralText.record_baseline)
    NeutralText.cost = profile.stage("neutral-text kl: methods", NeutralText.cost)
    GenderedText.record_baseline = profile.stage("gendered-text kl: baseline", GenderedText.record_baseline)
    GenderedText.cost = profile.stage("gendered-text kl: methods", GenderedText.cost)
    debiaskit.compare.paired_intervals = profile.stage("bootstrap intervals", debiaskit.compare.paired_intervals)
    debiaskit.commands.compare.write_run = profile.stage("reporting: run files", debiaskit.commands.compare.write_run)
    debiaskit.commands.compare.write_report = profile.stage("reporting: report",
                                                            debiaskit.commands.compare.write_report)
    for name, method_class in load_plugins().methods.things.items():
        if "fit" in vars(method_class):
            method_class.fit = profile.stage(f"fit: {name}", method_class.fit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the breakdown here as JSON")
    parser.add_argument("compare_args", nargs=argparse.REMAINDER, help="arguments for `debiaskit compare` (after --)")
    args = parser.parse_args()
    compare_args = [a for a in args.compare_args if a != "--"]

    profile = Profile()
    instrument(profile)
    started = time.perf_counter()
    exit_code = 0
    try:
        debiaskit.cli.cli.main(["compare", *compare_args], standalone_mode=False)
    except SystemExit as stop:
        exit_code = int(stop.code or 0)
    total = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    forward_total = sum(profile.forward_seconds.values())
    labels = sorted(profile.seconds, key=lambda label: -profile.seconds[label])
    lines = [f"{'part':<40}{'calls':>6}{'seconds':>10}{'forwards':>10}{'tokens':>10}{'fwd s':>9}"]
    for label in labels + (["other"] if profile.forwards.get("other") else []):
        lines.append(f"{label:<40}{profile.calls.get(label, 0):>6}{profile.seconds.get(label, 0.0):>10.2f}"
                     f"{profile.forwards.get(label, 0):>10}{profile.tokens.get(label, 0):>10}"
                     f"{profile.forward_seconds.get(label, 0.0):>9.2f}")
    load = profile.seconds.get("model load", 0.0)
    lines.append(f"total {total:.2f} s (model load {load:.2f} s); forward passes {sum(profile.forwards.values())}, "
                 f"{sum(profile.tokens.values())} tokens, {forward_total:.2f} s; "
                 f"run after load / forward time = {(total - load) / forward_total:.2f}; "
                 f"peak memory {peak_mib:.0f} MiB")
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "compare_breakdown", "arguments": compare_args, "exit_code": exit_code,
            "machine": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "total_seconds": round(total, 2), "forward_seconds": round(forward_total, 2),
            "peak_memory_mib": round(peak_mib),
            "overhead_ratio_after_load": round((total - load) / forward_total, 3) if forward_total else None,
            "parts": {label: {"calls": profile.calls.get(label, 0),
                              "seconds": round(profile.seconds.get(label, 0.0), 3),
                              "forwards": profile.forwards.get(label, 0), "tokens": profile.tokens.get(label, 0),
                              "forward_seconds": round(profile.forward_seconds.get(label, 0.0), 3)}
                      for label in labels},
        }, indent=1) + "\n", encoding="utf-8")
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
