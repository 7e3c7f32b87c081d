"""What serve.py exposes at /metrics, in Prometheus' text format (prometheus-client).

Named by Prometheus' conventions: a `translation_` prefix, base units
(seconds), `_total` for counters; label values come from a small fixed set
(the routes, the status codes), never from a request's own text. Each
service has its own registry, so that two in one process do not mix.
"""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # seconds
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # sentences in one decoder call


class Metrics:
    def __init__(self, model, max_queue):
        """model: the engine's kind, name, checkpoint names and vocab digest (serve.py's /health says them too)."""
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("translation_http_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=registry)
        self.latency = Histogram("translation_http_request_duration_seconds",
                                 "Time from a request's arrival to its answer", ["route"], buckets=LATENCY,
                                 registry=registry)
        self.queue_wait = Histogram("translation_queue_wait_seconds",
                                    "Time a sentence waited in the queue before its decoder call began",
                                    buckets=LATENCY, registry=registry)
        self.sentences = Counter("translation_sentences", "Sentences translated", registry=registry)
        self.tokens = Counter("translation_source_tokens", "Source tokens translated (</S> included)",
                              registry=registry)
        self.calls = Counter("translation_decoder_calls", "Decoder calls (each translates a batch)",
                             registry=registry)
        self.batch = Histogram("translation_decoder_batch_sentences", "Sentences in one decoder call",
                               buckets=BATCH, registry=registry)
        self.queued = Gauge("translation_queue_sentences", "Sentences waiting for a decoder call now",
                            registry=registry)
        Gauge("translation_queue_capacity_sentences", "Sentences that may wait (--max_queue)",
              registry=registry).set(max_queue)
        Info("translation_model", "The engine and the weights this service translates with",
             registry=registry).info({"engine": model["engine"], "model": model["model"],
                                      "checkpoints": ",".join(model["checkpoints"]),
                                      "vocab_sha256": model["vocab_sha256"]})

    def called(self, jobs, now):
        """A decoder call begins with these batching.Job's."""
        self.calls.inc()
        self.batch.observe(len(jobs))
        self.sentences.inc(len(jobs))
        self.tokens.inc(sum(job.length for job in jobs))
        for job in jobs:
            self.queue_wait.observe(now - job.since)

    def answered(self, route, status, seconds):
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def scrape(self, waiting):
        """The text a scrape gets and its content type."""
        self.queued.set(waiting)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
