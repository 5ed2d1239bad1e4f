"""The hub path offline: `--model gpt2-small` and `-o sae-ablation.sae=gpt2-small-res-jb/SAE_ID`, resolved by
TransformerLens and SAELens from a Hugging Face cache under HF_HUB_OFFLINE=1 (tests/hub_cache.py lays it out). The
command runs in its own process, since huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_cache import SAE_ID, SAE_RELEASE, lay_out_hub_cache

DEBIASKIT = Path(sys.executable).parent / "debiaskit"
SAE = f"{SAE_RELEASE}/{SAE_ID}"


def offline_compare(hf_home, *args):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([str(DEBIASKIT), "compare", "--model", "gpt2-small", "--device", "cpu", "--bootstrap", "0",
                           "--folds", "2", "--professions", "none", "--format", "json", *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return lay_out_hub_cache(tmp_path_factory.mktemp("hf-home"))


def test_gpt2_small_and_a_release_sae_load_from_the_offline_cache(hub):
    done = offline_compare(hub, "-m", "none", "-m", "sae-ablation", "-o", f"sae-ablation.sae={SAE}")
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads(done.stdout)
    assert table["model"] == "gpt2-small"
    rows = {row["method"]: row for row in table["methods"]}
    assert rows["sae-ablation"]["status"] == "ok", rows["sae-ablation"].get("error")
    assert f"chose 10 latents of {SAE}" in done.stderr  # the SAE came from the release's cached repository
    assert rows["sae-ablation"]["kl"] > 0  # it changed the model


def test_an_empty_offline_cache_says_what_to_do(tmp_path):
    done = offline_compare(tmp_path, "-m", "none")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cannot fetch 'gpt2-small'" in done.stderr and "HF_HUB_OFFLINE=1" in done.stderr
