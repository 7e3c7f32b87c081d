import gzip

import numpy as np
import pytest

import vocab
import readers
import data_load
from messages import UserError
from conftest import SHARED_DATA, write_lines
from vocab import EOS, PAD, UNK


@pytest.mark.parametrize("raw, refined", [
    ("Die 26-jährige Frau.", "Die jährige Frau"),
    ("twenty-somethings, don't!", "twentysomethings don't"),
    ("  Ça   coûte 3 €  ", "Ça coûte"),
    ("Привет world", "world"),
])
def test_refine_keeps_latin_letters_apostrophes_and_spaces(raw, refined):
    assert readers.refine(raw) == refined


def test_tags_reader_marks_metadata_lines(tmp_path):
    path = write_lines(tmp_path / "train.tags.de-en.de",
                       ["<url>http://x</url>", "Hallo Welt.", "<title>T</title>", "Gut."])
    assert readers.read_sentences(path, "f") == [(1, None), (2, "Hallo Welt."), (3, None), (4, "Gut.")]


def test_xml_reader_keeps_seg_lines_only(tmp_path):
    path = write_lines(tmp_path / "IWSLT16.TED.tst2013.de-en.de.xml", [
        '<?xml version="1.0" encoding="UTF-8"?>', "<doc docid=\"1\">", "<title>Titel</title>",
        '<seg id="1"> Erster Satz. </seg>', '<seg id="2"> Zweiter, 2. </seg>', "</doc>"])
    assert readers.read_sentences(path, "f") == [(4, " Erster Satz. "), (5, " Zweiter, 2. ")]


def test_malformed_seg_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "test.de.xml", ['<seg id="1"> gut </seg>', '<seg id="2"> ohne Ende'])
    with pytest.raises(UserError, match=r"test.de.xml:2: malformed <seg> line"):
        readers.read_sentences(path, "f")


def test_skipped_lines_are_counted_in_one_summary_line(tmp_path, capsys):
    src = write_lines(tmp_path / "train.tags.de-en.de", ["<url>x</url>", "Hallo", "", "Welt"])
    tgt = write_lines(tmp_path / "train.tags.de-en.en", ["<url>x</url>", "Hello", "world", "World"])
    assert readers.read_parallel(src, tgt) == (["Hallo", "Welt"], ["Hello", "World"])
    assert capsys.readouterr().out == f"{src}: 2 sentence pairs; skipped 1 metadata and 1 blank lines\n"


def test_plain_gzip_is_read_transparently(tmp_path):
    path = write_lines(tmp_path / "train.de.gz", ["Ein Hund <b>läuft</b>.", "", "Zwei"])
    assert readers.read_sentences(path, "f") == [(1, "Ein Hund <b>läuft</b>."), (2, ""), (3, "Zwei")]


def test_pairs_are_read_in_lockstep(tmp_path):
    src = write_lines(tmp_path / "train.tags.de-en.de",
                      ["<url>u</url>", "Hallo Welt", "<title>t</title>", "", "Guten Tag"])
    tgt = write_lines(tmp_path / "train.tags.de-en.en",
                      ["<url>u</url>", "Hello world", "a stray line", "Empty", "Good day"])
    assert readers.read_parallel(src, tgt) == (["Hallo Welt", "Guten Tag"], ["Hello world", "Good day"])


def test_different_line_counts_are_an_error(tmp_path):
    src = write_lines(tmp_path / "a.de", ["eins", "zwei", "drei"])
    tgt = write_lines(tmp_path / "a.en", ["one", "two"])
    with pytest.raises(UserError, match=r"a.de has 3 lines but .*a.en has 2; .*line-aligned"):
        readers.read_parallel(src, tgt)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    src = write_lines(tmp_path / "a.de", ["gut", "auch gut"])
    with open(src, "ab") as f:
        f.write(b"schlecht \xff\xfe\n")
    tgt = write_lines(tmp_path / "a.en", ["good", "also good", "bad"])
    with pytest.raises(UserError, match=r"a.de:3: not valid UTF-8"):
        readers.read_parallel(src, tgt)


def test_missing_and_empty_corpora_say_what_to_fix(tmp_path):
    empty = write_lines(tmp_path / "empty.de", [])
    with pytest.raises(UserError, match=r"nothere.de not found; .* --source_train"):
        readers.read_parallel(str(tmp_path / "nothere.de"), empty)
    with pytest.raises(UserError, match="hold no sentence pairs"):
        readers.read_parallel(empty, write_lines(tmp_path / "empty.en", []))


def test_vocab_loading_applies_min_cnt(tmp_path):
    path = write_lines(tmp_path / "de.vocab.tsv", [f"{w}\t1000000000" for w in vocab.SPECIALS]
                       + ["Haus\t5", "Baum\t3", "Dach\t1"])
    word2id, id2word = vocab.load_vocab(path, min_cnt=3)
    assert id2word == list(vocab.SPECIALS) + ["Haus", "Baum"]
    assert word2id["Baum"] == 5
    with pytest.raises(UserError, match="run prepro.py first"):
        vocab.load_vocab(str(tmp_path / "missing.tsv"), 1)


def test_create_data_filters_by_maxlen_and_pads():
    words = vocab.WordVocab([*vocab.SPECIALS, "a", "b"])
    x, y, src, tgt = data_load.create_data(["a b", "a a a", "b"], ["a", "b", "a zzz b"], words, words, maxlen=3)
    # "a a a" + </S> is 4 ids: dropped; "a zzz b" + </S> is 4 ids: dropped
    assert src == ["a b"] and tgt == ["a"]
    np.testing.assert_array_equal(x, [[4, 5, EOS]])
    np.testing.assert_array_equal(y, [[4, EOS, PAD]])
    x, y, src, _ = data_load.create_data(["a b", "b"], ["a zzz b", "b"], words, words, maxlen=None)
    np.testing.assert_array_equal(x, [[4, 5, EOS], [5, EOS, PAD]])
    np.testing.assert_array_equal(y, [[4, UNK, 5, EOS], [5, EOS, PAD, PAD]])
    assert x.dtype == np.int32


def test_train_batches_are_seeded_full_batches():
    x = np.arange(10, dtype=np.int32).reshape(10, 1)
    batches = lambda seed: [b[0].numpy().ravel().tolist()
                            for b in data_load.train_batches(data_load.array_pairs(x, x)[0], maxlen=1,
                                                             batch_size=4, seed=seed)]
    first = batches(1)
    assert [len(b) for b in first] == [4, 4]  # the last partial batch is dropped
    assert first == batches(1) and first != batches(2)


def test_an_engine_translates_in_batches_the_last_one_partial():
    import engines
    from hyperparams import Hyperparams
    from vocab import WordVocab

    class Recording(engines.Engine):  # the batching of both engines, without a model
        nbest, calls = 1, []
        hp, src_vocab = Hyperparams(batch_size=4), WordVocab(["<PAD>", "<UNK>", "<S>", "</S>", "eins"])
        tgt_vocab = src_vocab

        def nbest_ids(self, rows):
            self.calls.append(len(rows))
            return [[([4, 3], 0.0)] for _ in rows]

    assert [t[0][0] for t in Recording()(["eins"] * 10)] == ["eins"] * 10 and Recording.calls == [4, 4, 2]


@pytest.mark.skipif(not (SHARED_DATA / "iwslt2016").is_dir(), reason="../shared/data/iwslt2016 is absent")
def test_real_iwslt_xml_has_one_sentence_per_seg():
    base = SHARED_DATA / "iwslt2016" / "de-en" / "IWSLT16.TED.tst2013.de-en"
    segs = sum("<seg" in line for line in open(f"{base}.de.xml", encoding="utf-8"))
    src, tgt = readers.read_parallel(f"{base}.de.xml", f"{base}.en.xml")
    assert len(src) == len(tgt) == segs == 993


@pytest.mark.parametrize("record", ["[1]", "{not json"])
def test_a_broken_vocab_source_record_says_what_to_run(tmp_path, record):
    from hyperparams import Hyperparams
    (tmp_path / vocab.VOCAB_MANIFEST).write_text(record)
    hp = Hyperparams(vocab_dir=str(tmp_path), source_train=write_lines(tmp_path / "a.de", ["x"]),
                     target_train=write_lines(tmp_path / "a.en", ["y"]))
    with pytest.raises(UserError, match=r"corpus.json is damaged \(.*\); run prepro.py again"):
        vocab.check_vocab_source(hp, "0" * 64)


def test_a_byte_order_mark_does_not_turn_metadata_into_a_sentence(tmp_path):
    path = tmp_path / "train.tags.de-en.de"
    path.write_bytes("\ufeff<url>http://www.ted.com/talks/x</url>\nEin Satz .\n".encode("utf-8"))
    assert readers.read_sentences(str(path), "source_train") == [(1, None), (2, "Ein Satz .")]


def test_each_seg_is_a_sentence_even_two_on_one_line(tmp_path):
    path = write_lines(tmp_path / "t.de.xml", ['<doc docid="1">', '<seg id="1"> eins </seg><seg id="2"> zwei </seg>',
                                               '<seg id="3">drei</seg>', "</doc>"])
    assert readers.read_sentences(path, "source_test") == [(2, " eins "), (2, " zwei "), (3, "drei")]
    broken = write_lines(tmp_path / "b.de.xml", ['<seg id="1"> eins </seg><seg id="2"> zwei'])
    with pytest.raises(UserError, match="b.de.xml:1: malformed <seg> line"):
        readers.read_sentences(broken, "source_test")


def test_a_gzip_file_corrupt_in_the_middle_is_named(tmp_path):
    data = bytearray(gzip.compress("".join(f"Satz {i} mit Woertern\n" for i in range(20000)).encode("utf-8")))
    data[len(data) // 2:len(data) // 2 + 16] = b"\x00" * 16
    (tmp_path / "c.de.gz").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"c.de.gz: cannot be read \(.*\); check the file or pass another --source_"):
        readers.read_parallel(str(tmp_path / "c.de.gz"), str(tmp_path / "c.de.gz"))
