"""The male and female target words of a template family, as the token ids the model would emit next."""

from __future__ import annotations

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


def target_tokens(tokenizer: Any, family: TemplateFamily) -> TargetTokens:
    """Single-token variants of each target word. A multi-token variant is skipped and reported: its first
    token alone would also count other words. A word with no single-token variant is an error."""
    skipped: list[str] = []
    groups: dict[str, list[int]] = {"male": [], "female": []}
    for group, words in (("male", family.male_words), ("female", family.female_words)):
        for word in words:
            found = False
            for variant in word_variants(word):
                ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
                if len(ids) == 1:
                    groups[group].append(ids[0])
                    found = True
                else:
                    skipped.append(variant)
            if not found:
                raise DebiasKitError(
                    f"target word {word!r} of template family {family.name!r} is not a single token in this tokenizer "
                    f"(tried {', '.join(repr(v) for v in word_variants(word))}); use words the model emits as one token"
                )
    shared = set(groups["male"]) & set(groups["female"])
    if shared:
        raise DebiasKitError(f"template family {family.name!r}: token ids {sorted(shared)} are in both target groups")
    return TargetTokens(tuple(dict.fromkeys(groups["male"])), tuple(dict.fromkeys(groups["female"])), tuple(skipped))


PRONOUNS = TemplateFamily("pronouns", "the third-person pronouns, whatever family the prompts use", (),
                          MALE_PRONOUNS, FEMALE_PRONOUNS)


def pronoun_targets(tokenizer: Any) -> TargetTokens:
    """he/him/his against she/her/hers as single tokens: what agreement on gendered text is read on."""
    return target_tokens(tokenizer, PRONOUNS)
