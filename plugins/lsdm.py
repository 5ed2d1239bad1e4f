"""LSDM: a closed-form least-squares edit of MLP output weights that removes gender from what the MLP writes at the
occupation's last token (seed 002: Cai et al. 2024, "Locating and Mitigating Gender Bias in Large Language Models",
arXiv:2403.14409, which gives the method in summary; the edit is the regularised least squares of ROME/MEMIT, Meng
et al. 2022/2023). The exact problem solved here, per edited layer L (TransformerLens row vectors: the MLP writes
k W + b, k = `blocks.L.mlp.hook_post` in R^d_mlp, W = W_out in R^{d_mlp x d_model}):

    K  [n, d_mlp]   keys at the last token of each training job in each template (the sites `locate` ranks)
    K0 [m, d_mlp]   keys at every token of a gender-free text (datasets/preserve_text.txt), whose outputs must stay
    u  [d_model]    unit gender direction of this MLP's output: mean output at female definitional words minus at
                    male ones (gendered_words.json fit pairs in their fit contexts, the word's last token)
    c               the neutral point along u: the mean of the female-dominated and the male-dominated training
                    jobs' mean projections (the jobs' balanced midpoint)
    R  [n, d_model] the wanted change of each key's output: R_i = -s ((k_i W + b) . u - c) u, i.e. its gender
                    component moved a share s (`strength`) of the way to the neutral point, nothing else touched

    minimise over D [d_mlp, d_model]:   J(D) = (1/n) ||K D - R||^2 + (lambda/m) ||K0 D||^2 + mu ||D||^2
    subject to                          a D = 0,  a = the anchor token's key

J is a convex quadratic; with A = K^T K / n + lambda K0^T K0 / m + mu I (positive definite for mu > 0) the
unconstrained minimiser solves A D = K^T R / n, so D* = A^-1 K^T R / n. The anchor's key is one vector (the first
position sees only itself, and earlier edits keep it), and the constraint keeps every sequence's attention-sink
position exactly as it was (debiaskit never edits the anchor); by Lagrange multipliers the constrained minimiser is

    D = D* - A^-1 a^T (a A^-1 a^T)^-1 a D*.

lambda is the option `preserve`; mu = RIDGE * trace(A0) / d_mlp with A0 = A without mu, a scale-free ridge that only
keeps the system well conditioned. Solved in float64. Layers are edited bottom-up, each fitted on keys read with the
edits below it applied. `apply` adds D to W_out for the duration of the context and copies the saved weights back
afterwards, also on error, so the model is bit-for-bit what it was.

Two choices differ from a first version that a review of the methods found wrong. The neutral point was the midpoint
of the definitional words' projections: the words sit far apart along u and the jobs do not sit between them, so
moving every job toward that point moved every job (and every male noun) female and raised abs_bias; the jobs'
own balanced midpoint moves female-dominated and male-dominated jobs toward each other and cannot shift the whole
distribution one way. And the edit preserved outputs on datasets/neutral_text.txt, the text `kl` is measured on,
so its kl was in-sample; it now preserves on datasets/preserve_text.txt (the option `preserve_text` names another).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from debiaskit import (
    DebiasKitError,
    FitContext,
    Intervention,
    LoadedModel,
    Method,
    Option,
    Touches,
    check_layers,
    hookimpl,
)
from debiaskit.concepts import (
    balanced_midpoint,
    gender_direction,
    job_examples,
    preserve_text_examples,
    require_both_groups,
    word_pair_examples,
)
from debiaskit.mlp_edits import (
    anchor_key,
    edited_weights,
    edits_touch,
    keep_anchor,
    read_mlp,
    relative_norm,
)
from debiaskit.reuse import BottomUpReads
from debiaskit.word_lists import gendered_words

RIDGE = 1e-6
# The three MLP sites `debiaskit locate --templates-per-job 4` ranks highest on SmolLM2 (40 jobs x 4 templates; mean
# indirect effect at the occupation's last token: block 0 162.8, block 21 7.7, block 24 5.1; total effect 86.8).
# Held-out (5-fold over jobs), editing block 0 alone left the gap unchanged (+4%, within noise; -9% in-sample): patching
# block 0's whole output carries the token's identity, its gender component alone does little. Blocks 0, 21 and 24
# together cut the gap by 52% held-out, also when preserving on other text (kl 0.002 on the unseen neutral text).
# That choice was scored on occupations40; re-chosen on the dev jobs (`debiaskit sweep -m lsdm --knob
# 'layers=0,21,24;21,24;12,21,24' --dataset dev --folds 2`, sweeps/README.md; 2 folds to keep it to 14 minutes) it
# stands: gap -27%, -22%, -22%, definitional_retained 0.81, 0.85, 0.84, kl under 0.0001 (in-sample: the neutral
# text was preserved then) for the three. None keeps 0.9; at the highest floor all meet, 0.8, blocks 0, 21 and 24
# cut the gap most. Those figures (and the -52%) came with the words' midpoint as the neutral point and the neutral
# text preserved. With the jobs' own midpoint and datasets/preserve_text.txt, the same layers cut the occupations40
# gap by 17% held-out, keep 95% of definitional gender, and lower abs_bias (0.182 against none's 0.216; it was
# 0.247); the layers were not chosen again after that change.
DEFAULT_LAYERS = (0, 21, 24)


def solve_edit(keys: torch.Tensor, wanted: torch.Tensor, neutral_keys: torch.Tensor, preserve: float,
               anchor_key: torch.Tensor | None = None, ridge: float = RIDGE) -> torch.Tensor:
    """D [d_mlp, d_model] minimising (1/n)||K D - R||^2 + (preserve/m)||K0 D||^2 + mu||D||^2 subject to a D = 0
    (when `anchor_key` a is given); keys K [n, d_mlp], wanted R [n, d_model], neutral_keys K0 [m, d_mlp]."""
    keys, wanted, neutral_keys = keys.double(), wanted.double(), neutral_keys.double()
    system = keys.T @ keys / len(keys) + preserve * neutral_keys.T @ neutral_keys / max(len(neutral_keys), 1)
    system += ridge * torch.trace(system) / len(system) * torch.eye(len(system), dtype=torch.float64,
                                                                    device=system.device)
    edit = torch.linalg.solve(system, keys.T @ wanted / len(keys))
    return edit if anchor_key is None else keep_anchor(edit, system, anchor_key)


class LeastSquaresDebias(Method):
    name = "lsdm"
    description = "LSDM (seed 002): least-squares edit of MLP output weights removing gender at the occupation token"
    options = (
        Option("layers", tuple, DEFAULT_LAYERS, "MLPs to edit (blocks.L.mlp.W_out), bottom-up"),
        Option("strength", float, 1.0, "share of the gender component moved to the neutral point (0 = no edit)",
               minimum=0),
        Option("preserve", float, 1.0, "lambda: weight of keeping the outputs on neutral-text keys", minimum=0),
        Option("preserve_text", str, "", "text file whose keys are preserved (default: datasets/preserve_text.txt)"),
    )
    strength_knob = "strength"

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self.layers = tuple(sorted(set(self.settings["layers"])))
        self.edits: dict[int, torch.Tensor] = {}
        self.axes: dict[int, tuple[torch.Tensor, float]] = {}  # per layer: (u, c) of the module docstring
        self.fit_report: dict[str, float] = {}

    def uses_jobs(self) -> bool:
        return True

    def fitted_words(self) -> frozenset[str]:
        return frozenset(gendered_words().words())  # the gender direction comes from the fit pairs

    def check(self, lm: LoadedModel) -> None:
        check_layers(lm, self.layers, "lsdm.layers")

    def fit(self, context: FitContext) -> None:
        lm = context.model
        self.check(lm)
        require_both_groups(context.train_jobs, self.name)
        jobs = [example.last_position_only()
                for example in job_examples(lm, context.train_jobs, context.templates, "word")]
        female_jobs = torch.tensor([example.label == 1 for example in jobs], dtype=torch.bool)
        vocabulary = gendered_words()
        words = [example.last_position_only()
                 for example in word_pair_examples(lm, vocabulary.fit_pairs, vocabulary.fit_contexts, "word")]
        neutral = preserve_text_examples(lm, self.settings["preserve_text"], "lsdm.preserve_text")
        self.edits, self.axes, self.fit_report = {}, {}, {}
        reads = BottomUpReads(lm, self.layers)
        for layer in self.layers:  # bottom-up, each on keys read with the edits below applied
            with edited_weights(lm, self.edits), reads.at(layer):
                keys, outputs = read_mlp(lm, jobs, layer)
                _, word_outputs = read_mlp(lm, words, layer)
                neutral_keys, _ = read_mlp(lm, neutral, layer)
                anchor = anchor_key(lm, layer)
            labels = torch.tensor([example.label for example in words], dtype=torch.bool)
            direction = gender_direction(word_outputs, labels)
            along = outputs @ direction
            neutral_point = balanced_midpoint(along, female_jobs)
            wanted = -self.settings["strength"] * (along - neutral_point).unsqueeze(1) * direction
            edit = solve_edit(keys, wanted, neutral_keys, self.settings["preserve"], anchor)
            self.edits[layer] = edit.float()
            self.axes[layer] = (direction, float(neutral_point))
            weight = lm.model.blocks[layer].mlp.W_out.detach().to("cpu", torch.float64)
            # relative size of what the edit misses on the job keys, and of what it changes on the neutral keys
            self.fit_report[f"fit_residual_L{layer}"] = relative_norm(keys @ edit - wanted, wanted)
            self.fit_report[f"neutral_change_L{layer}"] = relative_norm(neutral_keys @ edit, neutral_keys @ weight)
        print(f"debiaskit: lsdm edited layers {self.layers}: "
              + ", ".join(f"{key}={value:.3f}" for key, value in self.fit_report.items()), file=sys.stderr)

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        if not self.edits:
            raise DebiasKitError("lsdm was applied before it was fitted; call fit() first")
        with edited_weights(lm, self.edits):
            yield Intervention()

    def touches(self, lm: LoadedModel) -> Touches:
        return edits_touch(self.edits)

    def details(self) -> dict[str, Any]:
        return {"layers": ",".join(str(layer) for layer in self.layers), **self.fit_report}


@hookimpl
def register_methods(register):
    register(LeastSquaresDebias)
