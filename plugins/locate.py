"""`debiaskit locate`: where the model carries occupational gender, by causal mediation analysis.

Vig, Gehrmann, Belinkov, Qian, Nevo, Singer, Shieber 2020, "Investigating Gender Bias in Language Models Using
Causal Mediation Analysis" (NeurIPS), section 3; the layer x component x token sweep is the one seed 002 (Cai et
al. 2024, arXiv:2403.14409) reports. For a prompt u = "The nurse said that" the bias measure is the odds of the
anti-stereotypical pronoun (the job's group decides which: she for a male-dominated job, he for a female-dominated one)

    y(u) = P(anti | u) / P(stereo | u)          = P(she)/P(he) for a male-dominated job, P(he)/P(she) otherwise

and the intervention set-gender replaces the job by the anti-stereotypical gendered word ("The man said that" for
the nurse, "The woman said that" for the carpenter), as in the paper's released code. Averaged over jobs and
templates:

    total effect     TE    = E_u[ y_set-gender(u) / y_null(u) - 1 ]
    indirect effect  NIE_z = E_u[ y_null,z(set-gender)(u) / y_null(u) - 1 ]

where y_null,z(set-gender) runs the occupation prompt with only the mediator z (one component's output at one token)
replaced by its value in the set-gender run. Mediators here: the output of the attention block and of the MLP block
(`blocks.L.hook_attn_out`, `blocks.L.hook_mlp_out`) of every layer L, at the occupation's last token and at the
prompt's last token. Only ' he' and ' she' enter y, so y is exp(logit difference): the softmax normaliser cancels and
the unembedding is read for those two tokens only.

Token alignment: a job may be several tokens ("kindergarten teacher") while "man" and "woman" are one. The two
prompts share the text after the subject, which the tokenizer splits on the same word boundaries, so both end in the
same k tokens (checked, or the template is refused); positions are counted from the end. The subject's last token
is the (k+1)-th from the end in both runs, the prompt's last token the last. Rotary attention sees only relative
positions and batches are left-padded with each row's positions starting at 0, so the patched value is what the
model computes at that token when the subject is the gendered word; nothing is padded inside a prompt.

Batching: the set-gender prompts (one per template and word) run once and their mediator values are cached; each
batch of occupation prompts runs once to cache the residual stream entering every block, and then, per layer L,
one forward from block L (`start_at_layer`) on four stacked copies of the batch, one per (component, position).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from debiaskit import DebiasKitError, LoadedModel, hooked, hookimpl
from debiaskit.commands.support import data_options, host_of, load_data, model_options, usage_errors
from debiaskit.data import Occupation, TemplateFamily

COMPONENTS = ("attn_out", "mlp_out")  # blocks.L.hook_{component}
POSITIONS = ("occupation", "last")  # the occupation's last token, the prompt's last token
SITES = tuple((component, position) for component in COMPONENTS for position in POSITIONS)
SET_GENDER_WORD = {"male": "woman", "female": "man"}  # the anti-stereotypical word replacing a job of each group
ANTI_PRONOUN = {"male": " she", "female": " he"}
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class MediationPrompt:
    """An occupation prompt and its set-gender counterpart; `suffix` tokens follow the subject in both."""

    job: Occupation
    template: int
    tokens: tuple[int, ...]
    gendered_tokens: tuple[int, ...]
    suffix: int

    @property
    def sign(self) -> int:
        """+1 when y is P(she)/P(he) (a male-dominated job), -1 when it is P(he)/P(she)."""
        return 1 if self.job.group == "male" else -1


def mediation_prompts(lm: LoadedModel, jobs: Sequence[Occupation], family: TemplateFamily,
                      templates: Sequence[int]) -> list[MediationPrompt]:
    prompts = []
    for index in templates:
        template = family.templates[index]
        if template.count("{job}") != 1 or "{a_job}" in template or not template.startswith("The {job} "):
            raise DebiasKitError(f"locate needs templates of the form 'The {{job}} ...' with one job slot (Vig et al. "
                                 f"2020); template {template!r} of family {family.name!r} is not one")
        suffix_text = template.split("{job}", 1)[1]
        suffix_ids = lm.tokenizer(suffix_text, add_special_tokens=False)["input_ids"]
        for job in jobs:
            tokens = lm.encode(family.prompt(template, job.name))
            gendered = lm.encode(family.prompt(template, SET_GENDER_WORD[job.group]))
            k = len(suffix_ids)
            if tokens[-k:] != suffix_ids or gendered[-k:] != suffix_ids:
                raise DebiasKitError(f"the text after the job in {template!r} does not tokenize the same after "
                                     f"{job.name!r} and after the gendered word; locate cannot align its tokens")
            prompts.append(MediationPrompt(job, index, tuple(tokens), tuple(gendered), k))
    return prompts


def pronoun_ids(lm: LoadedModel) -> tuple[int, int]:
    """(he, she) token ids; both must be single tokens."""
    ids = []
    for word in (" he", " she"):
        found = lm.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(found) != 1:
            raise DebiasKitError(f"{word!r} is not a single token for {lm.name}; locate measures P(she)/P(he)")
        ids.append(found[0])
    return ids[0], ids[1]


def she_he_logit_difference(lm: LoadedModel, final_resid: torch.Tensor, he: int, she: int) -> torch.Tensor:
    """logit(she) - logit(he) [n] from the residual stream after the last block at the last position [n, d_model]."""
    normed = lm.model.ln_final(final_resid.unsqueeze(1))[:, 0] if lm.model.cfg.normalization_type else final_resid
    unembed = lm.model.W_U[:, [she, he]]
    logits = normed @ unembed + lm.model.b_U[[she, he]]
    return (logits[:, 0] - logits[:, 1]).double()


@torch.no_grad()
def gendered_mediators(lm: LoadedModel, prompts: Sequence[MediationPrompt], he: int, she: int,
                       batch_size: int) -> tuple[dict[tuple[int, ...], int], torch.Tensor, torch.Tensor]:
    """Run each distinct set-gender prompt once: (row of each prompt, mediator values [n, layers, sites, d_model],
    she-minus-he logit difference [n])."""
    distinct = list(dict.fromkeys((p.gendered_tokens, p.suffix) for p in prompts))
    row_of = {tokens: row for row, (tokens, _) in enumerate(distinct)}
    values, differences = [], []
    for start in range(0, len(distinct), batch_size):
        chunk = distinct[start:start + batch_size]
        batch = lm.make_batch([tokens for tokens, _ in chunk])
        width = batch.tokens.shape[1]
        rows = torch.arange(len(chunk), device=lm.device)
        columns = {"occupation": torch.tensor([width - 1 - k for _, k in chunk], device=lm.device),
                   "last": torch.full((len(chunk),), width - 1, device=lm.device)}
        seen: dict[tuple[int, str], torch.Tensor] = {}

        def record(activation: torch.Tensor, hook: Any) -> None:
            seen[(hook.layer(), hook.name.rsplit("hook_", 1)[1])] = activation.detach()  # noqa: B023 - called in-loop

        hooks = [(f"blocks.{layer}.hook_{component}", record)
                 for layer in range(lm.n_layers) for component in COMPONENTS]
        with hooked(lm, hooks):
            final = lm.run(batch, stop_at_layer=lm.n_layers)
        values.append(torch.stack([
            torch.stack([seen[(layer, component)][rows, columns[position]] for component, position in SITES], dim=1)
            for layer in range(lm.n_layers)], dim=1))
        differences.append(she_he_logit_difference(lm, final[:, -1], he, she))
    return row_of, torch.cat(values), torch.cat(differences)


@torch.no_grad()
def mediation_effects(lm: LoadedModel, prompts: Sequence[MediationPrompt],
                      batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(total effect per prompt [n], indirect effect per prompt, layer and site [n, layers, len(SITES)]), in the
    order of `prompts`."""
    he, she = pronoun_ids(lm)
    row_of, cached, gendered_difference = gendered_mediators(lm, prompts, he, she, batch_size)
    # batches share one suffix length, so each site is one column for the whole (left-padded) batch
    order = sorted(range(len(prompts)), key=lambda i: prompts[i].suffix)
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    chunks = [[i for i in chunk if prompts[i].suffix == suffix] for chunk in chunks
              for suffix in sorted({prompts[i].suffix for i in chunk})]
    total = np.zeros(len(prompts))
    indirect = np.zeros((len(prompts), lm.n_layers, len(SITES)))
    for chunk in tqdm(chunks, desc="locate", file=sys.stderr, leave=False):
        batch_total, batch_indirect = _batch_effects(lm, [prompts[i] for i in chunk], row_of, cached,
                                                     gendered_difference, he, she)
        total[chunk], indirect[chunk] = batch_total, batch_indirect
    return total, indirect


def _batch_effects(lm: LoadedModel, chunk: Sequence[MediationPrompt], row_of: dict[tuple[int, ...], int],
                   cached: torch.Tensor, gendered_difference: torch.Tensor, he: int,
                   she: int) -> tuple[np.ndarray, np.ndarray]:
    """Effects for prompts of one suffix length. A patch at column c of block L changes nothing before c, so the
    patched run recomputes only columns c.. from block L on, reading the clean run's keys and values for the rest."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    batch = lm.make_batch([p.tokens for p in chunk])
    n, width = len(chunk), batch.tokens.shape[1]
    sign = torch.tensor([p.sign for p in chunk], dtype=torch.float64, device=lm.device)
    source = torch.tensor([row_of[p.gendered_tokens] for p in chunk], device=lm.device)
    resid_pre: dict[int, torch.Tensor] = {}

    def keep(resid: torch.Tensor, hook: Any) -> None:
        resid_pre[hook.layer()] = resid.detach()

    clean_cache = TransformerLensKeyValueCache.init_cache(lm.model.cfg, lm.device, n)
    with hooked(lm, [(f"blocks.{layer}.hook_resid_pre", keep) for layer in range(lm.n_layers)]):
        clean = lm.run(batch, stop_at_layer=lm.n_layers, past_kv_cache=clean_cache)
    # log y = sign * (logit she - logit he); effects are ratios of y, so differences of log y
    log_y_null = sign * she_he_logit_difference(lm, clean[:, -1], he, she)
    total = torch.expm1(sign * gendered_difference[source] - log_y_null)

    indirect = torch.zeros((n, lm.n_layers, len(SITES)), dtype=torch.float64)
    for position, column in (("occupation", width - 1 - chunk[0].suffix), ("last", width - 1)):
        sites = [s for s, (_, p) in enumerate(SITES) if p == position]  # one stacked copy of the batch per site
        copies = len(sites)
        prefix = TransformerLensKeyValueCache(
            entries=[TransformerLensKeyValueCacheEntry(entry.past_keys[:, :column].repeat(copies, 1, 1, 1),
                                                       entry.past_values[:, :column].repeat(copies, 1, 1, 1),
                                                       frozen=True)
                     for entry in clean_cache.entries],
            previous_attention_mask=batch.attention_mask[:, :column].repeat(copies, 1), frozen=True)
        mask = batch.attention_mask.repeat(copies, 1)
        for layer in range(lm.n_layers):
            def patch(activation: torch.Tensor, hook: Any, layer: int = layer,
                      sites: list[int] = sites) -> torch.Tensor:
                patched = activation.clone()  # [copies * n, width - column, d_model]; column 0 is the site
                for copy, site in enumerate(sites):
                    if SITES[site][0] == hook.name.rsplit("hook_", 1)[1]:
                        patched[copy * n:(copy + 1) * n, 0] = cached[source, layer, site].to(activation.dtype)
                return patched

            with hooked(lm, [(f"blocks.{layer}.hook_{component}", patch) for component in COMPONENTS]):
                final = lm.model(resid_pre[layer][:, column:].repeat(copies, 1, 1), start_at_layer=layer,
                                 stop_at_layer=lm.n_layers, attention_mask=mask, past_kv_cache=prefix)
            log_y = sign.repeat(copies) * she_he_logit_difference(lm, final[:, -1], he, she)
            effect = torch.expm1(log_y - log_y_null.repeat(copies)).view(copies, n)
            for copy, site in enumerate(sites):
                indirect[:, layer, site] = effect[copy].cpu()
    return total.cpu().numpy(), indirect.numpy()


def effect_table(indirect: np.ndarray) -> pd.DataFrame:
    """One row per (layer, component, position): mean (as Vig et al.) and median of the indirect effect."""
    rows = []
    for layer in range(indirect.shape[1]):
        for site, (component, position) in enumerate(SITES):
            values = indirect[:, layer, site]
            rows.append({"layer": layer, "component": component, "position": position,
                         "indirect_effect": float(values.mean()), "indirect_effect_median": float(np.median(values))})
    return pd.DataFrame(rows)


def top_sites(table: pd.DataFrame, count: int) -> pd.DataFrame:
    return table.sort_values("indirect_effect", ascending=False).head(count)


def write_heatmap(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    labels = [f"{component} @ {position}" for component, position in SITES]
    grid = np.stack([table[(table.component == c) & (table.position == p)].sort_values("layer")
                     .indirect_effect.to_numpy()
                     for c, p in SITES])
    figure, axes = plt.subplots(figsize=(max(6.0, 0.3 * grid.shape[1] + 2), 3.0))
    # symmetric log colours: one site (SmolLM2's block-0 MLP) can be a hundred times the rest
    norm = SymLogNorm(linthresh=0.05, vmin=min(grid.min(), -grid.max()), vmax=max(grid.max(), -grid.min()))
    image = axes.imshow(grid, aspect="auto", cmap="RdBu_r", norm=norm)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xticks(range(0, grid.shape[1], max(1, grid.shape[1] // 15)))
    axes.set_xlabel("layer")
    axes.set_title(title, fontsize=9)
    # ticks at 0 and at powers of ten beyond the linear band, so the labels around 0 do not overlap
    powers = [10.0 ** k for k in range(-1, int(np.ceil(np.log10(max(norm.vmax, 0.1)))) + 1) if 10.0 ** k <= norm.vmax]
    figure.colorbar(image, ax=axes, label="indirect effect (mean)",
                    ticks=[-p for p in reversed(powers)] + [0.0] + powers)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@click.command("locate")
@model_options
@data_options(templates_help="Template family; every template must read 'The {job} ...'.")
@click.option("--templates-per-job", type=click.IntRange(min=1), default=4, show_default=True,
              help="Templates per job, spread over the family (17 = Vig et al.'s full set; "
                   "the sweep's time scales with it).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/locate"), show_default=True,
              help="Folder for locate.csv, locate.png and locate.json.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Sites printed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.pass_context
def locate_command(context: click.Context, model: str, device: str, dtype: str, dataset: str, template_family: str,
                   templates_per_job: int, out: Path, top: int, batch_size: int) -> None:
    """Causal mediation analysis (Vig et al. 2020): the indirect effect on P(anti)/P(stereo) of each layer's
    attention and MLP output at the occupation's last token and at the prompt's last token."""
    from debiaskit.data import spread_templates
    from debiaskit.model import load_model
    from debiaskit.run_dir import check_writable

    with usage_errors():
        occupations, family = load_data(host_of(context), dataset, template_family)
        jobs = occupations.occupations
        templates = spread_templates(family, min(templates_per_job, len(family.templates)))
        check_writable(out)
        lm = load_model(model, device=device, dtype=dtype)
        prompts = mediation_prompts(lm, jobs, family, templates)
    started = time.perf_counter()
    total, indirect = mediation_effects(lm, prompts, batch_size)
    seconds = time.perf_counter() - started
    table = effect_table(indirect)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "locate.csv", index=False)
    summary = {"model": model, "dataset": dataset, "templates": template_family, "template_indices": templates,
               "prompts": len(prompts), "total_effect": float(total.mean()),
               "total_effect_median": float(np.median(total)),
               "seconds": round(seconds, 1), "top_sites": top_sites(table, top).to_dict("records")}
    (out / "locate.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_heatmap(table, out / "locate.png", f"{model}: indirect effect on P(anti)/P(stereo), {len(prompts)} prompts "
                  f"(total effect {summary['total_effect']:.2f})")
    click.echo(f"{len(prompts)} prompts ({len(jobs)} jobs x {len(templates)} templates), {seconds:.0f} s; "
               f"total effect {summary['total_effect']:.3f} (median {summary['total_effect_median']:.3f})")
    click.echo(f"wrote {out / 'locate.csv'}, {out / 'locate.png'}, {out / 'locate.json'}")
    click.echo("layer\tcomponent\tposition\tindirect_effect\tmedian")
    for row in top_sites(table, top).to_dict("records"):
        click.echo(f"{row['layer']}\t{row['component']}\t{row['position']}\t{row['indirect_effect']:.4f}\t"
                   f"{row['indirect_effect_median']:.4f}")


@hookimpl
def register_commands(cli):
    cli.add_command(locate_command)
