"""vocab.py: the word vocab and its min_cnt, corpus.json."""
import pytest

import vocab
from conftest import write_lines
from messages import UserError


def test_vocab_loading_applies_min_cnt(tmp_path):
    path = write_lines(tmp_path / "de.vocab.tsv", [f"{w}\t1000000000" for w in vocab.SPECIALS]
                       + ["Haus\t5", "Baum\t3", "Dach\t1"])
    word2id, id2word = vocab.load_vocab(path, min_cnt=3)
    assert id2word == list(vocab.SPECIALS) + ["Haus", "Baum"]
    assert word2id["Baum"] == 5
    with pytest.raises(UserError, match="run prepro.py first"):
        vocab.load_vocab(str(tmp_path / "missing.tsv"), 1)


@pytest.mark.parametrize("record", ["[1]", "{not json"])
def test_a_broken_vocab_source_record_says_what_to_run(tmp_path, record):
    from hyperparams import Hyperparams
    (tmp_path / vocab.VOCAB_MANIFEST).write_text(record)
    for name in (vocab.SRC_VOCAB, vocab.TGT_VOCAB):
        (tmp_path / name).write_text("")
    hp = Hyperparams(vocab_dir=str(tmp_path), source_train=write_lines(tmp_path / "a.de", ["x"]),
                     target_train=write_lines(tmp_path / "a.en", ["y"]))
    with pytest.raises(UserError, match=r"corpus.json is damaged \(.*\); run prepro.py again"):
        vocab.open_vocabs(hp)
