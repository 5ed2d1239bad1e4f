"""The gendered word lists debiaskit ships, and their readers. Each list has one job:

  gendered_words.json      `GenderedWords`: the words methods fit on (LEACE's eraser, LSDM's gender direction, the
                           SAE methods' contrast latents), as [female, male] pairs in neutral fit contexts
  definitional_nouns.json  `DefinitionalNoun`: the control nouns of `controls`, whose gender is part of their meaning
  gendered_tokens.json     `GenderedWordLists`: the words counted in generated text and rebalanced by logit-rebalance
  gender_swaps.json        `GenderSwaps`: the [female, male] words swapped to make a sentence's counterfactual
  (in code)                `FEMALE_PRONOUNS`, `MALE_PRONOUNS`: the targets agreement on gendered text is read on

Fit words and control nouns are a fixed disjoint split: a control noun a method was fitted on would make the control
circular, so `definitional_nouns` refuses any overlap. gendered_tokens.json shares words with both on purpose:
logit-rebalance is fitted on nothing, it moves those words at the output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from debiaskit.data import project_data_dir
from debiaskit.errors import DebiasKitError

FIT_WORDS_FILE = "gendered_words.json"
DEFINITIONAL_NOUNS_FILE = "definitional_nouns.json"
GENDERED_TOKENS_FILE = "gendered_tokens.json"
GENDER_SWAPS_FILE = "gender_swaps.json"

# Not a data file: the third-person pronouns define the agreement measure (`targets.pronoun_targets`).
FEMALE_PRONOUNS = ("she", "her", "hers")
MALE_PRONOUNS = ("he", "him", "his")


@dataclass(frozen=True)
class GenderedWords:
    """Definitional gender to fit on (datasets/gendered_words.json): [female, male] word pairs, each in neutral
    `fit_contexts` with `{word}`. The control nouns that check meaning survives (`DefinitionalNoun`) are disjoint
    from them."""

    fit_pairs: tuple[tuple[str, str], ...]
    fit_contexts: tuple[str, ...]

    def words(self) -> set[str]:
        return {word for pair in self.fit_pairs for word in pair}

    def fit_sentences(self) -> list[tuple[str, str, int]]:
        """(sentence, word, label) for every fit pair in every context; label 1 = female, 0 = male."""
        return [
            (context.format(word=word), word, label)
            for female, male in self.fit_pairs
            for context in self.fit_contexts
            for word, label in ((female, 1), (male, 0))
        ]


def gendered_words() -> GenderedWords:
    """The shipped fit words, datasets/gendered_words.json."""
    path = project_data_dir() / FIT_WORDS_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    return GenderedWords(tuple(tuple(pair) for pair in raw["fit_pairs"]), tuple(raw["fit_contexts"]))  # type: ignore[misc]


@dataclass(frozen=True)
class DefinitionalNoun:
    """A control noun (datasets/definitional_nouns.json) whose gender is part of its meaning ("queen"): removing a
    stereotype must leave it gendered. No control noun is a fit word (`GenderedWords`)."""

    word: str
    gender: str  # "female" or "male"
    pair: int  # index of its [female, male] pair: a pair stays together when controls are split over folds


def definitional_nouns() -> tuple[DefinitionalNoun, ...]:
    """The shipped balanced list; a noun that is also a fit word would make the control circular, so it is refused."""
    path = project_data_dir() / DEFINITIONAL_NOUNS_FILE
    pairs = json.loads(path.read_text(encoding="utf-8"))["pairs"]
    overlap = sorted(gendered_words().words() & {word for pair in pairs for word in pair})
    if overlap:
        raise DebiasKitError(f"{path}: {overlap[0]!r} is also a fit word in {FIT_WORDS_FILE}; "
                             "control nouns must be unseen")
    return tuple(DefinitionalNoun(word, gender, index) for index, (female, male) in enumerate(pairs)
                 for word, gender in ((female, "female"), (male, "male")))


@dataclass(frozen=True)
class GenderedWordLists:
    """Female and male words to count in generated text and to rebalance at the output (datasets/gendered_tokens.json
    or a file of the same shape). A lower-case word also stands for its capitalised form; a capitalised one only for
    itself. Unlike the fit words and the control nouns these are no split: nothing is fitted on them."""

    female: tuple[str, ...]
    male: tuple[str, ...]
    source: str  # the file they came from


def read_gendered_word_lists(path: str | Path | None = None) -> GenderedWordLists:
    """The shipped `datasets/gendered_tokens.json`, or a JSON file of the same shape:
    {"female": [...], "male": [...]}."""
    path = Path(path) if path is not None else project_data_dir() / GENDERED_TOKENS_FILE
    shape = 'a JSON object {"female": ["she", ...], "male": ["he", ...]} of non-empty lists of single words'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DebiasKitError(f"cannot read gendered word lists from {path}: {error}; expected {shape}") from None
    lists: dict[str, tuple[str, ...]] = {}
    for group in ("female", "male"):
        words = raw.get(group) if isinstance(raw, dict) else None
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip().isalpha()
                                                               for w in words):
            raise DebiasKitError(f"{path}: {group!r} is missing or not a list of words; expected {shape}")
        lists[group] = tuple(dict.fromkeys(w.strip() for w in words))
    shared = set(lists["female"]) & set(lists["male"])
    if shared:
        raise DebiasKitError(f"{path}: {sorted(shared)[0]!r} is in both the female and the male list")
    return GenderedWordLists(lists["female"], lists["male"], str(path))


@dataclass(frozen=True)
class GenderSwaps:
    """A word-for-word gender swap (datasets/gender_swaps.json): each [female, male] pair both ways, and the words
    with no partner of their own (`one_way`, e.g. him -> her) one way. Lower-case keys; `swap` keeps each word's
    casing (she -> he, She -> He, SHE -> HE)."""

    pairs: tuple[tuple[str, str], ...]
    one_way: tuple[tuple[str, str], ...]

    @cached_property
    def mapping(self) -> dict[str, str]:
        both_ways = {word: other for female, male in self.pairs for word, other in ((female, male), (male, female))}
        return {**dict(self.one_way), **both_ways}

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        # every listed word, longest first, between non-letters (so Gutenberg's italic _she_ counts as she); built
        # once, not per sentence
        words = "|".join(sorted(map(re.escape, self.mapping), key=len, reverse=True))
        return re.compile(rf"(?<![A-Za-z])({words})(?![A-Za-z])", re.IGNORECASE)

    def words(self) -> set[str]:
        return set(self.mapping)

    def names_a_word(self, text: str) -> bool:
        """True when `text` holds a listed word that `swap` would replace."""
        return self._pattern.search(text) is not None

    def swap(self, text: str) -> str:
        """`text` with every whole word of the list replaced by its counterpart."""
        mapping = self.mapping

        def replace(found: re.Match[str]) -> str:
            word = found.group(0)
            other = mapping[word.lower()]
            if word.isupper() and len(word) > 1:
                return other.upper()
            return other.capitalize() if word[0].isupper() else other

        return self._pattern.sub(replace, text)


def gender_swaps() -> GenderSwaps:
    """The shipped swap list, datasets/gender_swaps.json; a word in two pairs would make the swap ambiguous, so it
    is refused."""
    path = project_data_dir() / GENDER_SWAPS_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    pairs = tuple((female, male) for female, male in raw["pairs"])
    paired = [word for pair in pairs for word in pair]
    repeated = sorted({word for word in paired if paired.count(word) > 1} | (set(paired) & set(raw["one_way"])))
    if repeated:
        raise DebiasKitError(f"{path}: {repeated[0]!r} is in more than one pair; each word needs one counterpart")
    return GenderSwaps(pairs, tuple(raw["one_way"].items()))
