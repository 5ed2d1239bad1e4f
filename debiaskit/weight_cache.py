"""A disk cache of converted model weights, so a second process skips de-quantisation and conversion.

Loading SmolLM2 from its GGUF file means de-quantising it, building a Hugging Face model and converting its
weights to TransformerLens's layout: most of a cold start. The result (the TransformerLens config fields, the
float32 state dict as safetensors, the tokenizer) is stored under

    $DEBIASKIT_CACHE_DIR, else $XDG_CACHE_HOME/debiaskit, else ~/.cache/debiaskit   /models/<name>-<key>/

where <key> hashes the source files' bytes, the converter's version and the transformers and TransformerLens
versions: a changed source or library gives a new key, and entries of the same <name> with another key are
removed when a new one is written. An entry records the sha256 of its weights file; a mismatch (a corrupt or
truncated file), a missing file or an unreadable record makes the entry count as absent: it is deleted and
rebuilt, never loaded. Only safetensors and JSON are read back, never a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CACHE_DIR_ENV = "DEBIASKIT_CACHE_DIR"
CONVERTER_VERSION = 1  # bump when the conversion in debiaskit.model changes what it produces
WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "entry.json"
TOKENIZER_DIR = "tokenizer"
HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class ConvertedWeights:
    cfg_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: Any


def cache_root() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "debiaskit"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(sources: Sequence[Path]) -> str:
    """A key that changes with any source file's name or bytes, the converter, transformers or TransformerLens."""
    import transformer_lens
    import transformers

    digest = hashlib.sha256()
    versions = f"converter={CONVERTER_VERSION};transformers={transformers.__version__};" \
               f"transformer_lens={getattr(transformer_lens, '__version__', '?')};torch={torch.__version__}"
    digest.update(versions.encode())
    for path in sorted(sources):
        digest.update(f"\0{path.name}\0{file_sha256(path)}".encode())
    return digest.hexdigest()[:24]


def cached_conversion(name: str, sources: Sequence[Path], convert: Callable[[], ConvertedWeights],
                      root: Path | None = None) -> ConvertedWeights:
    """The cached conversion of `sources` if a sound entry exists, else `convert()`, stored for next time.
    A cache that cannot be written only costs the next process its speed-up (a note on stderr)."""
    root = cache_root() if root is None else root
    entry = root / "models" / f"{_safe(name)}-{cache_key(sources)}"
    if entry.exists():
        loaded = _read_entry(entry)
        if loaded is not None:
            return loaded
        print(f"debiaskit: the cached weights in {entry} are corrupt or incomplete; rebuilding them", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
    converted = convert()
    try:
        _write_entry(entry, converted)
    except OSError as error:
        print(f"debiaskit: could not cache converted weights in {entry.parent} ({error}); set {CACHE_DIR_ENV} to a "
              "writable folder to start faster next time", file=sys.stderr)
    return converted


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "model"


def _read_entry(entry: Path) -> ConvertedWeights | None:
    from transformers import AutoTokenizer

    read = read_tensor_entry(entry)
    if read is None:
        return None
    state_dict, record = read
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(entry / TOKENIZER_DIR))
        return ConvertedWeights(dict(record["cfg_kwargs"]), state_dict, tokenizer)
    except Exception:  # any unreadable part makes the whole entry absent; it is rebuilt, never half-used
        return None


def _write_entry(entry: Path, converted: ConvertedWeights) -> None:
    write_tensor_entry(entry, converted.state_dict, {"cfg_kwargs": converted.cfg_kwargs},
                       lambda staging: converted.tokenizer.save_pretrained(str(staging / TOKENIZER_DIR)))
    stem = entry.name.rsplit("-", 1)[0]
    for stale in entry.parent.iterdir():
        if stale != entry and stale.is_dir() and stale.name.rsplit("-", 1)[0] == stem:
            shutil.rmtree(stale, ignore_errors=True)


def read_tensor_entry(entry: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, record) of a cache entry folder whose weights file matches its recorded sha256, else None."""
    from safetensors.torch import load_file

    try:
        record = json.loads((entry / RECORD_FILE).read_text(encoding="utf-8"))
        if file_sha256(entry / WEIGHTS_FILE) != record["weights_sha256"]:
            return None
        return load_file(str(entry / WEIGHTS_FILE)), record
    except Exception:  # any unreadable part makes the whole entry absent; it is rebuilt, never half-used
        return None


def write_tensor_entry(entry: Path, tensors: dict[str, torch.Tensor], record: dict[str, Any],
                       write_more: Callable[[Path], Any] | None = None) -> None:
    """Write `tensors` (safetensors), `record` (JSON, with the weights' sha256 added) and whatever `write_more`
    puts in the folder into a temporary sibling folder, then rename it into place: readers see all of it or
    nothing."""
    from safetensors.torch import save_file

    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        save_file({key: value.detach().contiguous() for key, value in tensors.items()}, str(staging / WEIGHTS_FILE))
        if write_more is not None:
            write_more(staging)
        record = {**record, "weights_sha256": file_sha256(staging / WEIGHTS_FILE)}
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        try:
            staging.rename(entry)
        except OSError:
            if not entry.exists():  # another process may have written the same entry meanwhile: keep theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
