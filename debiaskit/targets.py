"""The male and female target words of a template family, as the token ids the model would emit next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from debiaskit.data import TemplateFamily
from debiaskit.errors import DebiasKitError
from debiaskit.word_lists import FEMALE_PRONOUNS, MALE_PRONOUNS


@dataclass(frozen=True)
class TargetTokens:
    male_ids: tuple[int, ...]
    female_ids: tuple[int, ...]
    skipped_variants: tuple[str, ...]  # spellings that are not one token, reported rather than scored


def word_variants(word: str) -> tuple[str, ...]:
    """A continuation word as it follows a prompt: with a leading space, lower-case and capitalised."""
    return tuple(dict.fromkeys((f" {word}", f" {word[:1].upper()}{word[1:]}")))


def single_token_ids(tokenizer: Any, words: Sequence[str], owner: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The ids of `words`' single-token variants, and the variants skipped for being several tokens (their first
    token alone would also count other words). A word with no single-token variant is an error naming `owner`."""
    ids: list[int] = []
    skipped: list[str] = []
    for word in words:
        found = False
        for variant in word_variants(word):
            variant_ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(variant_ids) == 1:
                ids.append(variant_ids[0])
                found = True
            else:
                skipped.append(variant)
        if not found:
            raise DebiasKitError(
                f"target word {word!r} of {owner} is not a single token in this tokenizer "
                f"(tried {', '.join(repr(v) for v in word_variants(word))}); use words the model emits as one token"
            )
    return tuple(dict.fromkeys(ids)), tuple(skipped)


def target_tokens(tokenizer: Any, family: TemplateFamily) -> TargetTokens:
    """Single-token variants of each target word of `family`; multi-token variants are skipped and reported."""
    owner = f"template family {family.name!r}"
    male_ids, male_skipped = single_token_ids(tokenizer, family.male_words, owner)
    female_ids, female_skipped = single_token_ids(tokenizer, family.female_words, owner)
    shared = set(male_ids) & set(female_ids)
    if shared:
        raise DebiasKitError(f"template family {family.name!r}: token ids {sorted(shared)} are in both target groups")
    return TargetTokens(male_ids, female_ids, male_skipped + female_skipped)


PRONOUNS = TemplateFamily("pronouns", "the third-person pronouns, whatever family the prompts use", (),
                          MALE_PRONOUNS, FEMALE_PRONOUNS)


def pronoun_targets(tokenizer: Any) -> TargetTokens:
    """he/him/his against she/her/hers as single tokens: what agreement on gendered text is read on."""
    return target_tokens(tokenizer, PRONOUNS)
