"""Property test: the readers never crash on odd text and never pair a sentence with the wrong translation."""
import gzip

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data_load
from hyperparams import UserError

# Any text on one line: Unicode of every category, stray "<", spaces; no line breaks
# (a line break would make two lines out of one).
LINE = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30) | \
    st.sampled_from(["", "   ", "<url>x</url>", "<", "< not metadata?", "Ein Satz .", "\t"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(LINE, LINE), max_size=25), tags=st.booleans(), crlf=st.booleans(),
       gz=st.booleans())
def test_readers_keep_pairs_aligned(tmp_path, pairs, tags, crlf, gz):
    name = ("train.tags.de-en" if tags else "plain") + (".gz" if gz else "")
    paths = []
    for side, suffix in ((0, "de"), (1, "en")):
        path = tmp_path / f"{name.replace('.gz', '')}.{suffix}{'.gz' if gz else ''}"
        data = "".join(p[side] + ("\r\n" if crlf else "\n") for p in pairs).encode("utf-8")
        if gz:
            data = gzip.compress(data)
        path.write_bytes(data)
        paths.append(str(path))

    def kept(text):  # what the reader must keep: not metadata (in tags files), not blank
        return text.strip() and not (tags and text.startswith("<"))

    expected = [(data_load.refine(s), data_load.refine(t)) for s, t in pairs if kept(s) and kept(t)]
    try:
        src, tgt = data_load.read_parallel(*paths)
    except UserError as e:
        assert not expected and "hold no sentence pairs" in str(e)
        return
    assert list(zip(src, tgt)) == expected
