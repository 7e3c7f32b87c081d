"""Load on serve.py over loopback: throughput, latency and errors with and without batching; overload; memory.

    python -m benchmarks.bench_serve --logdir L --vocab_dir V --sentences corpora/multi30k/test_2016_flickr.de.gz
    python -m benchmarks.bench_serve --ct2 exported_ct2 --sentences corpora/multi30k/test_2016_flickr.de.gz

Each run starts serve.py (a process of its own, on 127.0.0.1) with the model
flags given here and the run's own batching flags, waits until it listens,
then C client threads each send --requests requests of one sentence (the
--sentences file's, in turn), one after the other on a kept-alive
connection, for at most --seconds. It prints one JSON line per run (--runs chooses):

    batched C      serve.py's defaults, C = 1, 8, 32 clients
    paragraphs     32 clients, each request a paragraph of 5 of the sentences (serve.py splits it)
    one_at_a_time  --max_batch_tokens 1: every decoder call translates one sentence, C = 1, 8, 32
    overload       --max_queue 8, 64 clients: every request answered, 200 or 503, and how fast
    memory         the server's resident memory after warming up and after each quarter of
                   --memory_requests requests (32 clients): whether it settles

with sentences_per_s (sentences translated, 5 per paragraph), latency p50, p95, p99, max (ms) and
p99 / p50, and status counts.
"""
import concurrent.futures
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

if __package__ in (None, ""):  # run as a file: the pipeline's modules are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cli import Parser, run
from benchmarks import ROOT
from messages import UserError
from readers import read_sentences

CLIENTS = (1, 8, 32)
PARAGRAPH = 5  # sentences per request of the paragraphs run


def add_flags(parser):
    parser.add_argument("--sentences", required=True, metavar="FILE", help="German sentences the clients send")
    parser.add_argument("--requests", type=int, default=40, help="requests per client and run (default: 40)")
    parser.add_argument("--seconds", type=float, default=120, help="the longest a run sends for (default: 120)")
    parser.add_argument("--runs", default="batched,paragraphs,one_at_a_time,overload,memory",
                        help="the runs to make, comma-separated (default: all of them, in this order)")
    parser.add_argument("--memory_requests", type=int, default=10000,
                        help="requests of the memory run, 0 to skip it (default: 10000)")


def start_server(model_flags, run_flags):
    """serve.py with these flags on a free port: (process, its address as http.client takes it), once it
    listens; a server that does not start is stopped and said in one line."""
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), *model_flags, *run_flags,
                                "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            found = re.search(r"serving .* on http://(\[[^\]]+\]|[^\s:]+):(\d+)", line)  # (IPv6 in brackets)
            if found:
                threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # drained
                return process, (found[1].strip("[]"), int(found[2]))
    except BaseException:  # Ctrl-C while it starts: it does not outlive the benchmark
        stop_server(process)
        raise
    stop_server(process)
    raise UserError(f"serve.py did not start: {''.join(lines)[-500:]}")


def stop_server(process):
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) / 1024


def client(address, sentences, first, count, deadline, per_request=1):
    """One client: count requests of per_request sentences each (a paragraph), in turn from sentences[first];
    [(status, seconds)]."""
    connection, done = http.client.HTTPConnection(*address, timeout=120), []
    for i in range(count):
        if time.monotonic() > deadline:
            break
        at = (first + i) * per_request
        body = json.dumps({"text": " ".join(sentences[(at + k) % len(sentences)] for k in range(per_request))})
        start = time.perf_counter()
        connection.request("POST", "/translate", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        done.append((response.status, time.perf_counter() - start))
    connection.close()
    return done


def load(address, sentences, clients, requests, seconds, per_request=1):
    """C clients at once: their figures (latencies None if no request was answered in time)."""
    deadline = time.monotonic() + seconds
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = pool.map(lambda c: client(address, sentences, c * requests, requests, deadline, per_request),
                           range(clients))
        answers = [answer for done in results for answer in done]
    wall = time.perf_counter() - start
    latencies = sorted(seconds * 1000 for _, seconds in answers)
    statuses = {}
    for status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    def percentile(p):
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1) if latencies else None

    p50 = round(statistics.median(latencies), 1) if latencies else None
    return {"clients": clients, "requests": len(answers), "sentences_per_request": per_request,
            "statuses": statuses, "sentences_per_s": round(per_request * statuses.get("200", 0) / wall, 2),
            "p50_ms": p50, "p95_ms": percentile(95), "p99_ms": percentile(99),
            "max_ms": round(latencies[-1], 1) if latencies else None,
            "p99_over_p50": round(percentile(99) / p50, 2) if p50 else None,
            "errors": len(answers) - statuses.get("200", 0)}


def measure(name, model_flags, run_flags, sentences, clients, args, per_request=1):
    process, address = start_server(model_flags, run_flags)
    try:
        for count in clients:
            figures = load(address, sentences, count, args.requests, args.seconds, per_request)
            print(json.dumps({"run": name, "serve_flags": run_flags, **figures}), flush=True)
    finally:
        stop_server(process)


def measure_memory(model_flags, sentences, args):
    """The server's resident memory after warming up, then after each quarter of --memory_requests requests:
    whether it settles or keeps growing."""
    process, address = start_server(model_flags, [])
    try:
        load(address, sentences, 32, 16, args.seconds)  # warm: every decoder shape of these sentences made
        before = rss_mb(process.pid)
        quarters, figures = [], []
        for quarter in range(4):
            figures.append(load(address, sentences, 32, -(-args.memory_requests // 128), 10 * args.seconds))
            quarters.append(round(rss_mb(process.pid), 1))
    finally:
        stop_server(process)
    after = quarters[-1]
    print(json.dumps({"run": "memory", "requests": sum(f["requests"] for f in figures),
                      "errors": sum(f["errors"] for f in figures), "rss_before_mb": round(before, 1),
                      "rss_after_quarters_mb": quarters, "rss_after_mb": after,
                      "rss_growth_mb": round(after - before, 1)}), flush=True)


def main(argv):
    parser = Parser(description=__doc__.splitlines()[0])
    add_flags(parser)
    args, model_flags = parser.parse_known_args(argv)  # the rest goes to serve.py: --logdir or --ct2, ...
    if args.requests < 1 or args.seconds <= 0 or args.memory_requests < 0:
        raise UserError("--requests and --seconds must be positive, --memory_requests 0 or more")
    sentences = [text for _, text in read_sentences(args.sentences, "sentences") if text and text.strip()]
    if not sentences:
        raise UserError(f"{args.sentences} holds no sentence; pass a file of German sentences to --sentences")
    runs = {"batched": lambda: measure("batched", model_flags, [], sentences, CLIENTS, args),
            "paragraphs": lambda: measure("paragraphs", model_flags, [], sentences, [32], args,
                                          per_request=PARAGRAPH),
            "one_at_a_time": lambda: measure("one_at_a_time", model_flags, ["--max_batch_tokens", "1"], sentences,
                                             CLIENTS, args),
            "overload": lambda: measure("overload", model_flags, ["--max_queue", "8"], sentences, [64], args),
            "memory": lambda: measure_memory(model_flags, sentences, args)}
    chosen = [name for name in args.runs.split(",") if name]
    unknown = [name for name in chosen if name not in runs]
    if unknown:
        raise UserError(f"--runs {unknown[0]} is not a run; choose among {', '.join(runs)}")
    for name in chosen:
        if name != "memory" or args.memory_requests:
            runs[name]()


if __name__ == "__main__":
    run(main)
