"""Labelled examples of a concept (gendered words, jobs by group) and the activations at their positions.

Several methods learn from the same material: LEACE fits an eraser on it, the SAE methods pick latents from it,
LSDM reads MLP keys from it, the occupation gate its detector's examples. What they share lives here, so each reads
the same positions the same way: the anchor token is never an example position (its activations are ~100x larger
than the rest in Llama-family models), and a position is counted from the end of its left-padded row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from debiaskit.data import Occupation, TemplateFamily, project_data_dir
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import NeutralText, length_sorted_batches
from debiaskit.method import ActivationHook, hooked
from debiaskit.model import LoadedModel

POSITIONS = ("word", "all", "last")
# Text whose outputs a method keeps while it edits, other than the neutral text `kl` is measured on
PRESERVE_TEXT_FILE = "preserve_text.txt"
BATCH_SIZE = 64


@dataclass(frozen=True)
class LabelledText:
    """A token sequence (anchor first), the positions whose activations are examples, their label and word group."""

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    label: int  # 1 = female (a female word, or a female-dominated job)
    group: str  # examples sharing a group (a word pair, a job) stay on one side of a probe split

    def last_position_only(self) -> LabelledText:
        return LabelledText(self.tokens, self.positions[-1:], self.label, self.group)


def labelled_text(lm: LoadedModel, text: str, word: str, positions: str, label: int, group: str) -> LabelledText:
    """`text` tokenised with the anchor; `positions` is `word` (the tokens of the first whole-word `word`), `all`
    (every token but the anchor) or `last`."""
    tokens = tuple(lm.encode(text))
    first = len(tokens) - len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # 1 after the anchor
    if positions == "last":
        chosen: tuple[int, ...] = (len(tokens) - 1,)
    elif positions == "all":
        chosen = tuple(range(max(first, 1), len(tokens)))  # never the anchor, also with no anchor token
    elif positions == "word":
        chosen = tuple(first + i for i in word_token_indices(lm, text, word))
    else:
        raise DebiasKitError(f"positions {positions!r}: accepted {', '.join(POSITIONS)}")
    return LabelledText(tokens, chosen, label, group)


def word_token_indices(lm: LoadedModel, text: str, word: str) -> list[int]:
    """Indices (in the tokenisation of `text` alone) of the tokens that overlap the first whole-word `word`."""
    found = re.search(rf"\b{re.escape(word)}\b", text)
    if found is None:
        raise DebiasKitError(f"cannot find the word {word!r} in {text!r}")
    try:
        offsets = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except NotImplementedError:
        raise DebiasKitError(f"positions=word needs a fast tokenizer (with offsets); {lm.name}'s has none. "
                             "Use positions last or all") from None
    return [i for i, (start, end) in enumerate(offsets) if start < found.end() and end > found.start()]


def word_pair_examples(lm: LoadedModel, pairs: Sequence[tuple[str, str]], contexts: Sequence[str],
                       positions: str) -> list[LabelledText]:
    """Each (female, male) pair's two words in every context (`{word}` marks the slot), grouped by pair."""
    return [
        labelled_text(lm, context.format(word=word), word, positions, label, group=f"{female}/{male}")
        for female, male in pairs
        for context in contexts
        for word, label in ((female, 1), (male, 0))
    ]


def job_examples(lm: LoadedModel, jobs: Sequence[Occupation], family: TemplateFamily,
                 positions: str) -> list[LabelledText]:
    """Every job in every template of `family`, labelled 1 for female-dominated jobs and grouped by job."""
    return [
        labelled_text(lm, family.prompt(template, job.name), job.name, positions, int(job.group == "female"), job.name)
        for job in jobs
        for template in family.templates
    ]


RunKey = tuple[tuple[int, ...], bool]  # the tokens a read runs, and whether they stop before the example's end


def run_key(example: LabelledText) -> RunKey:
    """What `read_at_positions` runs for `example`: its tokens up to its last position, and whether that cuts it."""
    end = max(example.positions) + 1
    return example.tokens[:end], end < len(example.tokens)


@torch.no_grad()
def read_at_positions(lm: LoadedModel, examples: Sequence[LabelledText], hook_names: Sequence[str],
                      hooks: Sequence[ActivationHook] = (),
                      stop_at_layer: int | None = None) -> dict[str, torch.Tensor]:
    """Per hook point, the activations at every example's positions, in example order: [n_positions, d] float64 on
    the CPU. `hooks` are installed first, so an intervention at or below a hook point is already applied there.

    In a causal model the activation at position t depends on the tokens up to t only, so each example runs up to its
    last position (not its later tokens), examples that agree up to there run once (a job's 17 templates all begin
    "The {job}": LSDM's keys at the job's last token come from one short sequence per job), and the sequences run
    sorted by length. A sequence cut short has no scored position (`Batch.scored`): where the full one was scored,
    at its last token, lies beyond the cut, so a hook that edits only scored positions edits nothing read here, as
    in the full sequence."""
    read = [example for example in examples if example.positions]
    run_of_example = [run_key(example) for example in read]
    wanted: dict[RunKey, set[int]] = {}  # per sequence run, the positions read there
    for key, example in zip(run_of_example, read):
        wanted.setdefault(key, set()).update(example.positions)
    runs = list(wanted)
    row_of: dict[tuple[RunKey, int], int] = {}  # (run, position) -> its row in the gathered activations
    gathered: dict[str, list[torch.Tensor]] = {name: [] for name in hook_names}
    for chosen in length_sorted_batches([tokens for tokens, _ in runs], BATCH_SIZE):
        batch = lm.make_batch([runs[index][0] for index in chosen])
        batch.scored[[row for row, index in enumerate(chosen) if runs[index][1]]] = False  # cut short: none scored
        width = batch.tokens.shape[1]
        cells = [(row, runs[index], position) for row, index in enumerate(chosen)
                 for position in sorted(wanted[runs[index]])]
        for _, key, position in cells:
            row_of[key, position] = len(row_of)
        rows = torch.tensor([row for row, _, _ in cells], dtype=torch.long, device=batch.tokens.device)
        columns = torch.tensor([width - len(key[0]) + position for _, key, position in cells], dtype=torch.long,
                               device=batch.tokens.device)
        seen: dict[str, torch.Tensor] = {}

        def record(activation: torch.Tensor, hook: Any) -> None:  # activation [batch, pos, d]
            seen[hook.name] = activation[rows, columns].detach().to("cpu", torch.float64)  # noqa: B023 - called in-loop

        with hooked(lm, [*hooks, *((name, record) for name in hook_names)]):
            lm.run(batch, stop_at_layer=stop_at_layer)
        for name in hook_names:
            gathered[name].append(seen[name])
    order = torch.tensor([row_of[key, position] for key, example in zip(run_of_example, read)
                          for position in example.positions], dtype=torch.long)
    return {name: torch.cat(parts)[order] if parts else torch.empty(0, 0, dtype=torch.float64)
            for name, parts in gathered.items()}


def preserve_text_examples(lm: LoadedModel, path: str = "", option: str = "preserve_text") -> list[LabelledText]:
    """Every non-anchor token of the preserve text (`path`, or datasets/preserve_text.txt), in the evaluator's
    128-token anchored chunks; `option` names the setting that gave `path`, for the error."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DebiasKitError(f"option {option}: cannot read {path} ({error}); pass a UTF-8 text file") from None
    else:
        text = (project_data_dir() / PRESERVE_TEXT_FILE).read_text(encoding="utf-8")
    first = 1 if lm.anchor_token_id is not None else 0
    return [LabelledText(tuple(seq), tuple(range(first, len(seq))), 0, "neutral")
            for seq in NeutralText(lm, text).sequences]


def require_both_groups(jobs: Sequence[Occupation], method: str) -> None:
    """Raise DebiasKitError unless `jobs` (a method's training jobs) hold both groups, as a neutral point needs."""
    if len({job.group for job in jobs}) < 2:
        raise DebiasKitError(f"{method} needs training jobs of both groups for its neutral point; "
                             f"got {len(jobs)} of one group only")


def gender_direction(values: torch.Tensor, female: torch.Tensor) -> torch.Tensor:
    """Unit mean difference [d] of the rows of `values` [n, d] marked `female` minus the others."""
    direction = values[female].mean(0) - values[~female].mean(0)
    return direction / direction.norm()


def balanced_midpoint(along: torch.Tensor, female: torch.Tensor) -> float:
    """The mean of the two groups' mean projections `along` [n]: where female-dominated and male-dominated jobs meet
    halfway, whatever the groups' sizes (the neutral point of LSDM and the occupation gate)."""
    return 0.5 * float(along[female].mean() + along[~female].mean())
