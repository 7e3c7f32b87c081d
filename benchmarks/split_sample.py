"""German sentence splitting, measured: how sentencex (what paragraphs.py uses) and pysbd split a written sample
of 40 short German paragraphs whose sentences are known.

The sample covers what German text does to a splitter: abbreviations ("z. B.",
"Dr.", "usw.", "Nr."), ordinal numbers ("am 3. Oktober", "der 1. FC"),
dates and times ("24.12.2025", "14.30 Uhr"), decimal commas, quotes with
their own end marks („Komm her!“, rief sie.), ellipses, and plain captions.
For each splitter it prints the paragraphs split exactly right, the sentences
cut in two (a wrong end: the worse fault, each half is translated alone) and
the ends missed (two sentences left as one: today's behaviour without a
splitter), and its time.

    python -m benchmarks.split_sample            # pysbd is measured if installed (pip install pysbd)
"""
import os
import sys
import time

if __package__ in (None, ""):  # run as a file: the pipeline's modules are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cli import Parser, run

# Each paragraph as its sentences; the text is them joined by one space.
SAMPLE = [
    ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."],
    ["Dr. Müller kommt um 9 Uhr.", "Er bringt z. B. Brot mit."],
    ["Das Treffen ist am 3. Oktober in Berlin.", "Bitte pünktlich sein!"],
    ["Im 19. Jahrhundert wuchs die Stadt schnell.", "Heute leben dort ca. 2 Mio. Menschen."],
    ["„Komm her!“, rief die Frau.", "Der Hund lief zu ihr."],
    ["Er fragte: „Wo ist der Bahnhof?“", "Niemand antwortete."],
    ["Die Preise stiegen um 2,5 Prozent.", "Das ist viel."],
    ["Sie wohnt in der Hauptstr. 5.", "Dort ist es ruhig."],
    ["Wir trafen Prof. Dr. Schmidt usw. auf der Konferenz.", "Es war schön."],
    ["Was machst du da?", "Ich lese ein Buch."],
    ["Das kostet 3,50 Euro bzw. 4 Dollar.", "Zu teuer!"],
    ["Der 1. FC Köln hat gewonnen.", "Die Fans jubeln."],
    ["Ein Mann mit einem roten Hut fährt Fahrrad.", "Zwei Hunde spielen im Schnee.",
     "Eine Frau liest ein Buch im Park."],
    ["Er kam am Mo. 5. Mai zurück.", "Alle freuten sich."],
    ["Hm... das weiß ich nicht.", "Vielleicht morgen."],
    ["Siehe S. 12 ff. für Details.", "Danke."],
    ["Die Kinder (ca. 10 Jahre alt) spielen Fußball.", "Es regnet."],
    ["Herr Meier, geb. 1950, ist Rentner.", "Er angelt gern."],
    ["Das Spiel endete 2:1.", "Wir haben gewonnen!"],
    ["Eine Frau in einem blauen Kleid tanzt.", "Ein Kind lacht?", "Nein, es weint."],
    ["U. a. waren auch Kinder dabei.", "Sie spielten."],
    ["Die Firma XY GmbH & Co. KG baut Häuser.", "Sie ist groß."],
    ["Er war der 2. Sieger.", "Sie war die 1."],
    ["Ein Hund rennt über eine Wiese"],
    ["Am 24.12.2025 ist Weihnachten.", "Wir feiern."],
    ["Der Zug fährt um 14.30 Uhr ab.", "Sei pünktlich."],
    ["Er wohnt in Zimmer Nr. 7.", "Das ist oben."],
    ["Das heißt, d. h. wir kommen später.", "Gut so."],
    ["Vgl. Abb. 3 auf der nächsten Seite.", "Sie zeigt alles."],
    ["Äpfel, Birnen etc. sind gesund.", "Iss sie!"],
    ["Er sagte nichts …", "Dann ging er."],
    ["Halt!", "Wer da?"],
    ["Das war i. d. R. so.", "Heute nicht mehr."],
    ["Der Gipfel ist 2.962 m hoch.", "Er ist schwer zu erreichen."],
    ["Ein Mann in einem roten Hemd.", "Eine Frau in einem blauen Kleid."],
    ["Sie las „Die Verwandlung“ von F. Kafka.", "Es gefiel ihr."],
    ["Karl d. Gr. war ein Kaiser.", "Er lebte lange."],
    ["Es ist 5 vor 12.", "Beeil dich."],
    ["Wir sehen uns am 1. Januar.", "Frohes neues Jahr!"],
    ["Die 3. Klasse geht in den Zoo.", "Die Kinder freuen sich."],
]


def ends(sentences):
    """The character offsets where the sentences of " ".join(sentences) end."""
    offsets, at = set(), 0
    for sentence in sentences:
        at += len(sentence)
        offsets.add(at)
        at += 1
    return offsets


def measure(split):
    """A splitter (text -> sentences) on the sample: paragraphs right, ends cut wrongly, ends missed, ms."""
    right = cut = missed = 0
    start = time.perf_counter()
    for sentences in SAMPLE:
        got = [s.strip() for s in split(" ".join(sentences)) if s.strip()]
        right += got == sentences
        found, wanted = ends(got), ends(sentences)
        cut, missed = cut + len(found - wanted), missed + len(wanted - found)
    return {"paragraphs": len(SAMPLE), "right": right, "cut_wrongly": cut, "ends_missed": missed,
            "ms": round(1000 * (time.perf_counter() - start), 1)}


def splitters():
    """The splitters installed: sentencex (through paragraphs.py, as the service splits), pysbd if present."""
    import paragraphs

    found = {"sentencex (paragraphs.py)": lambda text: paragraphs.split(text).sentences}
    try:
        import pysbd
    except ImportError:
        print("pysbd is not installed (pip install pysbd to compare it)", file=sys.stderr)
    else:
        segmenter = pysbd.Segmenter(language="de", clean=False)
        found["pysbd"] = segmenter.segment
    return found


def main(argv):
    Parser(description=__doc__.splitlines()[0]).parse_args(argv)
    for name, split in splitters().items():
        split("Ein Satz. Noch einer.")  # loaded before the clock runs
        print(name, measure(split))


if __name__ == "__main__":
    run(main)
