"""Train a sparse autoencoder on a folder of plain text with SAELens's own runner, and write it with its card.

The default architecture is TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv:2406.04093):
z = TopK(W_enc (x - b_dec) + b_enc) keeps the k largest pre-activations, x_hat = W_dec z + b_dec. SAELens's
`LanguageModelSAETrainingRunner` does the training; debiaskit hands it the model already in memory and a
pretokenised `datasets.Dataset` in which every sequence starts with the model's anchor token (debiaskit.sae.corpus).
That position is the attention sink (see debiaskit/model.py): it is kept out of training (`seqpos_slice=(1, None)`)
exactly as every intervention keeps it out of editing, so the SAE never spends capacity on an activation nobody
edits. The decoder bias starts at the geometric median of training activations (debiaskit.sae.decoder_bias).

The card (`card.json`) says what was trained on (file hashes, tokens seen) and how good the SAE is on the last
HELDOUT_SHARE of every corpus file, which training never sees (debiaskit.sae.quality): explained variance, mean L0,
dead latents, and the share of next-token cross-entropy recovered when the SAE's reconstruction replaces the
activation.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from debiaskit.errors import DebiasKitError
from debiaskit.model import LoadedModel
from debiaskit.sae.activations import activation_width
from debiaskit.sae.corpus import CONTEXT_SIZE, HELDOUT_SHARE, read_corpus
from debiaskit.sae.decoder_bias import BIAS_INIT_SEQUENCES, initial_decoder_bias
from debiaskit.sae.quality import measure_quality
from debiaskit.sae.source import TOP_TOKENS_FILE

CARD_FILE = "card.json"
LR_DECAY_SHARE = 0.2  # the last share of training steps decays the learning rate linearly to 0
# SAELens architectures: topk and batchtopk keep k active latents per token; standard (ReLU with an L1 penalty) and
# jumprelu (a learnt threshold per latent with an L0 penalty) trade sparsity for reconstruction by a coefficient
K_ARCHITECTURES = ("topk", "batchtopk")
COEFFICIENT_ARCHITECTURES = {"standard": "l1_coefficient", "jumprelu": "l0_coefficient"}
ARCHITECTURES = (*K_ARCHITECTURES, *COEFFICIENT_ARCHITECTURES)


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


def train_sae(lm: LoadedModel, corpus_dir: Path, out_dir: Path, settings: TrainingSettings,
              command: str) -> dict[str, Any]:
    """Train, save in SAELens disk format (float16) with `card.json` and `top_tokens.json`; return the card."""
    from datasets import Dataset
    from sae_lens import SAE, LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
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
    print(f"debiaskit: {len(train)} training sequences ({len(train) * (CONTEXT_SIZE - 1)} tokens) "
          f"from {len(files)} files; training on {settings.training_tokens} tokens", file=sys.stderr)
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
    # Ship half precision (the SAE is read back in float32 by `debiaskit.sae.source`); the card measures that copy.
    SAE.load_from_disk(out_dir, dtype="float16").save_model(out_dir)
    sae = SAE.load_from_disk(out_dir, device=str(lm.device), dtype="float32")
    quality, top_tokens = measure_quality(lm, sae, [s for f in files for s in f.heldout_sequences])
    card = {
        "command": command,
        "model": lm.name,
        "hook_name": settings.hook_name,
        "d_in": d_in,
        "anchor_token": lm.tokenizer.convert_ids_to_tokens(lm.anchor_token_id),
        "anchor_position": "prepended to every sequence; excluded from training, from these measurements "
                           "and from ablation",
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


def sparsity_settings(settings: TrainingSettings) -> dict[str, Any]:
    """The SAELens config field that sets the architecture's sparsity."""
    if settings.architecture in K_ARCHITECTURES:
        return {"k": settings.k}
    return {COEFFICIENT_ARCHITECTURES[settings.architecture]: settings.sparsity_coefficient}
