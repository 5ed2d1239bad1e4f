"""The comparison's controls and statistics on the tiny model: held-out templates, seed reruns, intervals."""

from contextlib import contextmanager

import numpy as np
import pytest
from shared_data import needs_crows, needs_winogender

from debiaskit import Intervention, Method
from debiaskit.compare import Comparer
from debiaskit.data import template_split
from debiaskit.errors import DebiasKitError
from debiaskit.plugin_host import load_plugins
from debiaskit.targets import target_tokens


class SeededShe(Method):
    """Adds a seed-dependent logit to ' she' and records the templates it was fitted on."""

    name = "seeded-she"
    description = "test method with a random step"
    random_fit = True
    fitted_on: list[tuple[str, ...]] = []

    def fit(self, context):
        SeededShe.fitted_on.append(context.templates.templates)
        self.boost = float(np.random.default_rng(context.seed).uniform(0.5, 3.0))
        self.she = target_tokens(context.model.tokenizer, context.templates).female_ids[0]

    @contextmanager
    def apply(self, lm):
        def transform(logits, batch):
            logits = logits.clone()
            logits[..., self.she] += self.boost
            return logits

        yield Intervention(logits_transform=transform)


def test_heldout_templates_seed_spread_and_intervals(tiny_lm):
    host = load_plugins()
    jobs = host.datasets.get("data set", "occupations40").load(None)
    family = host.templates.get("template family", "pronoun")
    comparer = Comparer(tiny_lm, jobs, family, seed=0, bootstrap=100, seeds=(0, 1, 2), heldout_templates=2)
    comparer.run("none", host.methods.get("method", "none"), {})
    SeededShe.fitted_on.clear()
    row = comparer.run("seeded-she", SeededShe, {}).row
    assert row["status"] == "ok", row.get("error")
    scored = comparer.comparison.heldout_templates
    assert len(scored) == 2 and set(comparer.prompts["template"]) == set(scored)
    assert all(len(fitted) == 15 and not set(fitted) & {family.templates[i] for i in scored}
               for fitted in SeededShe.fitted_on)
    assert len(SeededShe.fitted_on) == 3  # seeds 0, 1, 2
    assert row["seeds"] == "0,1,2" and row["kl_sd"] > 0 and row["stereotype_gap_sd"] > 0
    assert row["gap_ci_low"] <= row["stereotype_gap"] <= row["gap_ci_high"]
    # boosting ' she' everywhere moves every control prompt towards female: proof they were scored with the method
    control = comparer.comparison.runs[1].control
    assert set(control["seed"]) == {0} and len(control) == 40 * 2
    assert (control["p_female"].to_numpy() > comparer.comparison.runs[0].control["p_female"].to_numpy() + 1e-6).all()


def test_template_split_is_checked():
    family = load_plugins().templates.get("template family", "pronoun")
    assert template_split(family, 0, 0) == (family, list(range(17)))
    with pytest.raises(DebiasKitError, match="1 to 16"):
        template_split(family, 17, 0)


def test_folds_are_checked_only_when_a_method_learns_from_jobs():
    from debiaskit.compare import check_folds
    from debiaskit.data import Occupation, OccupationSet
    from debiaskit.plugins.leace import LeaceErasure

    jobs = OccupationSet("four", "test", tuple(Occupation(name, group, pct) for name, group, pct in
                                               (("nurse", "female", 91), ("maid", "female", 88),
                                                ("plumber", "male", 2), ("welder", "male", 5))))
    no_jobs = [("none", load_plugins().methods.get("method", "none"), {}), ("leace", LeaceErasure, {})]
    check_folds(jobs, no_jobs, 5, 0, in_sample=False)  # nothing is split, so 5 folds of 2 jobs per group is fine
    learns = [*no_jobs, ("leace@jobs", LeaceErasure, {"concept": "occupations"})]
    check_folds(jobs, learns, 5, 0, in_sample=True)  # in-sample: no split either
    check_folds(jobs, learns, 2, 0, in_sample=False)
    with pytest.raises(DebiasKitError, match="--folds 5: accepted 2 to 2"):
        check_folds(jobs, learns, 5, 0, in_sample=False)


class JobFittedShe(SeededShe):
    """A method that learns from jobs and declares a fit word, to check what the selectivity columns leave out."""

    name = "job-fitted-she"
    random_fit = False

    def uses_jobs(self):
        return True

    def fitted_words(self):
        return frozenset({"girl", "boy"})


def test_professions_and_controls_are_scored_once_over_folds_and_fit_words_are_left_out(tiny_lm):
    from debiaskit.professions import Profession

    host = load_plugins()
    jobs = host.datasets.get("data set", "occupations40").load(None)
    family = host.templates.get("template family", "pronoun")
    professions = [Profession(name, f, s)
                   for name, f, s in (("nurse", 0.0, -0.9), ("plumber", 0.0, 0.8), ("girl", -1.0, 0.0),
                                      ("boy", 1.0, 0.0), ("dancer", -0.1, -0.9), ("boxer", 0.1, 0.9),
                                      ("judge", 0.0, 0.7), ("nanny", -0.3, -0.7))]
    comparer = Comparer(tiny_lm, jobs, family, seed=0, n_folds=4, heldout_templates=2, professions=professions)
    comparer.run("none", host.methods.get("method", "none"), {})
    run = comparer.run("job-fitted-she", JobFittedShe, {})
    assert run.ok, run.row.get("error")
    scored = run.professions.groupby("profession")["fold"].agg(["nunique", "count"])
    assert set(scored.index) == {"nurse", "plumber", "dancer", "boxer", "judge", "nanny"}  # the fit words are left out
    assert (scored["nunique"] == 1).all() and (scored["count"] == 2).all()  # one fold, each profession template
    held_out = {job.name: fold for fold, (_, held) in enumerate(comparer.folds) for job in held}
    assert run.professions.groupby("profession")["fold"].first()["nurse"] == held_out["nurse"]
    assert run.row["professions_left_out"] == 2 and run.row["professions_scored"] == 6
    assert (run.control.groupby("pair")["fold"].nunique() == 1).all() and run.control["fold"].nunique() == 4
    assert run.control["noun"].nunique() == 40
    assert comparer.comparison.runs[0].row["professions_left_out"] == 0
    assert {"kl_gendered", "agreement_acc", "definitional_retained", "a_s", "a_f", "b"} <= set(run.row)


@needs_crows
@needs_winogender
def test_benchmarks_are_scored_once_over_folds_and_held_out_by_head_noun(tiny_lm):
    from debiaskit.benchmark_sets import BenchmarkSets
    from debiaskit.crows_pairs import crows_summary, score_crows_pairs
    from debiaskit.data import head_noun

    host = load_plugins()
    jobs = host.datasets.get("data set", "occupations40").load(None)
    family = host.templates.get("template family", "pronoun")
    benchmarks = BenchmarkSets.load(("crows", "winogender"))
    comparer = Comparer(tiny_lm, jobs, family, seed=0, n_folds=4, heldout_templates=2, benchmarks=benchmarks)
    baseline = comparer.run("none", host.methods.get("method", "none"), {})
    run = comparer.run("job-fitted-she", JobFittedShe, {})
    assert baseline.ok and run.ok, run.row.get("error")
    # CrowS: every pair once per method; the baseline's numbers are the unhooked model's
    assert sorted(run.crows["index"]) == sorted(pair.index for pair in benchmarks.crows) and len(run.crows) == 262
    assert run.crows["fold"].nunique() == 4
    plain = crows_summary(score_crows_pairs(tiny_lm, benchmarks.crows, None), 0, 0)
    assert baseline.row["crows_pct_stereotype"] == pytest.approx(plain["crows_pct_stereotype"])
    assert run.row["crows_pct_stereotype"] != baseline.row["crows_pct_stereotype"]  # the ' she' boost moves it
    # WinoGender: an occupation sharing a head noun with a job is scored in the fold that held all those jobs out
    trained_heads = {fold: {head_noun(job.name) for job in train} for fold, (train, _) in enumerate(comparer.folds)}
    by_occupation = run.winogender.groupby("occupation")["fold"].agg(["nunique", "first"])
    assert (by_occupation["nunique"] == 1).all()
    assert all(head_noun(occupation) not in trained_heads[fold] for occupation, fold in by_occupation["first"].items())
    assert "nurse" in by_occupation.index  # a job held out by one fold is scored there
    assert run.row["winogender_left_out"] + len(by_occupation) == 60 and run.row["winogender_left_out"] > 0
    assert baseline.row["winogender_left_out"] == 0 and baseline.row["winogender_occupations"] == 60
    assert {"winogender_gap", "winogender_bls_corr", "winogender_gap_change_pct", "crows_change"} <= set(run.row)
