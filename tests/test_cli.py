"""The command line on a tiny local Llama folder: the JSON contract, output files, errors, contained failures."""

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from debiaskit.cli import cli
from debiaskit.model import DEVICE_CHOICES, DTYPES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = str(ROOT / "examples" / "plugins")
FAILING = str(ROOT / "tests" / "plugins_for_tests")
JSON_KEYS = {"method", "status", "error", "stereotype_gap", "abs_bias", "bls_corr", "gender_mass", "gap_change_pct",
             "kl", "ppl_ratio", "seconds"}


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def json_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = invoke("--plugins-dir", EXAMPLES, "compare", "--model", str(tiny_llama_dir), "--device", "cpu",
                    "-m", "pronoun-projection", "-o", "pronoun-projection.layer=1", "--format", "json",
                    "--out", str(out))
    return result, out


def test_json_contract(json_run):
    result, _ = json_run
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"model", "dataset", "device", "seed"} <= set(report)
    assert [m["method"] for m in report["methods"]] == ["none", "pronoun-projection"]  # baseline first, added
    for row in report["methods"]:
        assert JSON_KEYS <= set(row) and row["status"] == "ok" and row["error"] is None
    assert report["methods"][0]["gap_change_pct"] == 0 and report["methods"][0]["kl"] == pytest.approx(0, abs=1e-9)
    assert report["methods"][1]["kl"] > 0


def test_out_dir_holds_prompts_summary_and_manifest(json_run):
    result, out = json_run
    names = {p.name for p in out.iterdir()}
    assert {"prompts.csv", "summary.csv", "summary.json", "manifest.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and "torch" in manifest["versions"] and "compare" in manifest["command"]
    assert manifest["methods"][1] == {"method": "pronoun-projection", "options": {"layer": "1"}}
    prompts = (out / "prompts.csv").read_text().splitlines()
    assert len(prompts) == 1 + 2 * 40 * 17


def test_markdown_and_latex_formats(tiny_llama_dir):
    for fmt, marker in (("markdown", "| method |"), ("latex", r"\toprule")):
        result = invoke("compare", "--model", str(tiny_llama_dir), "--device", "cpu", "-m", "none", "--format", fmt)
        assert result.exit_code == 0 and marker in result.stdout


def test_failing_methods_are_contained(tiny_llama_dir):
    result = invoke("--plugins-dir", FAILING, "compare", "--model", str(tiny_llama_dir), "--device", "cpu",
                    "-m", "fails-in-fit", "-m", "none", "-m", "fails-in-apply", "--format", "json")
    assert result.exit_code == 1
    rows = {row["method"]: row for row in json.loads(result.stdout)["methods"]}
    assert rows["none"]["status"] == "ok"
    assert rows["fails-in-fit"]["status"] == "failed" and "fit exploded" in rows["fails-in-fit"]["error"]
    assert rows["fails-in-apply"]["status"] == "failed" and "apply exploded" in rows["fails-in-apply"]["error"]
    assert "2 method(s) failed" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "nope"], "unknown method 'nope'; accepted: none"),
        (["-o", "none.depth=3"], "unknown option none.depth"),
        (["-o", "broken"], "method.key=value"),
        (["--dataset", "nope"], "unknown data set 'nope'; accepted: occupations40, csv, winogender"),
        (["--dataset", "csv:/no/such.csv"], "cannot read occupation file /no/such.csv"),
        (["--templates", "nope"], "unknown template family 'nope'; accepted: pronoun, question"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--out", "/proc/forbidden"], "cannot write to output directory /proc/forbidden"),
    ],
)
def test_bad_input_exits_2_with_what_is_accepted(args, message):
    result = invoke("compare", "--device", "cpu", *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_listing_commands():
    assert "none: baseline" in invoke("methods").stdout
    assert "occupations40" in invoke("datasets").stdout
    plugins = invoke("--plugins-dir", EXAMPLES, "plugins").stdout
    assert "debiaskit.plugins.none\tbuilt-in\tnone" in plugins and "pronoun_projection.py" in plugins


def test_every_command_that_loads_a_model_takes_model_device_and_dtype():
    context = click.Context(cli, info_name="debiaskit")
    context.params = {"plugins_dir": None}

    def walk(group, path):  # the commands as `debiaskit --help` lists them, plugin commands included
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            if isinstance(command, click.Group):
                yield from walk(command, (*path, name))
            else:
                yield " ".join((*path, name)), {param.name: param for param in command.params}

    commands = dict(walk(cli, ()))
    loading = {name: params for name, params in commands.items() if "model" in params or "models" in params}
    assert commands["compare"]["models"].multiple  # compare takes several models in one run
    assert {"compare", "sweep", "generate", "generation-eval", "leace-sweep", "locate", "sae train", "sae latents",
            "sae inspect", "steer"} <= set(loading)
    for name, params in loading.items():
        assert tuple(params["device"].type.choices) == DEVICE_CHOICES, name
        assert list(params["dtype"].type.choices) == list(DTYPES), name
