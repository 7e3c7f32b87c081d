"""score.py: the log-probabilities of given translations, as beam search ranks them."""
import pytest

import score
import translate
from messages import UserError

pytestmark = pytest.mark.e2e  # every test here trains a model or starts a process


def test_scores_are_the_log_probabilities_beam_search_ranks_by(controls_corpus, averaged_model, tmp_path):
    directory, _ = controls_corpus
    averaged = averaged_model
    german = (directory / "test.de").read_text().splitlines()[:6]
    nbest = tmp_path / "nbest.txt"
    (tmp_path / "de.txt").write_text("\n".join(german) + "\n")
    translate.main(averaged + ["--input", str(tmp_path / "de.txt"), "--output", str(nbest), "--nbest", "2",
                               "--length_penalty", "0"])
    rows = [line.split(" ||| ") for line in nbest.read_text().splitlines()]
    (tmp_path / "src.txt").write_text("".join(german[int(i)] + "\n" for i, _, _ in rows) + "\n")
    (tmp_path / "tgt.txt").write_text("".join(text + "\n" for _, text, _ in rows) + "\n")  # and a blank pair
    score.main(averaged + ["--source", str(tmp_path / "src.txt"), "--target", str(tmp_path / "tgt.txt"),
                           "--output", str(tmp_path / "scores.tsv")])
    lines = (tmp_path / "scores.tsv").read_text().split("\n")
    assert len(lines) == len(rows) + 2 and lines[-2:] == ["", ""]  # one line per pair; blank for the blank one
    assert any(text for _, text, _ in rows)
    for (_, text, beam_score), line in zip(rows, lines):
        if not text:  # an empty translation: nothing to score
            assert line == ""
            continue
        total, per_token, tokens = line.split("\t")
        assert int(tokens) == len(text.split()) + 1  # the words and </S>
        assert float(total) == pytest.approx(float(beam_score), abs=2e-3)  # no length penalty: the log-probability
        assert float(per_token) == pytest.approx(float(total) / int(tokens), abs=1e-3)


def test_score_refuses_files_of_different_lengths(averaged_model, tmp_path):
    averaged = averaged_model
    (tmp_path / "a").write_text("eins\nzwei\n")
    (tmp_path / "b").write_text("one\n")
    with pytest.raises(UserError, match="has 2 sentences but .* has 1; the two files must be line-aligned"):
        score.main(averaged + ["--source", str(tmp_path / "a"), "--target", str(tmp_path / "b")])
