"""lm-evaluation-harness on a debiaskit model with a method applied: any lm-eval task, scored the way debiaskit scores.

Gao et al., "A framework for few-shot language model evaluation" (EleutherAI lm-evaluation-harness, `lm-eval` on
PyPI). `DebiasKitLM` is its `TemplateLM` over a `LoadedModel`; the caller holds the method applied around
`simple_evaluate` (`with method.apply(lm) as intervention:`), so its activation hooks run inside `lm.run` and its
logits transform is passed in. The three request types, as lm-eval's own HFLM answers them, except that every
sequence starts with the model's anchor token (debiaskit's attention sink), which is never scored:

  loglikelihood(context, continuation)  sum over the continuation's tokens of log p(token | everything before), and
      whether each is its prediction's argmax. An empty context conditions on the anchor alone (lm-eval's
      prefix_token_id); a context too long for n_ctx is cut from the left, after the anchor.
  loglikelihood_rolling(text)           the text's log-likelihood over disjoint windows (lm-eval's
      get_rolling_token_windows with context_len 1): each window is the anchor plus at most n_ctx - 1 tokens of
      text, a window after the first starting with the last token of the one before, so every token is predicted
      exactly once (lm-eval's windows start mid-text with no BOS; these start with the anchor).
  generate_until(context, gen_kwargs)   `debiaskit.generation.sample_continuations` for max_gen_toks tokens
      (greedy, or at the task's temperature when it sets do_sample), cut at the first stop string (`until`, plus
      the end-of-sequence text). Every new token is a full forward (no key-value cache) and a row stops early only
      at the end-of-sequence token, so generation tasks are slow: use --limit.

Log-likelihoods come from `debiaskit.evaluator.continuation_log_likelihoods`, the same batched code that scores
CrowS-Pairs, so lm-eval's `crows_pairs_english_gender` and `debiaskit.crows_pairs` agree pair for pair.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, make_table

from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE, continuation_log_likelihoods
from debiaskit.generation import sample_continuations
from debiaskit.method import LogitsTransform
from debiaskit.model import LoadedModel

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for generate_until tasks that set no max_gen_toks
TASK_LIST_HINT = ("`lm-eval ls tasks` lists the accepted names (add `--include_path DIR` for a folder of task "
                  "YAMLs, given here as --include-path); a task YAML file's path is accepted too")


class DebiasKitLM(TemplateLM):
    """lm-eval's model interface over `lm` as it is now: hooks installed, and `transform` applied to the logits."""

    backend = "causal"

    def __init__(self, lm: LoadedModel, transform: LogitsTransform | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, seed: int = 0) -> None:
        super().__init__()
        if lm.anchor_token_id is None:
            raise DebiasKitError(f"{lm.name}'s tokenizer has neither <|endoftext|> nor a BOS token; lm-eval needs one "
                                 "as the prefix of an empty context")
        self.lm, self.transform, self.seed = lm, transform, seed
        self.tokenizer = lm.tokenizer
        self.batch_size, self.max_gen_toks = batch_size, max_gen_toks

    @property
    def eot_token_id(self) -> int:
        eos: int | None = self.tokenizer.eos_token_id
        return eos if eos is not None else self.prefix_token_id

    @property
    def prefix_token_id(self) -> int:
        assert self.lm.anchor_token_id is not None
        return self.lm.anchor_token_id

    @property
    def max_length(self) -> int:
        n_ctx: int = self.lm.model.cfg.n_ctx
        return n_ctx

    @property
    def device(self) -> Any:
        return self.lm.device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", self.lm.name)).replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        """Added to lm-eval's results["config"]."""
        return {"debiaskit_model": self.lm.name,
                "model_num_parameters": sum(p.numel() for p in self.lm.model.parameters())}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids of `string`, after the anchor unless add_special_tokens is False (or it already starts with it)."""
        ids = list(self.tokenizer(string, add_special_tokens=False)["input_ids"])
        if add_special_tokens is False or ids[:1] == [self.prefix_token_id]:
            return ids
        return [self.prefix_token_id, *ids]

    def tok_decode(self, tokens: int | Sequence[int], skip_special_tokens: bool = True) -> str:
        text: str = self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)
        return text

    def _sequence(self, context: Sequence[int], continuation: Sequence[int]) -> list[int]:
        """The anchor, then context and continuation, the context cut from the left to fit the model."""
        if len(continuation) > self.max_length - 1:
            raise DebiasKitError(f"a continuation of {len(continuation)} tokens does not fit {self.lm.name} "
                                 f"({self.max_length} tokens, one of them the anchor)")
        body = [*context, *continuation]
        if body[:1] == [self.prefix_token_id]:
            body = body[1:]
        return [self.prefix_token_id, *body[-(self.max_length - 1):]]

    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """(log p(continuation | context), continuation is greedy) per (cache key, context ids, continuation ids)."""
        if not requests:
            return []
        sequences = [self._sequence(context, continuation) for _, context, continuation in requests]
        log_likelihoods, greedy = continuation_log_likelihoods(
            self.lm, sequences, [len(continuation) for _, _, continuation in requests], self.transform,
            self.batch_size, label="lm-eval loglikelihood")
        answers = [(float(value), bool(hit)) for value, hit in zip(log_likelihoods, greedy)]
        for (key, _, _), answer in zip(requests, answers):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[None, list[int], list[int]]] = []
        counts = []
        for (text,) in (request.args for request in requests):
            # max_seq_len n_ctx - 2: a window's tokens plus its last target plus the anchor fill n_ctx
            pieces = get_rolling_token_windows(token_list=self.tok_encode(text, add_special_tokens=False),
                                               prefix_token=self.prefix_token_id, max_seq_len=self.max_length - 2,
                                               context_len=1)
            found = [(None, context, continuation) for context, continuation in map(make_disjoint_window, pieces)]
            windows += found
            counts.append(len(found))
        scores = self._loglikelihood_tokens(windows)
        totals, start = [], 0
        for request, count in zip(requests, counts):
            totals.append(sum(value for value, _ in scores[start:start + count]))
            start += count
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, totals[-1])
        return totals

    def _fit_context(self, context: str, max_gen_toks: int) -> str:
        """`context`, its tokens cut from the left so the anchor, it and max_gen_toks new tokens fit n_ctx."""
        room = self.max_length - 1 - max_gen_toks
        if room < 1:
            raise DebiasKitError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt in {self.lm.name}'s "
                                 f"{self.max_length} tokens")
        ids = self.tok_encode(context, add_special_tokens=False)
        return context if len(ids) <= room else self.tok_decode(ids[-room:], skip_special_tokens=False)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        by_settings: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_settings.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        results = [""] * len(requests)
        for indices in by_settings.values():
            settings = normalize_gen_kwargs(requests[indices[0]].args[1], self.max_gen_toks)
            until = handle_stop_sequences(settings.pop("until", None), eos=eos)
            max_gen_toks = settings.pop("max_gen_toks")
            temperature = float(settings.get("temperature", 0.0)) if settings.get("do_sample") else 0.0
            contexts = [self._fit_context(requests[i].args[0], max_gen_toks) for i in indices]
            order = sorted(range(len(indices)), key=lambda j: len(contexts[j]))  # similar lengths share a batch
            texts = sample_continuations(self.lm, [contexts[j] for j in order], self.transform,
                                         max_new_tokens=max_gen_toks, temperature=temperature, seed=self.seed,
                                         batch_size=self.batch_size)
            for j, (text,) in zip(order, texts):
                request = requests[indices[j]]
                results[indices[j]] = postprocess_generated_text(text, until, None)
                self.cache_hook.add_partial("generate_until", request.args, results[indices[j]])
        return results


def task_manager(include_paths: Sequence[Path] = (), include_defaults: bool = True) -> Any:
    """lm-eval's TaskManager over its own tasks (unless not include_defaults) and the folders given."""
    from lm_eval.tasks import TaskManager

    for path in include_paths:
        if not Path(path).is_dir():
            raise DebiasKitError(f"--include-path {path}: not a folder; pass a folder of lm-eval task YAML files")
    return TaskManager(include_path=[str(p) for p in include_paths] or None, include_defaults=include_defaults)


def check_tasks(manager: Any, names: Sequence[str]) -> list[str]:
    """The task names (glob patterns and task YAML paths allowed) as lm-eval resolves them; an unknown one is a
    DebiasKitError. Each task is built once, so a missing or malformed data file is found before the model loads."""
    resolved: list[str] = []
    unknown = []
    for name in names:
        if name.endswith(".yaml") and Path(name).is_file():
            resolved.append(str(Path(name).resolve()))
            continue
        matches = manager.match_tasks([name])
        if not matches:
            unknown.append(name)
        resolved += [match for match in matches if match not in resolved]
    if unknown:
        raise DebiasKitError(f"unknown lm-eval task(s): {', '.join(unknown)}; {TASK_LIST_HINT}")
    if not resolved:
        raise DebiasKitError(f"no lm-eval task given; {TASK_LIST_HINT}")
    for name in resolved:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                manager.load([name])
        except Exception as error:  # noqa: BLE001 - whatever building the task raises is about the task or its data
            raise DebiasKitError(f"cannot load lm-eval task {name}: {type(error).__name__}: {error}. Its data must "
                                 "be readable as its dataset_path says: a hub data set needs the Hugging Face hub "
                                 "(or its cache, with HF_DATASETS_OFFLINE=1), a local one its files (dataset_path: "
                                 "csv with dataset_kwargs: {data_files: FILE}), with the columns its doc_to_* and "
                                 "process_docs read") from None
    return resolved


def evaluate_applied(lm: LoadedModel, transform: LogitsTransform | None, tasks: Sequence[str], manager: Any,
                     limit: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> dict[str, Any]:
    """lm-eval's results for `tasks` on `lm` as it is now (call it with the method applied); no per-sample log.
    lm-eval's own random seeds (few-shot sampling) keep their defaults; `seed` seeds sampled generation."""
    from lm_eval import simple_evaluate

    model = DebiasKitLM(lm, transform, batch_size=batch_size, seed=seed)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for results
        results: dict[str, Any] | None = simple_evaluate(model=model, tasks=list(tasks), task_manager=manager,
                                                         limit=limit, log_samples=False)
    assert results is not None  # None only on a distributed worker of rank > 0
    return results


def results_table(results: dict[str, Any]) -> str:
    """lm-eval's own table of the tasks (and of the groups, when there are any)."""
    table: str = make_table(results)
    if results.get("groups"):
        table += "\n" + make_table(results, "groups")
    return table


def jsonable_results(results: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's results as JSON holds them (its functions and numpy numbers as lm-eval itself writes them)."""
    from lm_eval.utils import handle_non_serializable

    loaded: dict[str, Any] = json.loads(json.dumps(results, default=handle_non_serializable))
    return loaded
