"""Matched-cost comparison: the frontier, the gap at a kl budget and the frontier area, on numbers worked by hand."""

import numpy as np
import pytest

from debiaskit.errors import DebiasKitError
from debiaskit.sweep import (
    choose_setting,
    frontier_area,
    gap_at_budget,
    matched_cost_rows,
    pareto_frontier,
    parse_budgets,
    parse_knob,
    setting_grid,
)


def point(kl, gap, value, retained=1.0, status="ok"):
    return {"method": "m", "status": status, "kl": kl, "stereotype_gap": gap, "knob": "k", "value": value,
            "definitional_retained": retained}


# baseline |gap| 0.4 at kl 0; (0.02, 0.35) and (0.05, 0.12) are beaten by (0.01, 0.3) and (0.03, 0.1)
POINTS = [point(0.01, 0.3, 1), point(0.03, -0.1, 2, retained=0.5), point(0.02, 0.35, 3), point(0.05, 0.12, 4)]


# the jobs a setting is chosen on, and the disjoint jobs it is scored on
DEV_JOBS = "occupation,group,pct_women\nnanny,female,95\ndancer,female,80\nboxer,male,10\nbutcher,male,20\n"
TEST_JOBS = "occupation,group,pct_women\nnurse,female,90\nmaid,female,88\npilot,male,5\nplumber,male,2\n"


def test_pareto_frontier_keeps_undominated_points_by_abs_gap():
    kl, gap = pareto_frontier([0.0] + [p["kl"] for p in POINTS], [0.4] + [p["stereotype_gap"] for p in POINTS])
    np.testing.assert_allclose(kl, [0.0, 0.01, 0.03])
    np.testing.assert_allclose(gap, [0.4, 0.3, 0.1])


def test_gap_at_budget_and_area_by_hand():
    kl, gap = np.array([0.0, 0.01, 0.03]), np.array([0.4, 0.3, 0.1])
    assert gap_at_budget(kl, gap, 0.02) == pytest.approx(0.2)  # halfway from 0.3 to 0.1
    assert gap_at_budget(kl, gap, 0.05) == pytest.approx(0.1)  # flat after the costliest frontier point
    # (0.35 * 0.01 + 0.2 * 0.02 + 0.1 * 0.02) / 0.05
    assert frontier_area(kl, gap, 0.05) == pytest.approx(0.19)
    assert frontier_area(kl, gap, 0.01) == pytest.approx(0.35)


def test_matched_cost_rows():
    rows, frontiers = matched_cost_rows(POINTS, baseline_gap=0.4, budgets=(0.02, 0.05))
    assert frontiers == {"m": [[0.0, 0.4], [0.01, 0.3], [0.03, 0.1]]}
    (row,) = rows
    assert row["settings"] == 4 and row["frontier_points"] == 2
    assert row["gap_reduction_pct_at_kl_0.02"] == pytest.approx(50.0)
    assert row["gap_reduction_pct_at_kl_0.05"] == pytest.approx(75.0)
    assert row["frontier_area"] == pytest.approx(0.19)


def test_parsing_knobs_and_budgets():
    assert parse_knob("factor=0,0.3", ["sae-ablation"]) == ("sae-ablation", "factor", ["0", "0.3"])
    assert parse_knob("leace.layers=4;8;4,8", ["leace", "x"]) == ("leace", "layers", ["4", "8", "4,8"])
    assert parse_budgets("0.02,0.05") == (0.02, 0.05)
    for bad, methods, message in (("factor=0", ["a", "b"], "with several methods name the method"),
                                  ("factor", ["a"], "expected key=v1,v2"),
                                  ("other.k=1", ["a"], "'other' is not among the methods swept")):
        with pytest.raises(DebiasKitError, match=message):
            parse_knob(bad, methods)
    with pytest.raises(DebiasKitError, match="above 0"):
        parse_budgets("0,-1")


def test_matched_cost_among_settings_that_keep_gender():
    # setting 2 (kl 0.03, |gap| 0.1) erases half of definitional gender: without it the frontier is
    # (0, 0.4), (0.01, 0.3), (0.05, 0.12), so at kl 0.02 |gap| = 0.3 - 0.18 / 4 = 0.255 and at 0.05 it is 0.12
    (row,), _ = matched_cost_rows(POINTS, baseline_gap=0.4, budgets=(0.02, 0.05), keep=0.9)
    assert row["settings_kept"] == 3
    assert row["gap_reduction_pct_at_kl_0.02_keep_0.9"] == pytest.approx(100 * (0.4 - 0.255) / 0.4)
    assert row["gap_reduction_pct_at_kl_0.05_keep_0.9"] == pytest.approx(70.0)
    assert row["gap_reduction_pct_at_kl_0.05"] == pytest.approx(75.0)


def test_failed_settings_are_left_out_of_frontiers():
    (row,), frontiers = matched_cost_rows([*POINTS, point(0.001, 0.0, 5, status="failed")], baseline_gap=0.4,
                                          budgets=(0.02,))
    assert row["settings"] == 4 and frontiers["m"][1] == [0.01, 0.3]


def test_choose_setting_within_budget_and_retention_floor():
    assert choose_setting(POINTS, "m", budget=0.05, keep=0.9)["value"] == 4  # 2 is better but erases gender
    assert choose_setting(POINTS, "m", budget=0.05, keep=0.4)["value"] == 2
    assert choose_setting(POINTS, "m", budget=0.02, keep=0.9)["value"] == 1
    assert choose_setting(POINTS, "m", budget=0.005, keep=0.9) is None


def test_two_knobs_of_one_method_give_their_grid():
    assert setting_grid([("factor", ["0", "0.3"]), ("n_latents", ["10", "20"])]) == [
        {"factor": "0", "n_latents": "10"}, {"factor": "0", "n_latents": "20"},
        {"factor": "0.3", "n_latents": "10"}, {"factor": "0.3", "n_latents": "20"}]


def test_sweep_chooses_on_dev_jobs_and_scores_the_choice_on_the_reported_ones(tiny_llama_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from debiaskit.cli import cli

    dev, test = tmp_path / "dev.csv", tmp_path / "test.csv"
    dev.write_text(DEV_JOBS)
    test.write_text(TEST_JOBS)
    common = ["--model", str(tiny_llama_dir), "--device", "cpu", "--heldout-templates", "15", "--professions", "none",
              "-m", "logit-rebalance", "--knob", "strength=0,1", "--knob", "counter_balance=false,true",
              "--dev", f"csv:{dev}", "--dataset", f"csv:{test}"]
    result = CliRunner().invoke(cli, ["sweep", *common, "--keep", "0", "--budget", "10",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    sweep = json.loads((tmp_path / "run" / "sweep.json").read_text())
    assert sweep["dataset"] == f"csv:{dev}" and len(sweep["points"]) == 4  # the grid of the two knobs
    (chosen,) = sweep["chosen"]
    best = min(sweep["points"], key=lambda p: abs(p["stereotype_gap"]))
    assert chosen["status"] == "ok" and (chosen["knob"], chosen["value"]) == (best["knob"], best["value"])
    assert chosen["dev_gap_change_pct"] == pytest.approx(best["gap_change_pct"])
    assert chosen["stereotype_gap"] != pytest.approx(best["stereotype_gap"])  # scored again, on the other jobs
    assert "Chosen on dev jobs" in (tmp_path / "run" / "report.md").read_text()
    refused = CliRunner().invoke(cli, ["sweep", *common, "--keep", "1e9"])  # a random model can retain 51x
    assert refused.exit_code == 1 and "no setting qualifies" in refused.output, refused.output
    assert CliRunner().invoke(cli, ["sweep", "-m", "none", "--knob", "x=1"]).exit_code == 2
