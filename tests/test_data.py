from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debiaskit import DebiasKitError
from debiaskit.data import GROUPS, job_folds, project_data_dir, read_occupations_csv
from debiaskit.plugin_host import load_plugins

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_occupations40_matches_the_study():
    jobs = load_plugins().datasets.get("data set", "occupations40").load(None).occupations
    assert len(jobs) == 40
    assert sum(job.group == "female" for job in jobs) == 20
    nurse = next(job for job in jobs if job.name == "nurse")
    assert (nurse.group, nurse.pct_women) == ("female", 91.3)
    assert min(j.pct_women for j in jobs if j.group == "female") > max(j.pct_women for j in jobs if j.group == "male")


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data beside the checkout")
def test_pronoun_templates_are_vig_2020():
    family = load_plugins().templates.get("template family", "pronoun")
    shared = [line.strip().replace("{}", "{job}")
              for line in (SHARED / "causal_mediation" / "templates_vig2020.txt").open() if line.strip()]
    assert list(family.templates) == shared


def test_question_template_uses_the_article():
    family = load_plugins().templates.get("template family", "question")
    assert "Imagine an electrician." in family.prompt(family.templates[0], "electrician")


@pytest.mark.parametrize(
    "text, message",
    [
        ("occupation,group\nnurse,female\n", ":1: missing column 'pct_women'"),
        ("occupation,group,pct_women\nnurse,female,91\n,male,3\n", ":3: empty occupation name"),
        ("occupation,group,pct_women\nnurse,female,ninety\n", ":2: pct_women 'ninety'"),
        ("occupation,group,pct_women\nnurse,female,191\n", ":2: pct_women '191' for 'nurse' is outside 0 to 100"),
        ("occupation,group,pct_women\nnurse,women,91\n", ":2: group 'women' for 'nurse'; accepted: female, male"),
        ("occupation,group,pct_women\nnurse,female,91\n", "no male-dominated job"),
        ("occupation,group,pct_women\n", "no occupations"),
    ],
)
def test_bad_occupation_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "jobs.csv"
    path.write_text(text)
    with pytest.raises(DebiasKitError) as raised:
        read_occupations_csv(path, "x", "x")
    assert str(path) in str(raised.value) and message in str(raised.value)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_loader_fuzz_raises_only_the_project_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "jobs.csv"
    path.write_text(text, encoding="utf-8")
    try:
        read_occupations_csv(path, "x", "x")
    except DebiasKitError:
        pass


def test_folds_are_stratified_disjoint_and_seeded():
    jobs = load_plugins().datasets.get("data set", "occupations40").load(None).occupations
    folds = job_folds(jobs, 5, seed=0)
    held = [job.name for _, held_out in folds for job in held_out]
    assert sorted(held) == sorted(job.name for job in jobs)
    for train, held_out in folds:
        assert not {j.name for j in train} & {j.name for j in held_out}
        assert [sum(j.group == g for j in held_out) for g in GROUPS] == [4, 4]
    assert job_folds(jobs, 5, seed=0) == folds and job_folds(jobs, 5, seed=1) != folds
    with pytest.raises(DebiasKitError, match="accepted 2 to 20"):
        job_folds(jobs, 21, seed=0)


def test_datasets_folder_never_shadows_hugging_face_datasets():
    assert not (project_data_dir() / "__init__.py").exists()
    import datasets

    assert hasattr(datasets, "Dataset")


def test_dev_jobs_are_disjoint_from_the_scored_jobs():
    from debiaskit.plugin_host import load_plugins
    from debiaskit.professions import shared_data_dir

    if shared_data_dir() is None:
        pytest.skip("no shared/data beside this checkout")
    host = load_plugins()
    dev = host.datasets.get("data set", "dev").load(None)
    scored = host.datasets.get("data set", "occupations40").load(None)
    heads = {job.name.split()[-1] for job in scored.occupations}
    assert not {job.name.split()[-1] for job in dev.occupations} & heads
    assert {job.group for job in dev.occupations} == {"female", "male"} and len(dev.occupations) >= 40
    known = [job for job in dev.occupations if job.pct_women == job.pct_women]
    assert len(known) >= 30 and all(0 <= job.pct_women <= 100 for job in known)
