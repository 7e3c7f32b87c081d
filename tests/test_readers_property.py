"""Property test: the readers never crash on odd text and never pair a sentence with the wrong translation."""
import gzip

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import readers
from messages import UserError

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
