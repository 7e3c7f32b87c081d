"""The benchmarks: what the pipeline and the service cost, and the pictures of docs/img.

    python -m benchmarks.bench          training and decoding speed and memory (what timing.py times)
    python -m benchmarks.bench_corpus   prepro.py and train.py on a corpus of millions of pairs
    python -m benchmarks.bench_serve    serve.py under concurrent clients
    python -m benchmarks.figures        docs/img's pictures from runs and benchmark records (charts.py)

Each is also run as a file (python benchmarks/bench.py). They import the
pipeline's modules; nothing in the pipeline imports them.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the pipeline's scripts are
