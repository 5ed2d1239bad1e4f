"""Model loading from a local folder, left-padded batching, and the evaluator honouring interventions."""

import numpy as np
import pytest
import torch

from debiaskit import DebiasKitError, hooked, load_model
from debiaskit.allocator import is_glibc, keep_freed_memory
from debiaskit.evaluator import NeutralText, length_sorted_batches, next_token_logits, score_prompts, sequence_log_probs
from debiaskit.plugin_host import load_plugins
from debiaskit.targets import target_tokens


def test_local_llama_folder_matches_hugging_face(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    lm = load_model(str(tiny_llama_dir), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    ids = torch.tensor([lm.encode("The nurse said that")])
    with torch.no_grad():
        ours = lm.run(lm.make_batch(ids.tolist()))
        theirs = hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_batched_left_padded_equals_one_at_a_time(tiny_lm):
    prompts = ["The nurse said that", "The crane operator went home because", "Hi"]
    sequences = [tiny_lm.encode(p) for p in prompts]
    batched = next_token_logits(tiny_lm, sequences, None, batch_size=8)
    single = torch.cat([next_token_logits(tiny_lm, [s], None) for s in sequences])
    assert torch.allclose(batched, single, atol=1e-4)


def test_editable_marks_real_tokens_but_not_the_anchor(tiny_lm):
    batch = tiny_lm.make_batch([[0, 5, 6, 7], [0, 9]])
    assert batch.editable.tolist() == [[False, True, True, True], [False, False, False, True]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_scored_and_generated_mark_where_predictions_are_read_and_what_the_model_sampled(tiny_lm):
    rows = [[5, 6, 7, 8], [5, 9]]  # an anchor-led 4-token and 2-token sequence: the second gets 2 pads
    prompt = tiny_lm.make_batch(rows)
    assert prompt.scored.tolist() == [[False, False, False, True], [False, False, False, True]]
    assert not prompt.generated.any()
    text = tiny_lm.make_batch(rows, score_every_position=True)
    assert torch.equal(text.scored, text.editable)  # every real position but the anchor
    sampled = tiny_lm.make_batch(rows, generated_counts=[2, 0])
    assert sampled.generated.tolist() == [[False, False, True, True], [False, False, False, False]]


def test_logits_transform_is_honoured(tiny_lm):
    family = load_plugins().templates.get("template family", "pronoun")
    targets = target_tokens(tiny_lm.tokenizer, family)

    def only_female(logits, batch):
        masked = torch.full_like(logits, -1e9)
        masked[..., list(targets.female_ids)] = logits[..., list(targets.female_ids)]
        return masked

    p_male, p_female = score_prompts(tiny_lm, ["The nurse said that"], targets, only_female)
    assert p_male[0] == pytest.approx(0.0, abs=1e-12) and p_female[0] == pytest.approx(1.0)


def test_activation_hooks_are_honoured_and_removed(tiny_lm):
    family = load_plugins().templates.get("template family", "pronoun")
    targets = target_tokens(tiny_lm.tokenizer, family)
    before = score_prompts(tiny_lm, ["The nurse said that"], targets, None)

    def zero_resid(activation, hook):
        return activation * 0

    with hooked(tiny_lm, [("blocks.1.hook_resid_post", zero_resid)]):
        during = score_prompts(tiny_lm, ["The nurse said that"], targets, None)
    after = score_prompts(tiny_lm, ["The nurse said that"], targets, None)
    assert not np.allclose(before, during)
    assert np.array_equal(before, after)
    with pytest.raises(RuntimeError), hooked(tiny_lm, [("blocks.1.hook_resid_post", zero_resid)]):
        raise RuntimeError("body failed")
    assert all(not hook.fwd_hooks for hook in tiny_lm.model.hook_dict.values())
    with pytest.raises(DebiasKitError, match="hook point 'blocks.9.nope'"):
        with hooked(tiny_lm, [("blocks.9.nope", zero_resid)]):
            pass


def test_neutral_text_cost_is_zero_for_the_baseline_and_positive_otherwise(tiny_lm):
    neutral = NeutralText(tiny_lm, text="The river runs past the old mill and the bridge. " * 20, chunk_tokens=32)
    baseline = neutral.record_baseline()
    assert baseline.kl == pytest.approx(0.0, abs=1e-9)
    shifted = neutral.cost(lambda logits, tokens: logits * 0.5)
    assert shifted.kl > 0 and shifted.nll != baseline.nll


def test_neutral_text_cost_equals_one_sequence_at_a_time(tiny_lm):
    # chunks of 32 tokens leave a shorter last chunk, so the batched pass pads; padding must not count
    neutral = NeutralText(tiny_lm, text="The river runs past the old mill and the bridge. " * 7, chunk_tokens=32)
    assert len({len(sequence) for sequence in neutral.sequences}) > 1
    neutral.record_baseline()
    got = neutral.cost(lambda logits, tokens: logits * 0.5)
    kl_terms, nll_terms = [], []
    with torch.no_grad():
        for sequence in neutral.sequences:
            logits = tiny_lm.model(torch.tensor([sequence]))[0, :-1].double()  # [pos - 1, vocab], no padding
            base, halved = torch.log_softmax(logits, -1), torch.log_softmax(logits * 0.5, -1)
            kl_terms += (base.exp() * (base - halved)).sum(-1).tolist()
            nll_terms += (-halved[torch.arange(len(sequence) - 1), torch.tensor(sequence[1:])]).tolist()
    assert len(kl_terms) == sum(len(sequence) - 1 for sequence in neutral.sequences)
    assert got.kl == pytest.approx(float(np.mean(kl_terms)), rel=1e-4)
    assert got.nll == pytest.approx(float(np.mean(nll_terms)), rel=1e-4)


def test_multi_token_target_variants_are_reported_and_unknown_words_rejected(tiny_lm):
    from debiaskit.data import TemplateFamily

    family = TemplateFamily("t", "t", ("The {job} said that",), ("he", "xqzv"), ("she",))
    with pytest.raises(DebiasKitError, match="'xqzv'.*not a single token"):
        target_tokens(tiny_lm.tokenizer, family)
    family = TemplateFamily("t", "t", ("The {job} said that",), ("he", "himself"), ("she", "herself"))
    targets = target_tokens(tiny_lm.tokenizer, family)
    assert targets.skipped_variants  # ' Himself' / ' Herself' are several tokens in SmolLM2's vocabulary


def test_unknown_model_and_device_errors():
    with pytest.raises(DebiasKitError, match="unknown model 'no-such-model'.*smollm2"):
        load_model("no-such-model", device="cpu")
    with pytest.raises(DebiasKitError, match="accepted: auto, cpu, cuda$"):
        load_model("smollm2", device="tpu")


def test_batches_group_sequences_of_similar_length_and_cover_each_index_once():
    sequences = [[1, 2, 3], [1], [1, 2], [1, 2, 3, 4, 5], [1, 2, 3, 4]]
    assert length_sorted_batches(sequences, 2) == [[1, 2], [0, 4], [3]]
    assert length_sorted_batches([], 2) == []


def test_sequence_log_probs_come_back_in_input_order_whatever_the_batching(tiny_lm):
    texts = ["The nurse said that she would be late for the meeting", "Hi", "The crane operator went home"]
    sequences = [tiny_lm.encode(text) for text in texts]
    batched = sequence_log_probs(tiny_lm, sequences, None, batch_size=2)  # sorted by length: not the input order
    for sequence, found in zip(sequences, batched):
        alone = sequence_log_probs(tiny_lm, [sequence], None, batch_size=1)[0]
        assert found.shape == (len(sequence) - 1, tiny_lm.model.cfg.d_vocab)
        assert torch.allclose(found, alone, atol=1e-5)


def test_freed_memory_is_kept_for_reuse_where_the_c_library_is_glibc():
    if not is_glibc():
        pytest.skip("mallopt's thresholds are glibc's")
    assert keep_freed_memory()
