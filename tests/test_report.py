"""Report files: rounding and escaping in the tables, the figures, and the HTML page as a reader sees it (headless
Chromium); then `compare --out` and `sweep --out` on the tiny model write the same files."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from debiaskit.cli import cli
from debiaskit.report import write_report
from debiaskit.tables import headline_table, render

HEADER = {"model": "tiny", "dataset": "occupations40", "templates": "pronoun", "seed": 3, "folds": 5,
          "protocol": "held-out jobs", "bootstrap": 200, "seeds": []}
ROWS = [
    {"method": "none", "status": "ok", "stereotype_gap": 0.41234, "gap_ci_low": 0.36, "gap_ci_high": 0.4551,
     "gap_change_pct": 0.0, "change_ci_low": 0.0, "change_ci_high": 0.0, "within_noise": None, "definitional_acc": 0.9,
     "stereotype_retained": 1.0, "factual_retained": 1.0, "definitional_retained": 1.0, "agreement_share": 0.97,
     "kl": 0.0, "kl_gendered": 0.0, "ppl_ratio": 1.0, "bls_corr": 0.8, "protocol": "not fitted on jobs"},
    {"method": "my_method&co", "status": "ok", "stereotype_gap": 0.12345, "gap_ci_low": 0.1, "gap_ci_high": 0.15,
     "gap_change_pct": -70.06, "change_ci_low": -75.55, "change_ci_high": -64.0, "within_noise": False,
     "definitional_acc": 0.8125, "stereotype_retained": 0.4, "stereotype_retained_ci_low": 0.3,
     "stereotype_retained_ci_high": 0.5234, "factual_retained": 0.951, "definitional_retained": 0.6149,
     "agreement_share": 0.91234, "kl": 0.023456, "kl_gendered": 0.04561,
     "ppl_ratio": 1.0213, "bls_corr": 0.5, "protocol": "not fitted on jobs"},
    {"method": "broken", "status": "failed", "error": "RuntimeError: boom"},
]


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.skip("headless Chromium not found: install the Debian package `chromium` "
                    "(`make setup` does where apt-get is available)")
    return found


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "summary.json").write_text(render(HEADER, ROWS, "json"))
    rng = np.random.default_rng(0)
    jobs = [("nurse", "female", 90.0), ("secretary", "female", 93.0), ("pilot", "male", 5.0), ("plumber", "male", 2.0)]
    rows = [{"job": job, "group": group, "pct_women": pct, "template": t, "method": method,
             "p_female": share, "p_male": 1 - share}
            for method, pull in (("none", 0.0), ("my_method&co", 0.3))
            for job, group, pct in jobs for t in range(3)
            for share in [float(np.clip(pct / 100 + (0.5 - pct / 100) * pull + rng.normal(0, 0.02), 0.01, 0.99))]]
    pd.DataFrame(rows).to_csv(tmp_path / "prompts.csv", index=False)
    return tmp_path


def test_tables_are_rounded_and_escaped(run_dir):
    write_report(run_dir)
    tex = (run_dir / "table.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{tabular}{lrrlrrrrrrrrrl}" in tex
    assert (r"my\_method\&co & 0.123 [0.100, 0.150] & -70.1 [-75.5, -64.0] &  & 0.40 [0.30, 0.52] & 0.95 & 0.61 & "
            r"0.812 & 0.912 & 0.0235 & 0.0456 & 1.021 & 0.50") in tex
    assert "failed: RuntimeError: boom" in tex
    markdown = (run_dir / "report.md").read_text()
    assert "| none | 0.412 [0.360, 0.455] | 0.0 [0.0, 0.0] |" in markdown
    assert "model tiny · data set occupations40 · templates pronoun · seed 3" in markdown
    assert {p.name for p in (run_dir / "figures").iterdir()} == {"job_shares.png", "gap_kl.png", "selectivity.png"}


def test_html_page_renders_with_tables_and_figures(run_dir, tmp_path_factory):
    chromium = chromium_binary()
    page = write_report(run_dir)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<table>") == 1 and "my_method&amp;co" in dom and "within noise" not in dom.split("<table>")[0]
    assert dom.count("data:image/png;base64,") == 3
    shot = tmp_path_factory.mktemp("shot") / "page.png"
    subprocess.run([chromium, *flags, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1200)
    dark = pixels < 100  # text, table rules, plotted points
    assert dark.mean() > 0.005, "the rendered page is blank"
    assert dark[:400].any() and dark[600:].any(), "the table (top) or the figures (below) did not render"


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_compare_and_sweep_write_the_report(tiny_llama_dir, tmp_path):
    common = ["--model", str(tiny_llama_dir), "--device", "cpu"]
    result = invoke("compare", *common, "-m", "logit-rebalance", "--bootstrap", "50", "--heldout-templates", "4",
                    "--format", "json", "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["methods"]
    assert rows[0]["definitional_acc"] == pytest.approx(
        json.loads((tmp_path / "summary.json").read_text())["methods"][0]["definitional_acc"])
    assert rows[1]["gap_ci_low"] <= rows[1]["stereotype_gap"] <= rows[1]["gap_ci_high"]
    assert isinstance(rows[1]["within_noise"], bool) and rows[0]["within_noise"] is None
    assert "held-out templates (4 of 17)" in rows[1]["protocol"]
    controls = pd.read_csv(tmp_path / "controls.csv")
    assert (len(controls) == 2 * 40 * 4
            and set(controls["template"]) == set(json.loads(result.stdout)["heldout_templates"]))
    result = invoke("sweep", *common, "-m", "logit-rebalance", "--knob", "strength=0.5,1", "--heldout-templates", "4",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert [p["value"] for p in sweep["points"]] == [0.5, 1.0] and sweep["matched"][0]["settings"] == 2
    assert {"job_shares.png", "gap_kl.png", "frontiers.png"} <= {p.name for p in (tmp_path / "figures").iterdir()}
    assert "Matched cost" in (tmp_path / "report.html").read_text() and (tmp_path / "matched_cost.tex").is_file()
    assert invoke("report", str(tmp_path / "nowhere")).exit_code == 2


def test_terminal_table_keeps_headline_columns_and_lists_the_rest_below():
    rows = [*ROWS[:2], {**ROWS[2]}, {**ROWS[1], "method": "leace", "layers": "8", "probe_acc_after": 0.5}]
    lines = headline_table(HEADER, rows).splitlines()
    columns = lines[1].split()
    assert columns[:4] == ["method", "status", "stereotype_gap", "gap_95ci"] and columns[-1] == "protocol"
    assert "gap_ci_low" not in columns and "layers" not in columns
    assert lines[3].split()[:6] == ["my_method&co", "ok", "0.1235", "0.1000", "to", "0.1500"]
    assert "  broken: failed: RuntimeError: boom" in lines
    assert "  leace: layers=8; probe_acc_after=0.5000" in lines


def test_benchmark_columns_are_host_columns_and_get_their_own_report_table():
    from debiaskit.report import benchmark_table

    scored = {"crows_pct_stereotype": 53.8168, "crows_pct_stereotype_low": 47.7, "crows_pct_stereotype_high": 60.3,
              "crows_change": -1.15, "winogender_gap": 0.1541, "winogender_gap_change_pct": -20.04,
              "winogender_bls_corr": 0.526, "winogender_left_out": 3}
    rows = [{**ROWS[1], **scored}]
    lines = headline_table(HEADER, rows).splitlines()
    assert {"crows_pct_stereotype", "winogender_gap", "winogender_bls_corr"} <= set(lines[1].split())
    assert not any("crows" in line for line in lines[3:])  # not listed again as a method detail
    table = benchmark_table({"benchmarks": ["crows", "winogender"], "methods": rows})
    assert table.columns == ("method", "gap_change_pct", "crows_pct_stereotype", "crows_change", "winogender_gap",
                             "winogender_gap_change_pct", "winogender_bls_corr", "winogender_left_out")
    assert table.rows[0][2:] == ("53.8 [47.7, 60.3]", "-1.1", "0.154", "-20.0", "0.53", "3")
    assert benchmark_table({"benchmarks": [], "methods": rows}) is None
