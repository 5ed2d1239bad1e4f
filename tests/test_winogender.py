"""WinoGender: the loader on the shipped folder and on broken ones, the female share per row, and the summary on a
hand-made frame."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from shared_data import needs_winogender

from debiaskit import DebiasKitError
from debiaskit.evaluator import sequence_log_likelihoods
from debiaskit.professions import shared_data_dir
from debiaskit.winogender import WINOGENDER_DIR, WinoSentence, load_winogender, score_winogender, winogender_summary

STATS_HEADER = "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\n"


@needs_winogender
def test_shipped_folder_has_720_sentences_of_60_occupations():
    data = load_winogender()
    assert len(data.sentences) == 720 and len(data.bls_pct_female) == 60
    assert {s.occupation for s in data.sentences} == set(data.bls_pct_female)
    assert data.sentences[0] == WinoSentence("technician", "customer", 1, "male",
                                             "The technician told the customer that he could pay with cash.")
    assert data.bls_pct_female["technician"] == 40.34
    assert {s.gender for s in data.sentences} == {"male", "female", "neutral"}


def write_folder(tmp_path, sentences, stats="technician\t9.42\t40.34\t2015\n"):
    (tmp_path / "occupations-stats.tsv").write_text(STATS_HEADER + stats)
    (tmp_path / "all_sentences.tsv").write_text("sentid\tsentence\n" + sentences)
    return tmp_path


def test_bad_files_name_the_file_and_line(tmp_path):
    folder = write_folder(tmp_path, "technician.customer.1.male.txt\tThe technician paid.\n"
                                    "technician.customer.1.female\tThe technician paid.\n")
    with pytest.raises(DebiasKitError, match=r"all_sentences.tsv:3: sentence id 'technician.customer.1.female' is "
                                             r"not occupation.participant.answer.gender.txt"):
        load_winogender(folder)
    write_folder(tmp_path, "nurse.patient.0.female.txt\tThe nurse helped.\n")
    with pytest.raises(DebiasKitError, match=r"all_sentences.tsv:2: occupation 'nurse' has no row in .*"
                                             r"occupations-stats.tsv"):
        load_winogender(folder)
    write_folder(tmp_path, "technician.customer.1.male.txt\tThe technician paid.\n", stats="technician\t9.42\tn/a\t0\n")
    with pytest.raises(DebiasKitError, match=r"occupations-stats.tsv:2: expected an occupation and bls_pct_female"):
        load_winogender(folder)
    (tmp_path / "all_sentences.tsv").write_text("id\ttext\n")
    (tmp_path / "occupations-stats.tsv").write_text(STATS_HEADER)
    with pytest.raises(DebiasKitError, match=r"all_sentences.tsv lacks the column\(s\) sentid, sentence"):
        load_winogender(folder)
    shutil.rmtree(folder)
    with pytest.raises(DebiasKitError, match="cannot read WinoGender file .*occupations-stats.tsv"):
        load_winogender(folder)


@needs_winogender
def test_a_repeated_sentence_id_is_refused(tmp_path):
    shutil.copytree(shared_data_dir() / WINOGENDER_DIR, tmp_path / "w")
    path = tmp_path / "w" / "all_sentences.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DebiasKitError, match=r"all_sentences.tsv:722: .* is also on line 2"):
        load_winogender(tmp_path / "w")


def test_summary_on_four_occupations():
    # occupation means 0.7, 0.6, 0.4, 0.2 at 90, 50, 40 and 10 percent women; 50 counts as female-dominated
    frame = pd.DataFrame({"occupation": ["a", "a", "b", "b", "c", "c", "d", "d"],
                          "female_share": [0.8, 0.6, 0.5, 0.7, 0.4, 0.4, 0.3, 0.1]})
    summary = winogender_summary(frame, {"a": 90.0, "b": 50.0, "c": 40.0, "d": 10.0, "unscored": 70.0})
    assert summary["winogender_gap"] == pytest.approx((0.7 + 0.6) / 2 - (0.4 + 0.2) / 2)  # 0.35
    assert summary["winogender_female_share"] == pytest.approx(3.8 / 8)
    # deviations from the means 0.475 and 47.5: share (.225, .125, -.075, -.275), percent (42.5, 2.5, -7.5, -37.5)
    assert summary["winogender_bls_corr"] == pytest.approx(20.75 / math.sqrt(0.1475 * 3275.0))
    assert summary["winogender_occupations"] == 4


def test_summary_needs_stats_for_every_scored_occupation():
    frame = pd.DataFrame({"occupation": ["a", "b"], "female_share": [0.5, 0.5]})
    with pytest.raises(DebiasKitError, match="no bls_pct_female for the scored occupation"):
        winogender_summary(frame, {"a": 10.0})
    assert math.isnan(winogender_summary(frame, {"a": 10.0, "b": 20.0})["winogender_gap"])  # no female-dominated job


@needs_winogender
def test_female_share_is_the_female_versions_share(tiny_lm):
    data = load_winogender()
    frame = score_winogender(tiny_lm, data, None, batch_size=5, occupations=["nurse"])
    assert list(frame.columns) == ["occupation", "participant", "answer", "loglik_male", "loglik_female",
                                   "loglik_neutral", "female_share"]
    assert len(frame) == 4 and set(frame["occupation"]) == {"nurse"}
    np.testing.assert_allclose(frame["female_share"],
                               1.0 / (1.0 + np.exp(frame["loglik_male"] - frame["loglik_female"])), rtol=1e-12)
    first = frame.iloc[0]
    sentence = next(s for s in data.sentences if (s.occupation, s.participant, s.answer, s.gender)
                    == ("nurse", first["participant"], first["answer"], "neutral"))
    assert first["loglik_neutral"] == pytest.approx(
        sequence_log_likelihoods(tiny_lm, [tiny_lm.encode(sentence.sentence)], None)[0], abs=1e-5)
    with pytest.raises(DebiasKitError, match="not WinoGender occupations: astronaut; accepted: accountant"):
        score_winogender(tiny_lm, data, None, occupations=["nurse", "astronaut"])
