"""`compare -m NAME@LABEL`: one method run twice under its own labels and options, on a tiny local Llama folder."""

import json
from pathlib import Path

from click.testing import CliRunner

from debiaskit.cli import cli

EXAMPLES = str(Path(__file__).resolve().parents[1] / "examples" / "plugins")


def invoke(*args):
    return CliRunner().invoke(cli, ["--plugins-dir", EXAMPLES, *args], catch_exceptions=False)


def test_a_method_runs_twice_under_labels_with_its_own_options(tiny_llama_dir):
    result = invoke("compare", "--model", str(tiny_llama_dir), "--device", "cpu", "--format", "json",
                    "-m", "pronoun-projection@first", "-m", "pronoun-projection@second",
                    "-o", "pronoun-projection@first.layer=0", "-o", "pronoun-projection@second.layer=1")
    assert result.exit_code == 0, result.stderr
    rows = {row["method"]: row for row in json.loads(result.stdout)["methods"]}
    assert list(rows) == ["none", "pronoun-projection@first", "pronoun-projection@second"]
    assert rows["pronoun-projection@first"]["kl"] != rows["pronoun-projection@second"]["kl"]  # different layers


def test_labels_are_checked_before_the_model_loads():
    result = invoke("compare", "--model", "no-such-model", "-m", "no-such-method@x")
    assert result.exit_code == 2 and "no-such-method" in result.stderr
    result = invoke("compare", "--model", "no-such-model", "-m", "pronoun-projection@")
    assert result.exit_code == 2 and "empty label" in result.stderr
    result = invoke("compare", "--model", "no-such-model", "-m", "pronoun-projection@a",
                    "-o", "pronoun-projection@b.layer=1")
    assert result.exit_code == 2 and "'pronoun-projection@b', which is not among the methods" in result.stderr
    result = invoke("compare", "--model", "no-such-model", "-m", "pronoun-projection@a",
                    "-o", "pronoun-projection@a.depth=1")
    assert result.exit_code == 2 and "unknown option pronoun-projection@a.depth" in result.stderr
