"""Paragraphs into sentences and back: what serve.py and translate.py --split_sentences do with text that is not
one sentence a line.

    "Ein Mann fährt.  Zwei Hunde\\nspielen."  ->  gaps ["", "  ", "\\n", ""] and sentences
                                                  ["Ein Mann fährt.", "Zwei Hunde", "spielen."]

A line break always ends a sentence; within a line, sentencex's German rules
find the ends (abbreviations such as "z. B." and "Dr.", dates such as
"am 3. Oktober", quotes). It was chosen over pysbd on a written sample of 40
German paragraphs (benchmarks/split_sample.py): 35 against 32 split right,
4 against 5 sentences cut in two, 1 against 4 ends missed, and an order of magnitude faster
(python -m benchmarks.split_sample; docs/reference.md).
The whitespace between sentences (spaces, tabs, line breaks) is kept as it was,
so that the translations are put back in the paragraph's own layout.
"""
import dataclasses
import re

LANGUAGE = "de"
LINE_BREAK = re.compile(r"(\r\n|\r|\n)")


@dataclasses.dataclass(frozen=True)
class Paragraph:
    """A text as sentences and the whitespace around them: text == gaps[0] + sentences[0] + gaps[1] + ... +
    sentences[-1] + gaps[-1], each sentence without whitespace at its ends."""
    sentences: tuple
    gaps: tuple

    def join(self, translations):
        """The translations of the sentences, in the paragraph's own whitespace and line breaks."""
        if len(translations) != len(self.sentences):
            raise ValueError(f"{len(translations)} translations for {len(self.sentences)} sentences")
        parts = [self.gaps[0]]
        for translation, gap in zip(translations, self.gaps[1:]):
            parts += [translation, gap]
        return "".join(parts)


def split(text):
    """A text (one paragraph or several, with line breaks) -> its Paragraph of sentences."""
    import sentencex  # (compiled; imported when first needed, so that scripts that never split do not load it)

    sentences, gaps, gap = [], [], ""
    for part in LINE_BREAK.split(text):
        if LINE_BREAK.fullmatch(part):
            gap += part
            continue
        for segment in sentencex.segment(LANGUAGE, part) if part.strip() else [part]:
            stripped = segment.strip()
            if not stripped:
                gap += segment
                continue
            start = segment.index(stripped)
            gaps.append(gap + segment[:start])
            sentences.append(stripped)
            gap = segment[start + len(stripped):]
    gaps.append(gap)
    paragraph = Paragraph(tuple(sentences), tuple(gaps))
    if paragraph.join(sentences) != text:  # sentencex gives back every character; if a version ever did not,
        return Paragraph((text.strip(),) if text.strip() else (), whole_gaps(text))  # the text stays one sentence
    return paragraph


def whole_gaps(text):
    """The gaps of a text taken as one sentence: its leading and trailing whitespace (or all of it)."""
    stripped = text.strip()
    if not stripped:
        return (text,)
    start = text.index(stripped)
    return text[:start], text[start + len(stripped):]


def one(text):
    """A text taken as one sentence, unsplit (for a caller that asked not to split)."""
    stripped = text.strip()
    return Paragraph((stripped,) if stripped else (), whole_gaps(text))
