"""Bad input on the command line: each gets exit code 2 and a message saying what was wrong and what is accepted,
never a traceback. Some are caught before the model loads; the rest (an SAE or a layer that does not fit the model,
a target word the tokenizer splits) right after it loads, before any method is scored. And no pickle from a
user-supplied path is ever executed."""

import pickle

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sae_ablation import save_tiny_sae

from debiaskit import DebiasKitError
from debiaskit.cli import cli
from debiaskit.commands.support import plan_methods
from debiaskit.data import read_occupations_csv
from debiaskit.plugin_host import load_plugins

HEADER = "occupation,group,pct_women\n"
JOBS = HEADER + "nurse,female,91.3\nsecretary,female,93\nplumber,male,2.3\nmechanic,male,1.8\n"
ODD_FAMILY = """from debiaskit import TemplateFamily, hookimpl

@hookimpl
def register_templates(register):
    register(TemplateFamily("odd", "a target word no tokenizer has as one token", ("The {job} said that",),
                            ("he", "zxqvbnmgrtplk"), ("she",)))
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_bad_input(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize(
    "rows, fragments",
    [
        ("occupation,group\nnurse,female\n",
         [":1: missing column 'pct_women'", "expected columns occupation, group, pct_women"]),
        (JOBS + ",male,3\n", [":6: empty occupation name"]),
        (JOBS + "welder,male,lots\n", [":6: pct_women 'lots' for 'welder' is not a number; expected 0 to 100"]),
        (JOBS + "welder,male,120\n", [":6: pct_women '120' for 'welder' is outside 0 to 100"]),
    ],
)
def test_bad_data_file_names_file_and_line(tmp_path, rows, fragments):
    path = tmp_path / "jobs.csv"
    path.write_text(rows)
    assert_bad_input(invoke("compare", "--dataset", f"csv:{path}", "-m", "none"), str(path), *fragments)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["-o", "logit-rebalance.strength=lots", "-m", "logit-rebalance"],
         ["option logit-rebalance.strength got 'lots'; it takes float"]),
        (["-o", "leace.layers=one", "-m", "leace"], ["option leace.layers got 'one'; it takes int,int,..."]),
        (["-o", "sae-ablation.selection=best", "-m", "sae-ablation"], ["accepted: contrast, seed, topk"]),
        (["-o", "leace.colour=red", "-m", "leace"], ["unknown option leace.colour; leace accepts: layers, concept"]),
        (["-m", "leace", "-o", "none.x=1"],
         ["unknown option none.x; none accepts: (none: this method takes no options)"]),
        (["--dataset", "csv"], ["data set csv needs a file: --dataset csv:PATH"]),
        (["--folds", "30"], ["--folds 30: accepted 2 to 20"]),
        (["--benchmarks", "crows,stereoset"],
         ["unknown benchmark 'stereoset'; accepted: crows, winogender, all or none"]),
        (["-m", "leace", "-o", "leace.concept=occupations", "-o", "leace.edit_positions=word"],
         ["leace.edit_positions=word needs concept=definitional"]),
    ],
)
def test_bad_options_exit_2_before_the_model_loads(args, fragments, monkeypatch):
    monkeypatch.setattr("debiaskit.commands.compare.load_model",
                        lambda *a, **k: pytest.fail("the model loaded before the check"))
    assert_bad_input(invoke("compare", "--device", "cpu", *args), *fragments)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-m", "leace", "--knob", "blend=0.5", "--folds", "1", "-o", "leace.concept=occupations"],
         "--folds 1: accepted 2 to 20"),
        (["-m", "sae-ablation", "--knob", "factor=-1"], "option sae-ablation.factor got -1.0; it takes a number >= 0"),
        (["-m", "leace", "--knob", "nosuch=1"], "nosuch"),
        (["-m", "none", "--knob", "x=1"], "nothing to sweep"),
    ],
)
def test_bad_sweep_settings_exit_2_before_the_model_loads(args, fragment, monkeypatch):
    monkeypatch.setattr("debiaskit.commands.sweep.load_model",
                        lambda *a, **k: pytest.fail("the model loaded before the check"))
    assert_bad_input(invoke("sweep", "--device", "cpu", *args), fragment)


def test_missing_or_malformed_benchmark_data_exits_2_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr("debiaskit.commands.compare.load_model",
                        lambda *a, **k: pytest.fail("the model loaded before the check"))
    monkeypatch.setenv("DEBIASKIT_SHARED_DATA", str(tmp_path))
    assert_bad_input(invoke("compare", "--benchmarks", "crows"), "CrowS-Pairs needs crows_pairs/")
    (tmp_path / "crows_pairs").mkdir()
    (tmp_path / "crows_pairs" / "crows_pairs_anonymized.csv").write_text("sent_more,sent_less\na,b\n")
    assert_bad_input(invoke("compare", "--benchmarks", "crows"), "lacks the column(s) stereo_antistereo, bias_type")
    assert_bad_input(invoke("compare", "--benchmarks", "winogender"), "WinoGender")


def test_output_directory_that_is_a_file(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    assert_bad_input(invoke("compare", "--out", taken, "-m", "none"), "is a file")


@pytest.fixture(scope="module")
def sae_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("saes")
    return {"narrow": save_tiny_sae(root / "narrow", d_in=32),
            "deep": save_tiny_sae(root / "deep", hook_name="blocks.7.hook_resid_post")}


def test_inputs_that_do_not_fit_the_model_stop_before_any_method_runs(tiny_llama_dir, sae_dirs, tmp_path):
    model = ["--model", tiny_llama_dir, "--device", "cpu", "--dataset", "csv:" + write_jobs(tmp_path)]
    cases = [
        (["-m", "sae-ablation", "-o", f"sae-ablation.sae={sae_dirs['narrow']}"],
         ["method sae-ablation cannot run on", "expects d_in=32 at blocks.1.hook_resid_post", "has width 64 there"]),
        (["-m", "sae-ablation", "-o", f"sae-ablation.sae={sae_dirs['deep']}"],
         ["reads hook point 'blocks.7.hook_resid_post', which model", "does not have"]),
        (["-m", "sae-splice"], ["the embedded SAE was trained for smollm2"]),
        (["-m", "leace"], ["option leace.layers has 4;", "has blocks 0 to 1"]),
        (["-m", "leace", "-o", "leace.blend=2"], ["option leace.blend got 2.0; it takes a number from 0 to 1"]),
    ]
    for args, fragments in cases:
        result = invoke("compare", *model, *args)
        assert_bad_input(result, *fragments)
        assert "none:" not in result.stderr  # stopped before the baseline was scored


def test_target_word_that_is_not_one_token(tiny_llama_dir, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "odd.py").write_text(ODD_FAMILY)
    result = invoke("--plugins-dir", plugins, "compare", "--model", tiny_llama_dir, "--device", "cpu",
                    "--templates", "odd", "-m", "none")
    assert_bad_input(result, "target word 'zxqvbnmgrtplk' of template family 'odd' is not a single token",
                     "use words the model emits as one token")


class Trap:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickles_in_user_directories_are_never_executed(tiny_llama_dir, tmp_path):
    marker = tmp_path / "pickle-was-executed"
    sae_dir = tmp_path / "sae"
    sae_dir.mkdir()
    for name in ("sae_weights.pt", "sae_weights.pkl", "pytorch_model.bin"):
        (sae_dir / name).write_bytes(pickle.dumps(Trap(marker)))
    result = invoke("compare", "--model", tiny_llama_dir, "--device", "cpu", "--dataset", "csv:" + write_jobs(tmp_path),
                    "-m", "sae-ablation", "-o", f"sae-ablation.sae={sae_dir}")
    assert_bad_input(result, "is not an SAE in SAELens disk format: cfg.json is missing")

    model_dir = tmp_path / "pickled-model"
    model_dir.mkdir()
    for path in tiny_llama_dir.iterdir():
        if path.suffix != ".safetensors":
            (model_dir / path.name).write_bytes(path.read_bytes())
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps(Trap(marker)))
    result = invoke("compare", "--model", model_dir, "--device", "cpu", "-m", "none")
    assert_bad_input(result, f"cannot load a Hugging Face model from {model_dir}")
    assert not marker.exists()


def write_jobs(directory):
    path = directory / "jobs.csv"
    path.write_text(JOBS)
    return str(path)


@pytest.fixture(scope="module")
def host():
    return load_plugins()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_option_parsing_of_real_methods_raises_only_the_project_error(host, data):
    """`-m` and `-o` as the CLI parses them, with the registered methods' real option names and constructors."""
    names = list(host.methods.things)
    methods = data.draw(st.lists(st.sampled_from(names) | st.text(max_size=8), max_size=3))
    assignments = []
    for _ in range(data.draw(st.integers(0, 3))):
        method = data.draw(st.sampled_from(names) | st.text(max_size=6))
        options = [o.name for o in host.methods.things[method].options] if method in host.methods.things else []
        key = data.draw(st.sampled_from(options) | st.text(max_size=6) if options else st.text(max_size=6))
        value = data.draw(st.text(max_size=8) | st.sampled_from(["0", "-1", "1e9", "nan", "inf", "1,2", "true", ""]))
        separator = data.draw(st.sampled_from(["=", "", "=="]))
        assignments.append(f"{method}.{key}{separator}{value}")
    try:
        for _name, method_class, given_options in plan_methods(host, tuple(methods), tuple(assignments)):
            method_class(**given_options)
    except DebiasKitError:
        pass


FIELD = (st.sampled_from(["female", "male", "12.5", "1e3", "nan", "-4", "100", ""])
         | st.text(alphabet='abc ,"\n\r\t-.%é0', max_size=8))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=1, max_size=4), max_size=5), header=st.booleans())
def test_data_file_fuzz_with_a_valid_header_raises_only_the_project_error(tmp_path_factory, rows, header):
    """Rows of near-valid fields under the real header reach the row checks, which plain random text rarely does."""
    path = tmp_path_factory.mktemp("fuzz") / "jobs.csv"
    path.write_text((HEADER if header else "") + "\n".join(",".join(row) for row in rows), encoding="utf-8")
    try:
        read_occupations_csv(path, "x", "x")
    except DebiasKitError:
        pass


def test_ctrl_c_without_out_says_nothing_was_saved(tiny_llama_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("debiaskit.commands.compare.run_comparison", interrupted)
    result = invoke("compare", "--model", tiny_llama_dir, "--device", "cpu", "-m", "none")
    assert result.exit_code == 130
    assert "interrupted; nothing was saved (no --out). Run with --out DIR" in result.stderr


def test_plugin_problems_on_the_command_line(tmp_path):
    broken, typo = tmp_path / "broken", tmp_path / "typo"
    broken.mkdir(), typo.mkdir()
    (broken / "a_broken.py").write_text("import no_such_module_xyz\n")
    (broken / "b_odd.py").write_text(ODD_FAMILY)
    result = invoke("--plugins-dir", broken, "datasets")
    assert result.exit_code == 0 and "odd: a target word" in result.stdout  # the other file still loaded
    assert f"plugin failed to load: {broken / 'a_broken.py'}: ModuleNotFoundError" in result.stderr
    (typo / "typo.py").write_text("from debiaskit import hookimpl\n@hookimpl\ndef register_method(register):\n"
                                  "    pass\n")
    assert_bad_input(invoke("--plugins-dir", typo, "methods"), "register_method",
                     "debiaskit's hooks are register_commands")
