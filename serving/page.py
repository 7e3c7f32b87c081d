"""The page serve.py shows at /: type German text (sentences or paragraphs), read the translations and each
sentence's n-best list, see the attention.

page.html is one self-contained HTML document (no external assets: it works
offline), written against serve.py's JSON API. Every control is a native form
element, reachable and usable with the keyboard (Ctrl+Enter translates), and
labelled for screen readers; the heatmap is a table whose header cells are the
tokens and whose cells say their weight; API errors appear in an alert region.
"""
import importlib.resources
import json


def html(**config):
    """The page with serve.py's limits and defaults (max_chars, max_sentences, max_beam_size, beam_size, and keys:
    whether requests need an API key)."""
    page = importlib.resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return page.replace("/*CONFIG*/", json.dumps(config))
