"""`compare --model A --model B`: one row per model and method, each model's run in its own folder (resumable on
its own) and a report with a panel per model; each model's rows equal that model's run alone."""

import json

from click.testing import CliRunner
from test_resume import JOBS

from debiaskit.cli import cli
from tests.conftest import assert_same_rows


def compare(tmp_path, models, out, *args):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(JOBS)
    words = [word for model in models for word in ("--model", str(model))]
    return CliRunner().invoke(cli, ["compare", *words, "--device", "cpu", "--dataset", f"csv:{jobs}", "--folds", "2",
                                    "--heldout-templates", "2", "--bootstrap", "20", "--professions", "none",
                                    "-m", "none", "-m", "logit-rebalance", "--format", "json", "--out", str(out),
                                    *args], catch_exceptions=False)


def without_timings(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_two_models_in_one_run(two_tiny_llama_dirs, tmp_path):
    first, second = two_tiny_llama_dirs
    both = compare(tmp_path, [first, second], tmp_path / "both")
    assert both.exit_code == 0, both.output
    table = json.loads(both.stdout)
    assert [(row["model"], row["method"]) for row in table["methods"]] == [
        (str(first), "none"), (str(first), "logit-rebalance"), (str(second), "none"),
        (str(second), "logit-rebalance")]
    alone = compare(tmp_path, [second], tmp_path / "alone")
    assert alone.exit_code == 0, alone.output
    in_both = json.loads((tmp_path / "both" / "tiny-b" / "summary.json").read_text())["methods"]
    assert without_timings(in_both) == without_timings(json.loads(alone.stdout)["methods"])
    assert in_both[0]["stereotype_gap"] != table["methods"][0]["stereotype_gap"]  # two models, two baselines
    report = (tmp_path / "both" / "report.md").read_text()
    assert f"### {first}" in report and f"### {second}" in report and "(tiny-a/report.md)" in report
    assert (tmp_path / "both" / "tiny-a" / "report.html").is_file()


def test_each_models_folder_resumes_on_its_own(two_tiny_llama_dirs, tmp_path):
    run = tmp_path / "run"
    both = compare(tmp_path, two_tiny_llama_dirs, run)
    assert both.exit_code == 0, both.output
    manifest = json.loads((run / "tiny-a" / "manifest.json").read_text())
    assert manifest["command"].count("--model") == 1 and str(run / "tiny-a") in manifest["command"]
    complete = json.loads((run / "tiny-a" / "summary.json").read_text())
    cut = {**complete, "methods": complete["methods"][:1]}  # as if stopped after tiny-a's baseline
    (run / "tiny-a" / "summary.json").write_text(json.dumps(cut))
    untouched = (run / "tiny-b" / "summary.json").read_text()
    top = CliRunner().invoke(cli, ["compare", "--resume", str(run)])
    assert top.exit_code == 2 and "one run per model (tiny-a, tiny-b)" in top.output, top.output
    resumed = CliRunner().invoke(cli, ["compare", "--resume", str(run / "tiny-a"), "--format", "json"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_rows(complete["methods"], json.loads(resumed.stdout)["methods"])
    assert (run / "tiny-b" / "summary.json").read_text() == untouched
    for again in (two_tiny_llama_dirs, two_tiny_llama_dirs[:1]):  # the same models, or one model over their folders
        refused = compare(tmp_path, again, run)
        assert refused.exit_code == 2 and "already holds a run" in refused.output, refused.output


def test_two_models_with_the_same_folder_name_are_refused(two_tiny_llama_dirs, tmp_path):
    import shutil

    copy = shutil.copytree(two_tiny_llama_dirs[0], tmp_path / "elsewhere" / "tiny-a")
    clash = compare(tmp_path, [two_tiny_llama_dirs[0], copy], tmp_path / "run")
    assert clash.exit_code == 2 and "would both be written to" in clash.output, clash.output
