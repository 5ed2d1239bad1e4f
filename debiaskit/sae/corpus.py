"""The training corpus: a folder of plain text, Gutenberg boilerplate stripped, cut into anchor-led sequences.

Every sequence starts with the model's anchor token, the attention sink (see debiaskit/model.py), which training
and every measurement leave out. The last HELDOUT_SHARE of every file is held out: training never sees it, and the
SAE's card measures quality on it.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from debiaskit.errors import DebiasKitError
from debiaskit.model import LoadedModel

CONTEXT_SIZE = 128  # tokens per training sequence, the anchor included
HELDOUT_SHARE = 0.05  # the tail of every corpus file, never trained on

# Project Gutenberg etexts wrap the book in a header and licence ("small print"); the book starts after the last
# start marker and ends before the first end marker (newer etexts repeat the small print after the end marker).
_GUTENBERG_START = re.compile(r"^\*+\s*START OF (THE|THIS) PROJECT GUTENBERG|^\*END\*? ?THE SMALL PRINT", re.I | re.M)
_GUTENBERG_END = re.compile(r"^\*+\s*END OF (THE|THIS) PROJECT GUTENBERG|^End of (the )?Project Gutenberg", re.I | re.M)


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
                                tuple(sequences[:len(sequences) - n_heldout]),
                                tuple(sequences[len(sequences) - n_heldout:])))
    if not any(f.train_sequences for f in files) or not any(f.heldout_sequences for f in files):
        raise DebiasKitError(f"the text under {directory} is too short: it needs at least two sequences of "
                             f"{CONTEXT_SIZE} tokens, one to train on and one held out")
    return files


def anchored_sequences(lm: LoadedModel, text: str) -> list[tuple[int, ...]]:
    """`text` tokenised and cut into CONTEXT_SIZE-token sequences, each the anchor followed by the next tokens."""
    if lm.anchor_token_id is None:
        raise DebiasKitError(f"{lm.name}'s tokenizer has no anchor (BOS or <|endoftext|>) token "
                             "to start sequences with")
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    body = CONTEXT_SIZE - 1
    return [(lm.anchor_token_id, *ids[i:i + body]) for i in range(0, len(ids) - body + 1, body)]
