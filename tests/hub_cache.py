"""The Hugging Face hub, offline: a tiny random GPT-2 laid out in a cache folder as `huggingface_hub` lays out what
it downloads, under the repository names TransformerLens and SAELens resolve `gpt2-small` and the SAELens release
`gpt2-small-res-jb` to, with a tiny SAE in that release's repository. With HF_HOME pointing there and
HF_HUB_OFFLINE=1, `--model gpt2-small -o sae-ablation.sae=gpt2-small-res-jb/SAE_ID` goes through TransformerLens's
and SAELens's own loading code and finds these files instead of the hub's."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

GPT2_REPO = "gpt2"  # TransformerLens's official name for gpt2-small
SAE_RELEASE = "gpt2-small-res-jb"
SAE_ID = "blocks.1.hook_resid_pre"  # an id of that release that a 2-layer GPT-2 has
COMMIT = "0123456789abcdef0123456789abcdef01234567"
D_MODEL = 64


def lay_out_hub_cache(hf_home: Path) -> Path:
    """Write the tiny GPT-2 and SAE under `hf_home`/hub (blobs named by their sha256, snapshot files linked to them,
    refs/main naming the snapshot); `hf_home`."""
    from conftest import smollm2_tokenizer
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    from sae_lens.saes.sae import SAEMetadata
    from transformers import GPT2Config, GPT2LMHeadModel

    staging = hf_home / "staging"
    tokenizer = smollm2_tokenizer()  # real words tokenize; GPT-2's own vocabulary files are not on this machine
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_ctx=256, n_embd=D_MODEL, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(staging / "model")
    tokenizer.save_pretrained(staging / "model")
    _to_cache(hf_home, GPT2_REPO, staging / "model")

    release = get_pretrained_saes_directory()[SAE_RELEASE]
    sae = TopKSAE(TopKSAEConfig(d_in=D_MODEL, d_sae=256, k=8,
                                metadata=SAEMetadata(hook_name=SAE_ID, model_name="gpt2-small")))
    folder = staging / "sae" / release.saes_map[SAE_ID]
    sae.save_model(folder)
    _to_cache(hf_home, release.repo_id, staging / "sae")
    return hf_home


def _to_cache(hf_home: Path, repo_id: str, files: Path) -> None:
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for source in sorted(path for path in files.rglob("*") if path.is_file()):
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / source.relative_to(files)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
