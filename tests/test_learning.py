"""A tiny model learns a small translation task well: the whole pipeline works, not just runs."""
import re

import numpy as np

import eval as evaluate
import prepro
import train
from conftest import corpus_flags, decoders_on_test_set, toy_pairs


def test_tiny_model_learns_to_translate_and_reverse(tmp_path):
    # English = the German number words translated one by one, in reverse order;
    # held-out test sentences never occur in training.
    train_pairs = toy_pairs(2000, seed=1, reverse=True)
    seen = set(train_pairs)
    test_pairs = [p for p in toy_pairs(100, seed=2, reverse=True) if p not in seen]
    flags = corpus_flags(tmp_path, train_pairs, test_pairs) + ["--maxlen", "10", "--seed", "3"]
    prepro.main(flags)
    train.main(flags + ["--hidden_units", "64", "--num_blocks", "1", "--num_heads", "4",
                        "--dropout_rate", "0", "--lr", "0.003", "--num_epochs", "6"])
    evaluate.main(flags)
    name = next(p.name for p in (tmp_path / "results").iterdir() if p.suffix != ".json")
    results = (tmp_path / "results" / name).read_text()
    assert results.count("- got: ") == len(test_pairs)
    bleu = float(re.search(r"Bleu Score = (\S+)\n\Z", results)[1])
    assert bleu > 50
    full, cached, beam_one = decoders_on_test_set(flags)  # the cached decoder eval.py uses, the reference ...
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_array_equal(beam_one, full)  # ... and beam search of beam size 1
    evaluate.main(flags + ["--beam_size", "4"])
    beam = (tmp_path / "results" / (name + "_beam4")).read_text()
    assert float(re.search(r"Bleu Score = (\S+)\n\Z", beam)[1]) >= bleu - 1
