"""Interruption loses nothing: a run stopped by a real Ctrl-C (SIGINT) leaves valid files and says how to resume;
`compare --resume DIR` finishes it without re-running finished methods, with the numbers of an uninterrupted run,
and refuses to mix results computed with other settings."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from debiaskit import compare
from debiaskit.cli import cli

PLUGINS = str(Path(__file__).resolve().parent / "plugins_for_tests")
JOBS = "occupation,group,pct_women\nnurse,female,91.3\nsecretary,female,93\nplumber,male,2.3\nmechanic,male,1.8\n"
METHODS = ["none", "logit-rebalance", "interrupts-once", "leace"]
RUN_FILES = {"manifest.json", "summary.json", "summary.csv", "prompts.csv", "controls.csv", "professions.csv"}


def compare_args(model_dir, jobs, out):
    methods = [word for name in METHODS for word in ("-m", name)]
    return ["--plugins-dir", PLUGINS, "compare", "--model", str(model_dir), "--device", "cpu",
            "--dataset", f"csv:{jobs}",
            "--folds", "2", "--heldout-templates", "2", "--bootstrap", "50", *methods, "-o", "leace.layers=1",
            "--out", str(out)]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def numbers(directory):
    """summary.json's rows without the timings, which are the only thing allowed to differ."""
    rows = json.loads((directory / "summary.json").read_text())["methods"]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


# A test run started in the background of a non-interactive shell (`make test &`) inherits SIGINT ignored, and Python
# then installs no KeyboardInterrupt handler; the child installs it itself, so Ctrl-C is tested however pytest started.
CHILD = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from debiaskit.cli import main; main()")


@pytest.fixture(scope="module")
def interrupted(tiny_llama_dir, tmp_path_factory):
    """A run in a subprocess, stopped with SIGINT while its third method is being fitted."""
    root = tmp_path_factory.mktemp("interrupted")
    jobs, marker, out = root / "jobs.csv", root / "marker", root / "run"
    jobs.write_text(JOBS)
    marker.write_text("wait")  # interrupts-once deletes it, then waits for the signal
    command = [sys.executable, "-c", CHILD, *compare_args(tiny_llama_dir, jobs, out)]
    process = subprocess.Popen(command, env={**os.environ, "DEBIASKIT_TEST_INTERRUPT": str(marker)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stderr, jobs, out


def test_ctrl_c_exits_130_and_says_how_to_resume(interrupted):
    returncode, stderr, _, out = interrupted
    assert returncode == 130, stderr
    assert f"saved in {out}" in stderr
    assert f"debiaskit --plugins-dir {PLUGINS} compare --resume {out}" in stderr
    assert "Traceback" not in stderr


def test_an_interrupted_run_leaves_valid_files(interrupted):
    _, _, _, out = interrupted
    assert {p.name for p in out.iterdir()} == RUN_FILES  # no half-written temporary file left behind
    assert [row["method"] for row in numbers(out)] == ["none", "logit-rebalance"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"command", "versions", "data_sha256", "seed", "device", "methods"} <= set(manifest)


def test_resume_finishes_without_rerunning_and_matches_an_uninterrupted_run(interrupted, tiny_llama_dir, tmp_path,
                                                                              monkeypatch):
    _, _, jobs, out = interrupted
    scored = []
    run = compare.Comparer.run
    monkeypatch.setattr(compare.Comparer, "run",
                        lambda self, name, *rest: scored.append(name) or run(self, name, *rest))
    resumed = invoke("--plugins-dir", PLUGINS, "compare", "--resume", out, "--format", "json")
    assert resumed.exit_code == 0, resumed.stderr
    assert scored == ["interrupts-once", "leace"]  # the finished methods were kept, not recomputed

    scored.clear()
    whole = invoke(*compare_args(tiny_llama_dir, jobs, tmp_path / "whole"))
    assert whole.exit_code == 0 and scored == METHODS
    assert numbers(out) == numbers(tmp_path / "whole")  # identical numbers, bit for bit
    for name in ("prompts.csv", "controls.csv"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert json.loads(resumed.stdout)["methods"][0]["method"] == "none"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "1"], "--seed: the run in {out} used 0, this one asks for 1"),
        (["-m", "none", "-m", "leace"], "--method: the run in {out} used none logit-rebalance interrupts-once leace"),
        (["-o", "leace.layers=0"], "--option: the run in {out} used leace.layers=1, this one asks for leace.layers=0"),
        (["--dataset", "occupations40"], "--dataset: the run in {out} used csv:"),
        (["--out", "{out}-other"], "a resumed run writes into {out} itself"),
    ],
)
def test_resume_refuses_other_settings(interrupted, args, message):
    _, _, _, out = interrupted
    result = invoke("--plugins-dir", PLUGINS, "compare", "--resume", out, *[a.format(out=out) for a in args])
    assert result.exit_code == 2 and message.format(out=out) in result.stderr
    assert f"debiaskit --plugins-dir {PLUGINS} compare --resume {out}" in result.stderr


def test_resume_refuses_another_plugins_folder_or_changed_data(interrupted):
    _, _, jobs, out = interrupted
    result = invoke("compare", "--resume", out)
    assert result.exit_code == 2 and f"--plugins-dir: the run used {PLUGINS}, this one (none)" in result.stderr
    original = jobs.read_text()
    jobs.write_text(original.replace("91.3", "90.0"))
    try:
        result = invoke("--plugins-dir", PLUGINS, "compare", "--resume", out)
    finally:
        jobs.write_text(original)
    assert result.exit_code == 2 and "the data set or templates changed on disk" in result.stderr


def test_resume_needs_a_run_directory(tmp_path):
    result = invoke("compare", "--resume", tmp_path)
    assert (result.exit_code == 2 and "nothing to resume" in result.stderr
            and "manifest.json is missing" in result.stderr)
