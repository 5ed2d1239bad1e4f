"""Sentences of a public-domain corpus, for methods that learn from ordinary text (SentenceDebias's counterfactual
pairs, CDA's training text). The default is the NLTK Project Gutenberg selection of the shared data folder
(`shared_data_dir()`); a user passes any text file or folder of .txt files instead. Read from there, never copied
into the project."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from debiaskit.errors import DebiasKitError
from debiaskit.professions import shared_data_dir
from debiaskit.word_lists import GenderSwaps

CORPUS_DIR = "corpus/nltk_gutenberg_2006"  # relative to shared_data_dir()
SENTENCE_WORDS = (6, 40)  # shorter ones are headings and fragments; longer ones mostly run-on verse
# after . ! or ? and before a capital or a quote, except after a title's full stop (Mr. Knightley)
SENTENCE_END = re.compile(r"(?<!Mr\.)(?<!Mrs\.)(?<!Dr\.)(?<!St\.)(?<=[.!?])\s+(?=[A-Z\"'])")


def corpus_files(path: str | Path | None, option: str) -> list[Path]:
    """The .txt files of `path` (a file or a folder), or of the shared corpus when `path` is empty; `option` names
    the setting that gave it, for the error."""
    if path:
        given = Path(path)
        files = sorted(given.glob("*.txt")) if given.is_dir() else [given]
        if not given.exists() or not files:
            raise DebiasKitError(f"option {option}: {path} is not a text file or a folder of .txt files")
        return files
    shared = shared_data_dir()
    if shared is None or not (shared / CORPUS_DIR).is_dir():
        raise DebiasKitError(f"no corpus found: {CORPUS_DIR} is not under the shared data folder "
                             f"($DEBIASKIT_SHARED_DATA or shared/data beside the checkout); pass {option}=PATH "
                             "(a text file or a folder of .txt files)")
    return sorted((shared / CORPUS_DIR).glob("*.txt"))


def corpus_sentences(path: str | Path | None = None, option: str = "corpus") -> list[str]:
    """The corpus's sentences of SENTENCE_WORDS words, in file order: paragraphs joined, split after . ! or ?"""
    sentences = []
    for file in corpus_files(path, option):
        try:
            text = file.read_text(encoding="utf-8", errors="replace")  # some Gutenberg files are Latin-1
        except OSError as error:
            raise DebiasKitError(f"option {option}: cannot read {file} ({error})") from None
        for paragraph in re.split(r"\n\s*\n", text):
            for sentence in SENTENCE_END.split(" ".join(paragraph.split())):
                if SENTENCE_WORDS[0] <= len(sentence.split()) <= SENTENCE_WORDS[1]:
                    sentences.append(sentence)
    return sentences


def gendered_sentences(sentences: list[str], swaps: GenderSwaps, count: int, seed: int) -> list[str]:
    """A seeded sample of `count` of the `sentences` that name a swap word (all of them when there are fewer), in
    corpus order."""
    candidates = [sentence for sentence in sentences if swaps.names_a_word(sentence)]
    order = np.random.default_rng(seed).permutation(len(candidates))[:count]
    return [candidates[i] for i in sorted(order)]
