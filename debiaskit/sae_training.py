"""Train a sparse autoencoder on a folder of plain text with SAELens's own runner, and measure it on held-out text.

The default architecture is TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv:2406.04093):
z = TopK(W_enc (x - b_dec) + b_enc) keeps the k largest pre-activations, x_hat = W_dec z + b_dec. SAELens's
`LanguageModelSAETrainingRunner` does the training; debiaskit hands it the model already in memory and a
pretokenised `datasets.Dataset` in which every sequence starts with the model's anchor token. That position is the
attention sink (see debiaskit/model.py): it is kept out of training (`seqpos_slice=(1, None)`) exactly as every
intervention keeps it out of editing, so the SAE never spends capacity on an activation nobody edits.

The decoder bias, which is subtracted from the input before encoding, starts at the geometric median of a sample of
training activations, as in Gao et al. (appendix A.1, after Bricken et al. 2023); SAELens starts it at zero. On SmolLM2
it decides the SAE's quality: at blocks.8.hook_resid_post the activations share an offset of norm ~97 (two dimensions
carry 71 and 61 of it), against ~91 for the rest of a token's activation. Started at zero, the bias had reached norm
0.5 after 800k tokens (391 steps), and 54% of the latents never fired on held-out text (explained variance 0.863);
started at the median, the same run leaves 4.3% dead (explained variance 0.886, see the embedded SAE's card).

The card (`card.json`) says what was trained on (file hashes, tokens seen) and how good the SAE is on the last
HELDOUT_SHARE of every corpus file, which training never sees: explained variance, mean L0, dead latents, and the
share of next-token cross-entropy recovered when the SAE's reconstruction replaces the activation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from debiaskit.errors import DebiasKitError
from debiaskit.method import hooked
from debiaskit.model import LoadedModel
from debiaskit.sae_source import TOP_TOKENS_FILE, activation_width, stop_layer

CARD_FILE = "card.json"
CONTEXT_SIZE = 128  # tokens per training sequence, the anchor included
HELDOUT_SHARE = 0.05  # the tail of every corpus file, never trained on
RECONSTRUCTION_SEQUENCES = 256  # held-out sequences scored for reconstruction (~32k tokens)
CE_SEQUENCES = 48  # ... and for cross-entropy (~6k tokens, three full forward passes each)
BATCH_SIZE = 16
TOP_TOKENS_PER_LATENT = 5
CONTEXT_TOKENS_SHOWN = 3  # tokens shown before a top-activating token
LR_DECAY_SHARE = 0.2  # the last share of training steps decays the learning rate linearly to 0
BIAS_INIT_SEQUENCES = 64  # training sequences (~8k tokens) whose geometric median starts the decoder bias
# SAELens architectures: topk and batchtopk keep k active latents per token; standard (ReLU with an L1 penalty) and
# jumprelu (a learnt threshold per latent with an L0 penalty) trade sparsity for reconstruction by a coefficient
K_ARCHITECTURES = ("topk", "batchtopk")
COEFFICIENT_ARCHITECTURES = {"standard": "l1_coefficient", "jumprelu": "l0_coefficient"}
ARCHITECTURES = (*K_ARCHITECTURES, *COEFFICIENT_ARCHITECTURES)

# Project Gutenberg etexts wrap the book in a header and licence ("small print"); the book starts after the last
# start marker and ends before the first end marker (newer etexts repeat the small print after the end marker).
_GUTENBERG_START = re.compile(r"^\*+\s*START OF (THE|THIS) PROJECT GUTENBERG|^\*END\*? ?THE SMALL PRINT", re.I | re.M)
_GUTENBERG_END = re.compile(r"^\*+\s*END OF (THE|THIS) PROJECT GUTENBERG|^End of (the )?Project Gutenberg", re.I | re.M)


@dataclass(frozen=True)
class TrainingSettings:
    hook_name: str = "blocks.8.hook_resid_post"
    d_sae: int = 4608
    k: int = 32  # topk, batchtopk
    architecture: str = "topk"
    sparsity_coefficient: float = 5.0  # standard: the L1 coefficient; jumprelu: the L0 coefficient
    training_tokens: int = 800_000
    seed: int = 0
    device: str | None = None  # None: the model's device
    lr: float = 5e-4
    batch_tokens: int = 2048
    dead_feature_window: int = 50  # steps without firing before the TopK auxiliary loss revives a latent


@dataclass(frozen=True)
class CorpusFile:
    name: str
    sha256: str  # of the file's bytes as read, before any stripping
    train_sequences: tuple[tuple[int, ...], ...]
    heldout_sequences: tuple[tuple[int, ...], ...]


def strip_gutenberg_boilerplate(text: str) -> str:
    """The book inside a Project Gutenberg etext; text without the markers comes back unchanged."""
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    starts = list(_GUTENBERG_START.finditer(text))
    if starts:
        line_end = text.find("\n", starts[-1].end())
        text = text[line_end + 1:] if line_end >= 0 else ""
    return text.strip()


def read_corpus(lm: LoadedModel, directory: Path) -> list[CorpusFile]:
    """Every `*.txt` under `directory`, stripped of Gutenberg boilerplate and cut into anchor-led sequences."""
    paths = sorted(directory.rglob("*.txt")) if directory.is_dir() else []
    if not paths:
        raise DebiasKitError(f"no *.txt files under {directory}; pass a folder of plain-text files")
    files = []
    for path in paths:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # older etexts are ISO-8859-1
        sequences = anchored_sequences(lm, strip_gutenberg_boilerplate(text))
        n_heldout = math.ceil(HELDOUT_SHARE * len(sequences)) if len(sequences) > 1 else 0
        files.append(CorpusFile(str(path.relative_to(directory)), hashlib.sha256(raw).hexdigest(),
                                tuple(sequences[:len(sequences) - n_heldout]), tuple(sequences[len(sequences) - n_heldout:])))
    if not any(f.train_sequences for f in files) or not any(f.heldout_sequences for f in files):
        raise DebiasKitError(f"the text under {directory} is too short: it needs at least two sequences of "
                             f"{CONTEXT_SIZE} tokens, one to train on and one held out")
    return files


def anchored_sequences(lm: LoadedModel, text: str) -> list[tuple[int, ...]]:
    """`text` tokenised and cut into CONTEXT_SIZE-token sequences, each the anchor followed by the next tokens."""
    if lm.anchor_token_id is None:
        raise DebiasKitError(f"{lm.name}'s tokenizer has no anchor (BOS or <|endoftext|>) token to start sequences with")
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    body = CONTEXT_SIZE - 1
    return [(lm.anchor_token_id, *ids[i:i + body]) for i in range(0, len(ids) - body + 1, body)]


def train_sae(lm: LoadedModel, corpus_dir: Path, out_dir: Path, settings: TrainingSettings, command: str) -> dict[str, Any]:
    """Train, save in SAELens disk format (float16) with `card.json` and `top_tokens.json`; return the card."""
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig, SAE
    from sae_lens import __version__ as sae_lens_version
    from sae_lens.registry import get_sae_training_class

    if settings.architecture not in ARCHITECTURES:
        raise DebiasKitError(f"architecture {settings.architecture!r}; accepted: {', '.join(ARCHITECTURES)}")
    if settings.device is None:
        settings = replace(settings, device=str(lm.device))
    d_in = activation_width(lm, settings.hook_name)
    files = read_corpus(lm, corpus_dir)
    train = [list(s) for f in files for s in f.train_sequences]
    # SAELens reads the dataset in order and mixes only a few batches; shuffled, every step sees every file's style
    random.Random(settings.seed).shuffle(train)
    print(f"debiaskit: {len(train)} training sequences ({len(train) * (CONTEXT_SIZE - 1)} tokens) from {len(files)} files; "
          f"training on {settings.training_tokens} tokens", file=sys.stderr)
    steps = math.ceil(settings.training_tokens / settings.batch_tokens)
    sae_config_class = get_sae_training_class(settings.architecture)[1]
    config = LanguageModelSAERunnerConfig(
        sae=sae_config_class(d_in=d_in, d_sae=settings.d_sae, device=settings.device, **sparsity_settings(settings)),
        model_name=lm.name,
        model_from_pretrained_kwargs={},  # the model is in memory, loaded without weight processing
        hook_name=settings.hook_name,
        dataset_path=str(corpus_dir),
        is_dataset_tokenized=True,
        streaming=False,
        context_size=CONTEXT_SIZE,
        prepend_bos=False,  # the anchor is already in every sequence; SAELens would add SmolLM2's chat BOS instead
        seqpos_slice=(1, None),  # never train on the anchor position
        exclude_special_tokens=[lm.anchor_token_id],  # nor on an anchor token the text itself contains
        training_tokens=settings.training_tokens,
        train_batch_size_tokens=settings.batch_tokens,
        store_batch_size_prompts=8,
        # the activation buffer holds n_batches_in_buffer x (CONTEXT_SIZE - 1) tokens and must hold a training batch
        n_batches_in_buffer=max(8, 2 * math.ceil(settings.batch_tokens / (CONTEXT_SIZE - 1))),
        lr=settings.lr,
        lr_decay_steps=int(LR_DECAY_SHARE * steps),
        dead_feature_window=settings.dead_feature_window,
        seed=settings.seed,
        device=settings.device,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        verbose=False,
    )
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        runner = LanguageModelSAETrainingRunner(config, override_model=lm.model,
                                                override_dataset=Dataset.from_dict({"input_ids": train}))
        with torch.no_grad():
            runner.sae.b_dec.copy_(initial_decoder_bias(lm, settings.hook_name, train[:BIAS_INIT_SEQUENCES]))
        trained = runner.run()
    seconds = time.perf_counter() - started
    trained.save_inference_model(out_dir)
    # Ship half precision (the SAE is read back in float32 by `debiaskit.sae_source`); the card measures that copy.
    SAE.load_from_disk(out_dir, dtype="float16").save_model(out_dir)
    sae = SAE.load_from_disk(out_dir, device=str(lm.device), dtype="float32")
    quality, top_tokens = measure_quality(lm, sae, [s for f in files for s in f.heldout_sequences])
    card = {
        "command": command,
        "model": lm.name,
        "hook_name": settings.hook_name,
        "d_in": d_in,
        "anchor_token": lm.tokenizer.convert_ids_to_tokens(lm.anchor_token_id),
        "anchor_position": "prepended to every sequence; excluded from training, from these measurements and from ablation",
        "context_size": CONTEXT_SIZE,
        "settings": asdict(settings),
        "decoder_bias_init": f"geometric median of the activations of {min(len(train), BIAS_INIT_SEQUENCES)} training "
                             "sequences (anchor positions left out)",
        "tokens_seen": steps * settings.batch_tokens,
        "train_tokens_available": len(train) * (CONTEXT_SIZE - 1),
        "training_seconds": round(seconds, 1),
        "weights_dtype": "float16",
        "sae_lens_version": sae_lens_version,
        "corpus": {
            "directory": str(corpus_dir),
            "preprocessing": "Project Gutenberg header and licence text removed; the last "
                             f"{HELDOUT_SHARE:.0%} of every file held out",
            "files": [{"name": f.name, "sha256": f.sha256, "train_tokens": len(f.train_sequences) * (CONTEXT_SIZE - 1),
                       "heldout_tokens": len(f.heldout_sequences) * (CONTEXT_SIZE - 1)} for f in files],
        },
        "quality": quality,
    }
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out_dir / TOP_TOKENS_FILE).write_text(json.dumps(top_tokens, separators=(",", ":")) + "\n", encoding="utf-8")
    return card


@torch.no_grad()
def initial_decoder_bias(lm: LoadedModel, hook_name: str, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """The geometric median of the activations at `hook_name` over `sequences`, anchor positions left out."""
    samples = [x[where].reshape(int(where.sum()), -1).double() for _, x, where in hook_activations(lm, hook_name, sequences)]
    return geometric_median(torch.cat(samples))


def geometric_median(points: torch.Tensor, iterations: int = 200, tolerance: float = 1e-7) -> torch.Tensor:
    """The point with the least summed Euclidean distance to the rows of `points` [n, d], by Weiszfeld's algorithm
    started at the mean (each step: the average of the points weighted by 1 / their distance to the estimate)."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(1e-12)
        updated = (weights[:, None] * points).sum(0) / weights.sum()
        moved = float((updated - median).norm())
        median = updated
        if moved <= tolerance * max(float(median.norm()), 1.0):
            break
    return median


def sparsity_settings(settings: TrainingSettings) -> dict[str, Any]:
    """The SAELens config field that sets the architecture's sparsity."""
    if settings.architecture in K_ARCHITECTURES:
        return {"k": settings.k}
    return {COEFFICIENT_ARCHITECTURES[settings.architecture]: settings.sparsity_coefficient}


def spread(items: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` items taken evenly across `items`, so every corpus file is represented."""
    stride = max(1, math.ceil(len(items) / limit))
    return list(items[::stride])[:limit]


def measure_quality(lm: LoadedModel, sae: Any, heldout: Sequence[Sequence[int]]
                    ) -> tuple[dict[str, Any], dict[str, list[list[Any]]]]:
    """The card's quality block, and each latent's top-activating held-out tokens. Reconstruction is scored on up
    to RECONSTRUCTION_SEQUENCES held-out sequences (a forward pass up to the SAE's block), cross-entropy on
    CE_SEQUENCES of them (three full forward passes each)."""
    sequences = spread(heldout, RECONSTRUCTION_SEQUENCES)
    quality, top = reconstruction_quality(lm, sae, sequences)
    ce = cross_entropy_recovered(lm, sae, spread(heldout, CE_SEQUENCES))
    return {**quality, **ce}, top.describe(lm, sequences)


@torch.no_grad()
def reconstruction_quality(lm: LoadedModel, sae: Any, sequences: Sequence[Sequence[int]]
                           ) -> tuple[dict[str, Any], TopActivations]:
    """Over every position but the anchor: explained_variance = 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 (pooled
    over tokens), mean L0, the share of latents never active, and each latent's top activations."""
    d_sae = sae.cfg.d_sae
    sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    sum_sq = sum_err = 0.0
    n_tokens = active = 0
    fired = torch.zeros(d_sae, dtype=torch.bool)
    top = TopActivations(d_sae, TOP_TOKENS_PER_LATENT)
    for start, x, where in hook_activations(lm, sae.cfg.metadata.hook_name, sequences):
        flat = x[where].reshape(int(where.sum()), -1).float()
        acts = sae.encode(x[where])
        recon = sae.decode(acts).reshape(flat.shape).float()
        acts = acts.reshape(flat.shape[0], d_sae).float().cpu()
        sum_x += flat.double().sum(0).cpu()
        sum_sq += float(flat.double().pow(2).sum())
        sum_err += float((flat - recon).double().pow(2).sum())
        n_tokens += flat.shape[0]
        active += int((acts > 0).sum())
        fired |= (acts > 0).any(0)
        top.update(acts, [(start + row, column) for row, column in where.nonzero().tolist()])
    total_variance = sum_sq - float(sum_x.pow(2).sum()) / n_tokens
    quality = {
        "reconstruction_tokens": n_tokens,
        "explained_variance": 1.0 - sum_err / total_variance,
        "mean_l0": active / n_tokens,
        "dead_latent_fraction": float((~fired).float().mean()),
        "dead_latent_definition": "never active on any of the held-out tokens scored here",
    }
    return quality, top


@torch.no_grad()
def cross_entropy_recovered(lm: LoadedModel, sae: Any, sequences: Sequence[Sequence[int]]) -> dict[str, Any]:
    """ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean): the activation is replaced by the SAE's
    reconstruction (spliced) or by zeros (zero ablation) at every position but the anchor."""
    hook_name = sae.cfg.metadata.hook_name
    replacements = {"clean": None, "spliced": lambda a: sae.decode(sae.encode(a)).to(a.dtype),
                    "zero_ablation": torch.zeros_like}
    losses: dict[str, list[torch.Tensor]] = {name: [] for name in replacements}
    for start in range(0, len(sequences), BATCH_SIZE):
        batch = lm.make_batch(sequences[start:start + BATCH_SIZE])
        for name, substitute in replacements.items():
            def splice(activation: torch.Tensor, hook: Any, substitute=substitute) -> torch.Tensor:
                keep = lm.editable_mask(activation).reshape(*activation.shape[:2], *([1] * (activation.ndim - 2)))
                return torch.where(keep, substitute(activation), activation)

            with hooked(lm, [(hook_name, splice)] if substitute is not None else []):
                losses[name].append(next_token_loss(lm.run(batch), batch.tokens))
    ce = {name: float(torch.cat(values).mean()) for name, values in losses.items()}
    return {
        "ce_tokens": int(sum(len(s) - 2 for s in sequences)),
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_zero_ablation": ce["zero_ablation"],
        "ce_loss_recovered": (ce["zero_ablation"] - ce["spliced"]) / (ce["zero_ablation"] - ce["clean"]),
        "ce_loss_recovered_baseline": "zero ablation at every position but the anchor",
    }


def top_activating_tokens(lm: LoadedModel, sae: Any, sequences: Sequence[Sequence[int]],
                          latents: Sequence[int]) -> dict[str, list[list[Any]]]:
    """{latent: [[context, token, activation], ...]} for `latents` over `sequences` (anchor positions left out)."""
    top = TopActivations(sae.cfg.d_sae, TOP_TOKENS_PER_LATENT)
    with torch.no_grad():
        for start, x, where in hook_activations(lm, sae.cfg.metadata.hook_name, sequences):
            acts = sae.encode(x[where]).reshape(int(where.sum()), sae.cfg.d_sae).float().cpu()
            top.update(acts, [(start + row, column) for row, column in where.nonzero().tolist()])
    described = top.describe(lm, sequences)
    return {str(latent): described.get(str(latent), []) for latent in latents}


def hook_activations(lm: LoadedModel, hook_name: str, sequences: Sequence[Sequence[int]]
                     ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(index of the batch's first sequence, activation [batch, pos, ...], editable positions [batch, pos]) per
    batch, running the model only as far as `hook_name`."""
    for start in range(0, len(sequences), BATCH_SIZE):
        batch = lm.make_batch(sequences[start:start + BATCH_SIZE])
        seen: dict[str, torch.Tensor] = {}

        def read(activation: torch.Tensor, hook: Any) -> None:
            seen["x"] = activation.detach()

        with hooked(lm, [(hook_name, read)]):
            lm.run(batch, stop_at_layer=stop_layer(hook_name))
        yield start, seen["x"], lm.editable_mask(seen["x"])[..., 0]


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-prediction cross-entropy [n] of predictions made at positions 1.. (the anchor's own prediction is the
    same with or without an edit, so it is left out); batches here have no padding."""
    log_probs = torch.log_softmax(logits[:, 1:-1].float(), dim=-1)
    return -log_probs.gather(-1, tokens[:, 2:].unsqueeze(-1)).squeeze(-1).flatten().cpu()


class TopActivations:
    """The `per_latent` largest activations of every latent seen so far, and the tokens they occurred on."""

    def __init__(self, d_sae: int, per_latent: int) -> None:
        self.values = torch.zeros((per_latent, d_sae))
        self.token_index = torch.full((per_latent, d_sae), -1, dtype=torch.long)  # into self.places
        self.places: list[tuple[int, int]] = []  # (sequence index, position) of every token seen

    def update(self, acts: torch.Tensor, places: Sequence[tuple[int, int]]) -> None:
        """acts [n_tokens, d_sae] on the CPU; places[i] = (sequence index, position) of token i."""
        k = min(self.values.shape[0], acts.shape[0])
        values, rows = acts.topk(k, dim=0)  # [k, d_sae]
        merged_values = torch.cat([self.values, values])
        merged_index = torch.cat([self.token_index, rows + len(self.places)])
        best = merged_values.topk(self.values.shape[0], dim=0).indices
        self.values = merged_values.gather(0, best)
        self.token_index = merged_index.gather(0, best)
        self.places.extend(places)

    def describe(self, lm: LoadedModel, sequences: Sequence[Sequence[int]]) -> dict[str, list[list[Any]]]:
        """{latent: [[context, token, activation], ...]} for latents that fired, strongest first."""
        described: dict[str, list[list[Any]]] = {}
        for latent in torch.nonzero(self.values[0] > 0).flatten().tolist():
            rows = []
            for value, index in zip(self.values[:, latent].tolist(), self.token_index[:, latent].tolist()):
                if value <= 0:
                    break
                sequence, position = self.places[index]
                tokens = sequences[sequence]
                context = lm.tokenizer.decode(tokens[max(1, position - CONTEXT_TOKENS_SHOWN):position])
                rows.append([context, lm.tokenizer.decode([tokens[position]]), round(value, 3)])
            described[str(latent)] = rows
        return described


def read_card(directory: Path) -> dict[str, Any] | None:
    path = directory / CARD_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
