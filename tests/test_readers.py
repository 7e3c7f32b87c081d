"""readers.py: IWSLT XML and tags, plain and gzip text, read in lockstep; every problem named with its line."""
import gzip

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import readers
from conftest import SHARED_DATA, write_lines
from messages import UserError


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
    for other in ("/dev/null", str(tmp_path)):  # a device, a directory
        with pytest.raises(UserError, match=f"{other} is not a file of text .*; pass a file to --source_train"):
            readers.read_parallel(other, empty)


@pytest.mark.skipif(not (SHARED_DATA / "iwslt2016").is_dir(), reason="../shared/data/iwslt2016 is absent")
def test_real_iwslt_xml_has_one_sentence_per_seg():
    base = SHARED_DATA / "iwslt2016" / "de-en" / "IWSLT16.TED.tst2013.de-en"
    segs = sum("<seg" in line for line in open(f"{base}.de.xml", encoding="utf-8"))
    src, tgt = readers.read_parallel(f"{base}.de.xml", f"{base}.en.xml")
    assert len(src) == len(tgt) == segs == 993


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


# Any text on one line: Unicode of every category, stray "<", spaces, tags; no line breaks
# (a line break would make two lines out of one).
LINE = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30) | \
    st.sampled_from(["", "   ", "<url>x</url>", "<", "< not metadata?", "Ein Satz .", "\t", "a <b>c</b>",
                     "<seg>", "</seg>", "\ufeff"])

ENDINGS = st.sampled_from(["\n", "\r\n"])  # mixed within one file

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(path, lines, endings, gz):
    data = "".join(line + ending for line, ending in zip(lines, endings)).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return str(path)


@SETTINGS
@given(pairs=st.lists(st.tuples(LINE, LINE, ENDINGS, ENDINGS), max_size=25), tags=st.booleans(), gz=st.booleans(),
       bom=st.booleans())
def test_readers_keep_pairs_aligned(tmp_path, pairs, tags, gz, bom):
    name = "train.tags.de-en" if tags else "plain"
    sides = [[("\ufeff" if bom and i == 0 else "") + p[side] for i, p in enumerate(pairs)] for side in (0, 1)]
    paths = [write(tmp_path / f"{name}.{suffix}{'.gz' if gz else ''}", sides[side], [p[2 + side] for p in pairs], gz)
             for side, suffix in ((0, "de"), (1, "en"))]
    for lines in sides:  # what the reader sees: a byte-order mark opening a file is not text
        lines[:1] = [line.removeprefix("\ufeff") for line in lines[:1]]

    def kept(text):  # what the reader must keep: not metadata (in tags files), not blank
        return text.strip() and not (tags and text.startswith("<"))

    expected = [(readers.refine(s), readers.refine(t)) for s, t in zip(*sides) if kept(s) and kept(t)]
    try:
        src, tgt = readers.read_parallel(*paths)
    except UserError as e:
        assert not expected and "hold no sentence pairs" in str(e)
        return
    assert list(zip(src, tgt)) == expected


@SETTINGS
@given(pairs=st.lists(st.lists(st.tuples(LINE, LINE), min_size=1, max_size=3), max_size=10), endings=ENDINGS)
def test_xml_segs_stay_aligned_however_they_share_lines(tmp_path, pairs, endings):
    """Each side's <seg>s are written several to a line; every one of them is a sentence, in order."""
    segs = [[f'<seg id="{i}">{text.replace("<", "").replace(">", "")}</seg>' for i, text in enumerate(side)]
            for side in zip(*(pair for line in pairs for pair in line))] or [[], []]
    paths = []
    for side, suffix in ((0, "de"), (1, "en")):
        lines, start = ['<doc docid="1">'], 0
        for line in pairs:
            lines.append("".join(segs[side][start:start + len(line)]))
            start += len(line)
        paths.append(write(tmp_path / f"t.{suffix}.xml", lines + ["</doc>"], [endings] * (len(lines) + 1), False))
    texts = [[s for _, s in readers.read_sentences(path, "source_test")] for path in paths]
    assert texts == [[s.split(">", 1)[1].rsplit("<", 1)[0] for s in side] for side in segs]


@SETTINGS
@given(lines=st.lists(LINE, min_size=1, max_size=200), cut=st.floats(0.05, 0.95), damage=st.sampled_from(
    ["truncate", "zero", "flip"]))
def test_a_damaged_gzip_file_is_a_one_line_error_or_read_whole(tmp_path, lines, cut, damage):
    data = bytearray(gzip.compress("".join(line + "\n" for line in lines).encode("utf-8"), mtime=0))
    at = max(10, int(len(data) * cut))  # past the 10-byte header
    if damage == "truncate":
        data = data[:at]
    elif at < len(data):
        data[at] = 0 if damage == "zero" else data[at] ^ 0xFF
    path = tmp_path / "d.de.gz"
    path.write_bytes(bytes(data))
    try:
        read = [text for _, text in readers.read_sentences(str(path), "source_train")]
    except UserError as e:
        assert str(e).startswith(f"{path}")  # "cannot be read", or a line the damage made invalid UTF-8
        return
    # a change the format cannot see (none: gzip checks a CRC) would show here; a byte-order mark is not text
    assert read == [lines[0].removeprefix("\ufeff"), *lines[1:]]
