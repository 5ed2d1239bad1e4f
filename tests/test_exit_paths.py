"""Every exit path is honest: a reused or busy --out folder, results edited on disk, a folder that stops being
writable, Ctrl-C at any stage, a broken report input, a plugin command shadowing a built-in. Each case ends with a
clear message and the right exit code, and never with a stale or invented number."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from debiaskit.cli import cli
from debiaskit.run_dir import MANIFEST_FILE, PROMPTS_FILE, SUMMARY_FILE, run_lock
from tests.conftest import assert_same_rows

JOBS = "occupation,group,pct_women\nnurse,female,91.3\nsecretary,female,93\nplumber,male,2.3\nmechanic,male,1.8\n"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    path = tmp_path_factory.mktemp("jobs") / "jobs.csv"
    path.write_text(JOBS)
    return path


def compare(model_dir, jobs, out, *extra):
    return invoke("compare", "--model", model_dir, "--device", "cpu", "--dataset", f"csv:{jobs}", "--folds", "2",
                  "--bootstrap", "0", "--professions", "none", "-m", "none", "-m", "logit-rebalance", "--out", out,
                  *extra)


@pytest.fixture(scope="module")
def finished(tiny_llama_dir, jobs, tmp_path_factory):
    """A finished two-method run (seed 0)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = compare(tiny_llama_dir, jobs, out)
    assert result.exit_code == 0, result.output
    return out


def rows(directory):
    return [{k: v for k, v in row.items() if k != "seconds"}
            for row in json.loads((directory / SUMMARY_FILE).read_text())["methods"]]


def test_an_out_folder_holding_a_run_is_refused_unless_force(tiny_llama_dir, jobs, finished, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in (SUMMARY_FILE, MANIFEST_FILE, PROMPTS_FILE):
        (out / name).write_bytes((finished / name).read_bytes())
    refused = compare(tiny_llama_dir, jobs, out, "--seed", "1")
    assert refused.exit_code == 2
    assert "already holds a run" in refused.output and "--force" in refused.output and "--resume" in refused.output
    assert rows(out) == rows(finished)  # nothing already computed is lost
    replaced = compare(tiny_llama_dir, jobs, out, "--seed", "1", "--force")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / SUMMARY_FILE).read_text())["seed"] == 1
    assert "--force" not in json.loads((out / MANIFEST_FILE).read_text())["command"]
    both = invoke("compare", "--resume", out, "--force")
    assert both.exit_code == 2 and "pass one of them" in both.output


def test_a_second_run_into_a_busy_folder_is_refused(tiny_llama_dir, jobs, tmp_path):
    out = tmp_path / "busy"
    with run_lock(out):
        result = compare(tiny_llama_dir, jobs, out)
    assert result.exit_code == 2 and "is in use" in result.output
    assert not (out / SUMMARY_FILE).exists()


def test_resume_reruns_a_method_whose_results_were_edited(finished, tmp_path):
    out = tmp_path / "edited"
    out.mkdir()
    for path in finished.iterdir():
        if path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
    prompts = (out / PROMPTS_FILE).read_text().splitlines()
    edited = next(i for i, line in enumerate(prompts) if ",logit-rebalance," in f",{line},")
    prompts[edited] = prompts[edited].replace("0.", "0.9", 1)
    (out / PROMPTS_FILE).write_text("\n".join(prompts) + "\n")
    resumed = invoke("compare", "--resume", out)
    assert resumed.exit_code == 0, resumed.output
    assert "logit-rebalance runs again" in resumed.output and "prompts.csv" in resumed.output
    assert "none runs again" not in resumed.output
    # the edit (a probability raised by 0.9) is gone: the method was scored again, the same to float rounding (its
    # forward starts from residuals the baseline kept in one run, from its own in the other)
    scored = pd.read_csv(out / PROMPTS_FILE)
    assert np.allclose(scored[["p_male", "p_female"]], pd.read_csv(finished / PROMPTS_FILE)[["p_male", "p_female"]],
                       rtol=0, atol=1e-6)
    assert_same_rows(rows(finished), rows(out))


def test_a_folder_that_stops_being_writable_still_prints_the_table_and_exits_1(tiny_llama_dir, jobs, tmp_path,
                                                                              monkeypatch):
    import debiaskit.commands.compare as command

    calls = []

    def fails_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise PermissionError(13, "Permission denied", str(tmp_path / "run" / PROMPTS_FILE))
        return real(*args, **kwargs)

    real = command.write_run
    monkeypatch.setattr(command, "write_run", fails_second_time)
    result = compare(tiny_llama_dir, jobs, tmp_path / "run")
    assert result.exit_code == 1
    assert "cannot save to" in result.output and "is incomplete" in result.output
    assert "logit-rebalance" in result.stdout and "Traceback" not in result.output
    assert [row["method"] for row in rows(tmp_path / "run")] == ["none"]


@pytest.mark.parametrize("stage", ["model load", "first method"])
def test_ctrl_c_exits_130_with_the_next_step(tiny_llama_dir, jobs, tmp_path, monkeypatch, stage):
    import debiaskit.commands.compare as command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "load_model" if stage == "model load" else "run_comparison", interrupted)
    result = compare(tiny_llama_dir, jobs, tmp_path / "run")
    assert result.exit_code == 130
    assert "nothing is saved in" in result.output and "Run the same command again" in result.output
    assert "Aborted" not in result.output and "--out DIR" not in result.output


def test_ctrl_c_in_any_other_command_exits_130(tmp_path, monkeypatch):
    import debiaskit.commands.report as command

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "write_report", interrupted)
    result = invoke("report", tmp_path)
    assert result.exit_code == 130 and "interrupted" in result.output and "Aborted" not in result.output


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe not utf-8", "cannot read"),
    (b"[1, 2]", "is not a JSON object"),
    (b'{"model": "m"}', "has no 'methods'"),
])
def test_report_on_a_broken_summary_exits_2_naming_the_file(tmp_path, content, says):
    (tmp_path / SUMMARY_FILE).write_bytes(content)
    result = invoke("report", tmp_path)
    assert result.exit_code == 2 and says in result.output and SUMMARY_FILE in result.output
    assert "Traceback" not in result.output


def test_report_on_a_sweep_without_its_keys_or_an_unwritable_folder_exits_2(tmp_path, finished, monkeypatch):
    (tmp_path / "sweep.json").write_text('{"model": "m", "points": []}')
    result = invoke("report", tmp_path)
    assert result.exit_code == 2 and "sweep.json is not as debiaskit writes it" in result.output

    import debiaskit.report as report

    def unwritable(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(report, "atomic_write_text", unwritable)
    result = invoke("report", finished)
    assert result.exit_code == 2 and "cannot write the report" in result.output and "Permission denied" in result.output


def test_the_report_of_an_incomplete_run_says_so_at_the_top(finished, tmp_path):
    for path in finished.iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    summary["methods"] = summary["methods"][:1]  # as if interrupted after the baseline
    (tmp_path / SUMMARY_FILE).write_text(json.dumps(summary))
    assert invoke("report", tmp_path).exit_code == 0
    top = (tmp_path / "report.md").read_text().splitlines()[:3]
    assert any(line.startswith("**Incomplete: 1 of 2 methods were not scored (logit-rebalance)") for line in top)
    complete = (finished / "report.md").read_text()
    assert "Incomplete" not in complete


def test_a_plugin_command_named_like_a_built_in_is_refused(tmp_path):
    (tmp_path / "shadow.py").write_text(
        "import click\nfrom debiaskit import hookimpl\n\n@click.command('compare')\ndef shadow():\n"
        "    click.echo('shadowed')\n\n@hookimpl\ndef register_commands(cli):\n    cli.add_command(shadow)\n")
    result = invoke("--plugins-dir", tmp_path, "compare", "--help")
    assert result.exit_code == 0 and "shadowed" not in result.output
    assert "'compare' has the name of a built-in command" in result.output


def test_occupation_csv_accepts_a_byte_order_mark_and_refuses_duplicate_columns_and_multi_line_names(tmp_path):
    from debiaskit.data import read_occupations_csv
    from debiaskit.errors import DebiasKitError

    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + JOBS.encode())
    assert [job.name for job in read_occupations_csv(bom, "x", "y").occupations][:2] == ["nurse", "secretary"]
    twice = tmp_path / "twice.csv"
    twice.write_text("occupation,group,pct_women,group\nnurse,female,91,male\n")
    with pytest.raises(DebiasKitError, match=r"twice.csv:1: column 'group' appears twice"):
        read_occupations_csv(twice, "x", "y")
    glued = tmp_path / "glued.csv"
    glued.write_text('occupation,group,pct_women\nnurse,female,91\n"plumb\ner",male,2\n')
    with pytest.raises(DebiasKitError, match=r"glued.csv:3: a quoted field runs over lines 3 to 4"):
        read_occupations_csv(glued, "x", "y")


def test_one_template_family_says_only_0_is_accepted():
    from debiaskit.data import TemplateFamily, template_split
    from debiaskit.errors import DebiasKitError

    family = TemplateFamily("single", "one template", ("The {job} said that",), ("he",), ("she",))
    with pytest.raises(DebiasKitError, match=r"accepted only 0 \(off\)"):
        template_split(family, 1, 0)


def test_an_unknown_name_in_the_plugin_filter_is_named(monkeypatch):
    monkeypatch.setenv("DEBIASKIT_LOAD_PLUGINS", "nosuch,leace")
    result = invoke("methods")
    assert result.exit_code == 0 and "names 'nosuch', which is neither a built-in plugin" in result.output
    assert "leace:" in result.stdout


def test_a_model_folder_without_config_json_is_refused_before_loading(tmp_path):
    result = invoke("compare", "--model", tmp_path, "-m", "none", "--professions", "none")
    assert result.exit_code == 2 and "has no config.json" in result.output
    assert "sentencepiece" not in result.output


def test_more_sae_latents_than_the_sae_has_are_refused(tiny_lm, tmp_path):
    from test_sae_ablation import save_tiny_sae

    from debiaskit.errors import DebiasKitError
    from debiaskit.method import FitContext
    from debiaskit.plugin_host import load_plugins

    host = load_plugins()
    method = host.methods.get("method", "sae-ablation")(sae=save_tiny_sae(tmp_path / "sae"), n_latents=100000)
    with pytest.raises(DebiasKitError, match=r"n_latents got 100000; .* has 256 latents, so it takes 1 to 256"):
        method.fit(FitContext(tiny_lm, (), host.template_family("pronoun"), seed=0))
