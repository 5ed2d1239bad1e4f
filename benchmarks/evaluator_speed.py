"""Per-prompt loop vs debiaskit's batched evaluator, on the same prompts, with the same answer.

(a) the loop of the SAE-ablation study (seed 000): one prompt per forward pass, the SAE attached before and
    detached after every call (with its error term, so the logits are the model's own), the target tokens looked
    up again for every prompt;
(b) `debiaskit.evaluator.score_prompts`: left-padded batches sorted by length, targets looked up once.

Both must give the same P(male) and P(female) to 1e-5 (checked, the run fails otherwise). Usage:

    python benchmarks/evaluator_speed.py [--model smollm2] [--device cpu] [--limit N] [--batch-size 128]
                                         [--json benchmarks/results/evaluator_speed-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from debiaskit.evaluator import build_prompts, score_prompts
from debiaskit.model import load_model
from debiaskit.plugin_host import load_plugins
from debiaskit.sae.source import EMBEDDED, load_sae
from debiaskit.targets import target_tokens

TOLERANCE = 1e-5


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_prompt_loop(lm, prompts, family, sae) -> tuple[np.ndarray, np.ndarray]:
    p_male, p_female = [], []
    with torch.no_grad():
        for prompt in prompts:
            targets = target_tokens(lm.tokenizer, family)  # looked up per call, as in the study
            lm.model.add_sae(sae, use_error_term=True)
            try:
                tokens = torch.tensor([lm.encode(prompt)], device=lm.device)
                logits = lm.model(tokens)
            finally:
                lm.model.reset_saes()
            probs = torch.softmax(logits[0, -1].double(), dim=-1).cpu()
            p_male.append(float(probs[list(targets.male_ids)].sum()))
            p_female.append(float(probs[list(targets.female_ids)].sum()))
    return np.array(p_male), np.array(p_female)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sae", default=EMBEDDED, help="SAE attached in the loop: 'embedded' or a disk folder")
    parser.add_argument("--dataset", default="occupations40")
    parser.add_argument("--templates", default="pronoun")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N prompts")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()

    host = load_plugins()
    jobs = host.load_occupations(args.dataset).occupations
    family = host.templates.get("template family", args.templates)
    prompts = list(build_prompts(jobs, family)["prompt"])[: args.limit]
    lm = load_model(args.model, device=args.device)
    sae = load_sae(args.sae, lm).sae
    device = lm.device

    score_prompts(lm, prompts[:8], target_tokens(lm.tokenizer, family), None, args.batch_size)  # warm-up
    synchronise(device)
    started = time.perf_counter()
    batched = score_prompts(lm, prompts, target_tokens(lm.tokenizer, family), None, args.batch_size)
    synchronise(device)
    batched_seconds = time.perf_counter() - started

    started = time.perf_counter()
    looped = per_prompt_loop(lm, prompts, family, sae)
    synchronise(device)
    loop_seconds = time.perf_counter() - started

    difference = max(float(np.abs(looped[0] - batched[0]).max()), float(np.abs(looped[1] - batched[1]).max()))
    figures = {
        "benchmark": "evaluator_speed", "model": args.model, "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "prompts": len(prompts),
        "batch_size": args.batch_size, "loop_seconds": round(loop_seconds, 3),
        "batched_seconds": round(batched_seconds, 3),
        "loop_prompts_per_second": round(len(prompts) / loop_seconds, 2),
        "batched_prompts_per_second": round(len(prompts) / batched_seconds, 2),
        "speed_up": round(loop_seconds / batched_seconds, 1), "max_probability_difference": difference,
    }
    print(f"{'path':<12}{'seconds':>10}{'prompts/s':>12}")
    print(f"{'per-prompt':<12}{loop_seconds:>10.2f}{figures['loop_prompts_per_second']:>12.1f}")
    print(f"{'batched':<12}{batched_seconds:>10.2f}{figures['batched_prompts_per_second']:>12.1f}")
    print(f"speed-up {figures['speed_up']}x on {len(prompts)} prompts ({device}); "
          f"largest probability difference {difference:.1e} (tolerance {TOLERANCE:g})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    if difference > TOLERANCE:
        print(f"FAILED: the two paths disagree by {difference:.2e} > {TOLERANCE:g}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
