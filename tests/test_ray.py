"""`compare` and `sweep` with `--executor ray`: the same tables as the local runs; on a simulated cluster of two
nodes (1 CPU each) a worker killed mid-cell costs only a retry and a --plugins-dir plugin reaches the workers; a
sweep starts its own Ray of 2 CPUs."""

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_sweep import DEV_JOBS, TEST_JOBS

from debiaskit.cli import cli
from tests.conftest import assert_same_numbers

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
DIES_ONCE = '''
import os
from pathlib import Path

from debiaskit import Method, Option, Touches, hookimpl


class DiesOnce(Method):
    """Kills its own worker process the first time it is fitted (as an out-of-memory kill would), then scores as the
    baseline does."""
    name = "dies-once"
    description = "kills its process the first time"
    options = (Option("marker", str, "", "file that says the process was already killed once"),)

    def fit(self, context):
        marker = Path(self.settings["marker"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(9)

    def touches(self, lm):
        return Touches()


@hookimpl
def register_methods(register):
    register(DiesOnce)
'''


def compare(model, out, *args):
    result = CliRunner().invoke(cli, ["--plugins-dir", str(out.parent / "ray_plugins"), "compare", "--model",
                                      str(model), "--device", "cpu", "--bootstrap", "20", "--folds", "2",
                                      "--format", "json", "--out", str(out), *args], catch_exceptions=False)
    assert result.exit_code == 1 and "1 method(s) failed: fails-in-apply" in result.output, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def runs(tiny_llama_dir, tmp_path_factory):
    """The same methods scored locally and on Ray with two workers; on Ray, dies-once kills its worker once."""
    base = tmp_path_factory.mktemp("ray")
    plugins = base / "ray_plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "examples" / "plugins" / "pronoun_projection.py", plugins)
    shutil.copy(ROOT / "tests" / "plugins_for_tests" / "failing.py", plugins)
    (plugins / "dies_once.py").write_text(DIES_ONCE)
    methods = ["-m", "none", "-m", "fails-in-apply", "-m", "logit-rebalance", "-m", "leace", "-m", "pronoun-projection",
               "-o", "pronoun-projection.layer=1", "-o", "leace.layers=1", "-m", "dies-once"]
    (base / "local-marker").write_text("already")  # locally dies-once must not kill the test process
    local = compare(tiny_llama_dir, base / "local", *methods, "-o", f"dies-once.marker={base / 'local-marker'}")
    with two_node_cluster():
        on_ray = compare(tiny_llama_dir, base / "ray", *methods, "-o", f"dies-once.marker={base / 'ray-marker'}",
                         "--executor", "ray", "--workers", "2")
    return local, on_ray, base


@contextlib.contextmanager
def two_node_cluster():
    """Ray joined to a `ray.cluster_utils.Cluster` of two nodes on this machine, one CPU each (so the two workers run
    on different nodes); debiaskit finds Ray running, uses it and leaves it to its starter."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    try:
        assert len([node for node in ray.nodes() if node["Alive"]]) == 2
        yield
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_ray_table_equals_the_local_table(runs):
    local, on_ray, _ = runs
    assert [r["method"] for r in on_ray["methods"]] == [r["method"] for r in local["methods"]]
    for here, there in zip(local["methods"], on_ray["methods"]):
        if here["method"] == "fails-in-apply":  # a cell that raises is a failed row, as locally
            assert (there["status"], there["error"]) == (here["status"], here["error"]) == (
                "failed", "RuntimeError: apply exploded"), there
            continue
        assert there["status"] == "ok", there["error"]
        assert_same_numbers(here, there, at_least=21)


def test_a_killed_worker_costs_one_retry_and_the_run_dir_is_resumable(runs):
    _, on_ray, base = runs
    assert (base / "ray-marker").is_file()  # the first try of dies-once killed its worker; the retry scored it
    assert {r["method"]: r["status"] for r in on_ray["methods"]}["dies-once"] == "ok"
    summary = json.loads((base / "ray" / "summary.json").read_text())
    assert [r["method"] for r in summary["methods"]] == [r["method"] for r in on_ray["methods"]]


def sweep(model, out, *args):
    dev, test = out.parent / "dev.csv", out.parent / "test.csv"
    dev.write_text(DEV_JOBS)
    test.write_text(TEST_JOBS)
    knobs = ["-m", "logit-rebalance", "--knob", "logit-rebalance.strength=0,0.5,1", "--knob",
             "logit-rebalance.counter_balance=false,true", "-m", "leace", "-o", "leace.layers=1", "--knob",
             "leace.blend=0.5,1"]  # 3 x 2 + 2 = 8 settings
    result = CliRunner().invoke(cli, ["sweep", "--model", str(model), "--device", "cpu", "--heldout-templates", "15",
                                      "--professions", "none", *knobs, "--dev", f"csv:{dev}", "--dataset",
                                      f"csv:{test}", "--keep", "0", "--budget", "10", "--out", str(out), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "frontier_area" in result.stdout and "CellWorker" not in result.stdout  # Ray's logs go to stderr
    return json.loads((out / "sweep.json").read_text())


def test_a_sweep_on_ray_equals_the_local_sweep(tiny_llama_dir, tmp_path):
    local = sweep(tiny_llama_dir, tmp_path / "local")
    on_ray = sweep(tiny_llama_dir, tmp_path / "ray", "--executor", "ray", "--workers", "2")
    assert len(on_ray["points"]) == 8 and len(on_ray["chosen"]) == 2
    for part in ("points", "chosen", "matched"):
        assert [(r["method"], r.get("value")) for r in on_ray[part]] == [
            (r["method"], r.get("value")) for r in local[part]]
        for here, there in zip(local[part], on_ray[part]):
            assert there.get("status", "ok") == "ok", there.get("error")
            assert_same_numbers(here, there)


def test_two_models_on_ray_equal_the_local_run(two_tiny_llama_dirs, tmp_path):
    """Each model's rows on actors of its own, equal to the local run's. On a Ray of one CPU, asked for two workers
    per model, one actor runs at a time: the second model waits until the first model's actor ends."""
    import ray

    words = [word for model in two_tiny_llama_dirs for word in ("--model", str(model))]
    args = ["compare", *words, "--device", "cpu", "--bootstrap", "20", "--professions", "none", "--folds", "2",
            "-m", "none", "-m", "logit-rebalance", "-m", "leace", "-o", "leace.layers=1", "--format", "json"]
    local = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "local")], catch_exceptions=False)
    ray.init(num_cpus=1)
    try:
        on_ray = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ray"), "--executor", "ray", "--workers",
                                          "2"], catch_exceptions=False)
    finally:
        ray.shutdown()
    assert local.exit_code == 0 and on_ray.exit_code == 0, on_ray.output
    here, there = json.loads(local.stdout)["methods"], json.loads(on_ray.stdout)["methods"]
    assert [(r["model"], r["method"]) for r in there] == [(r["model"], r["method"]) for r in here] and len(here) == 6
    for row, ray_row in zip(here, there):
        assert_same_numbers(row, ray_row)
    assert (tmp_path / "ray" / "tiny-b" / "summary.json").is_file() and (tmp_path / "ray" / "report.html").is_file()


def test_bad_input_found_on_the_workers_is_the_same_usage_error(tiny_llama_dir, tmp_path):
    """On Ray the driver loads no model: each model's first actor checks every method, before any row runs."""
    args = ["compare", "--model", str(tiny_llama_dir), "--device", "cpu", "-m", "leace", "-o", "leace.layers=7",
            "--out", str(tmp_path / "run")]
    local = CliRunner().invoke(cli, args)
    on_ray = CliRunner().invoke(cli, [*args, "--executor", "ray"])
    assert local.exit_code == on_ray.exit_code == 2, on_ray.output
    said = [line for line in local.output.splitlines() if line.startswith("Error:")]
    assert said and said == [line for line in on_ray.output.splitlines() if line.startswith("Error:")]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_plugins_folder_reaches_workers_that_do_not_have_it(tmp_path):
    """The --plugins-dir folder travels in Ray's runtime environment: a worker loads its plugin even when the folder
    is gone from the path the driver named (as on another machine)."""
    import ray

    from debiaskit.ray_executor import Pool, ray_session, worker_plugins_dir

    folder = tmp_path / "shipped_plugins"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "plugins" / "pronoun_projection.py", folder)

    @ray.remote(num_cpus=1)
    def methods_seen(plugins_dir):
        from debiaskit.plugin_host import load_plugins

        found = worker_plugins_dir(plugins_dir)
        return str(found), list(load_plugins(found).methods.things)

    with ray_session(Pool(plugins_dir=folder)):
        folder.rename(tmp_path / "moved")  # the workers can only find the copy Ray packed when it started
        found, methods = ray.get(methods_seen.remote(folder))
    assert "pronoun-projection" in methods and found != str(folder)
