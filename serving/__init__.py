"""The translation service's own parts, beside serve.py: the batcher that merges concurrent requests into
decoder calls (batching.py), the checks a request passes first (requests.py) and the page at / (page.html,
one self-contained document, and page.py)."""
