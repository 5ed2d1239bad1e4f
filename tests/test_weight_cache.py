"""The converted-weights disk cache: a second load reads it, a corrupt or stale entry is rebuilt, never loaded."""

from __future__ import annotations

import shutil

import pytest
import torch

from debiaskit import model as model_module
from debiaskit.model import load_model
from debiaskit.weight_cache import CACHE_DIR_ENV, RECORD_FILE, WEIGHTS_FILE


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    model_module._converted_llama.cache_clear()  # the in-process cache would hide the disk cache
    yield tmp_path / "cache"
    model_module._converted_llama.cache_clear()


def entries(cache_dir):
    return sorted(path for path in (cache_dir / "models").iterdir() if not path.name.startswith("."))


def probe_logits(directory) -> torch.Tensor:
    lm = load_model(str(directory), device="cpu")
    batch = lm.make_batch([lm.encode("The nurse said that"), lm.encode("Hello")])
    with torch.no_grad():
        return lm.run(batch)


def forbid_conversion(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("converted again although a sound cache entry exists")

    monkeypatch.setattr(model_module, "_convert_llama", refuse)


def test_second_load_reads_the_cache_and_gives_identical_logits(tiny_llama_dir, cache_dir, monkeypatch):
    first = probe_logits(tiny_llama_dir)
    [entry] = entries(cache_dir)
    assert (entry / WEIGHTS_FILE).is_file() and (entry / RECORD_FILE).is_file()
    model_module._converted_llama.cache_clear()
    forbid_conversion(monkeypatch)
    assert torch.equal(probe_logits(tiny_llama_dir), first)


def test_corrupt_entry_is_detected_and_rebuilt(tiny_llama_dir, cache_dir, capsys):
    first = probe_logits(tiny_llama_dir)
    [entry] = entries(cache_dir)
    weights = entry / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside a tensor: the header still parses, the numbers would be wrong
    weights.write_bytes(bytes(data))
    model_module._converted_llama.cache_clear()
    assert torch.equal(probe_logits(tiny_llama_dir), first)
    assert "corrupt or incomplete" in capsys.readouterr().err
    [rebuilt] = entries(cache_dir)
    assert rebuilt.name == entry.name and (rebuilt / WEIGHTS_FILE).read_bytes() != bytes(data)


def test_missing_record_counts_as_absent(tiny_llama_dir, cache_dir):
    first = probe_logits(tiny_llama_dir)
    [entry] = entries(cache_dir)
    (entry / RECORD_FILE).unlink()
    model_module._converted_llama.cache_clear()
    assert torch.equal(probe_logits(tiny_llama_dir), first)
    assert (entry / RECORD_FILE).is_file()


def test_changed_source_gets_a_new_entry_and_the_stale_one_goes(tiny_llama_dir, cache_dir, tmp_path):
    copy = tmp_path / "tiny-llama"
    shutil.copytree(tiny_llama_dir, copy)
    probe_logits(copy)
    [old] = entries(cache_dir)
    config = copy / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    model_module._converted_llama.cache_clear()
    probe_logits(copy)
    [new] = entries(cache_dir)
    assert new.name != old.name and not old.exists()


def test_unwritable_cache_only_costs_speed(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker))
    model_module._converted_llama.cache_clear()
    try:
        logits = probe_logits(tiny_llama_dir)
    finally:
        model_module._converted_llama.cache_clear()
    assert torch.isfinite(logits).all()
    assert "could not cache converted weights" in capsys.readouterr().err
