"""Where a sparse autoencoder comes from, and whether it fits the model it is used on.

An SAE source is one string:
  embedded            the SAE debiaskit trained for SmolLM2 and ships in datasets/sae/ (see its card.json)
  DIRECTORY           an SAE saved in SAELens's disk format (cfg.json + sae_weights.safetensors)
  RELEASE/SAE_ID      a SAELens pretrained release and an id in it, e.g. gpt2-small-res-jb/blocks.8.hook_resid_pre
                      (needs the Hugging Face hub or its cache)
Weights are only ever read from safetensors files: releases whose SAELens loader unpickles files are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debiaskit.data import project_data_dir
from debiaskit.errors import DebiasKitError
from debiaskit.model import EMBEDDED_MODEL, LoadedModel
from debiaskit.sae.activations import activation_width

EMBEDDED = "embedded"
EMBEDDED_SAE = "sae/smollm2-blocks.8.hook_resid_post-topk4608"  # under project_data_dir()
DISK_FILES = ("cfg.json", "sae_weights.safetensors")
TOP_TOKENS_FILE = "top_tokens.json"  # optional: each latent's top-activating held-out tokens, written by `sae train`
SAFETENSORS_LOADER = "sae_lens"  # the SAELens release loader that reads safetensors (the others may unpickle)


@dataclass(frozen=True)
class LoadedSAE:
    """An SAE (float32, on the model's device) checked against a model, with what was shipped beside it."""

    sae: Any  # sae_lens.SAE
    source: str
    hook_name: str
    top_tokens: dict[str, list[list[Any]]] | None  # {latent: [[context, token, activation], ...]}


def load_sae(source: str, lm: LoadedModel) -> LoadedSAE:
    """The SAE that `source` names, or a DebiasKitError saying what is accepted or how it mismatches `lm`."""
    if source == EMBEDDED:
        if lm.name != EMBEDDED_MODEL:
            raise DebiasKitError(f"the embedded SAE was trained for {EMBEDDED_MODEL}, not {lm.name}; pass an SAE for "
                                 f"{lm.name} with sae=DIRECTORY (SAELens disk format) or sae=RELEASE/SAE_ID")
        directory = project_data_dir() / EMBEDDED_SAE
        sae, top_tokens = _from_disk(directory, lm)
        description = f"embedded ({directory.name})"
    elif Path(source).is_dir():
        sae, top_tokens = _from_disk(Path(source), lm)
        description = source
    else:
        sae, top_tokens, description = _from_release(source, lm), None, source
    hook_name = sae.cfg.metadata.hook_name
    check_fits(sae, lm, description)
    return LoadedSAE(sae.eval(), description, hook_name, top_tokens)


def _from_disk(directory: Path, lm: LoadedModel) -> tuple[Any, dict[str, list[list[Any]]] | None]:
    from sae_lens import SAE

    missing = [name for name in DISK_FILES if not (directory / name).is_file()]
    if missing:
        raise DebiasKitError(f"{directory} is not an SAE in SAELens disk format: {missing[0]} is missing "
                             f"(expected {' and '.join(DISK_FILES)})")
    sae = SAE.load_from_disk(directory, device=str(lm.device), dtype="float32")
    top_path = directory / TOP_TOKENS_FILE
    return sae, json.loads(top_path.read_text(encoding="utf-8")) if top_path.is_file() else None


def _from_release(source: str, lm: LoadedModel) -> Any:
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import get_conversion_loader_name
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, _, sae_id = source.partition("/")
    releases = get_pretrained_saes_directory()
    if release not in releases or not sae_id:
        raise DebiasKitError(f"SAE source {source!r} is neither 'embedded', an existing directory, nor RELEASE/SAE_ID "
                             "of a SAELens pretrained release (e.g. gpt2-small-res-jb/blocks.8.hook_resid_pre)")
    if sae_id not in releases[release].saes_map:
        known = ", ".join(list(releases[release].saes_map)[:4])
        raise DebiasKitError(f"SAELens release {release} has no SAE id {sae_id!r}; its ids include {known}, ...")
    if get_conversion_loader_name(release) != SAFETENSORS_LOADER:
        raise DebiasKitError(f"SAELens loads release {release} with a loader that may unpickle files; debiaskit reads "
                             "SAE weights from safetensors only. Convert it to SAELens disk format and pass "
                             "the directory")
    try:
        return SAE.from_pretrained(release, sae_id, device=str(lm.device), dtype="float32")
    except OSError as error:
        raise DebiasKitError(f"cannot fetch SAE {source} from the Hugging Face hub ({error}); connect once, or set "
                             "HF_HUB_OFFLINE=1 with the SAE in the cache, or pass a local SAE directory") from error


def check_fits(sae: Any, lm: LoadedModel, description: str) -> None:
    """The SAE reads a hook point the model has, of the width the model writes there."""
    hook_name = sae.cfg.metadata.hook_name
    trained_on = sae.cfg.metadata.model_name or "an unnamed model"
    if not hook_name or hook_name not in lm.model.hook_dict:
        raise DebiasKitError(f"SAE {description} (trained on {trained_on}) reads hook point {hook_name!r}, which model "
                             f"{lm.name} does not have; pass an SAE trained for {lm.name}")
    width = activation_width(lm, hook_name)
    if width != sae.cfg.d_in:
        raise DebiasKitError(f"SAE {description} (trained on {trained_on}) expects d_in={sae.cfg.d_in} at {hook_name}, "
                             f"but model {lm.name} has width {width} there; pass an SAE trained for {lm.name}")

