"""What bench.py times: a training step, and decoding with each engine (ours and CTranslate2).

Each function imports only what it needs, so that a CTranslate2 measurement
runs in a process without TensorFlow and its peak memory is its own.
Decoding runs on an untrained model whose </S> logit is pushed down, so that
every sentence decodes to exactly --decode_len tokens in every engine: the
figures compare the same work. One call over all sentences gives
sentences_per_s; with one sentence per call, each of the sentences is timed
alone after an untimed pass, and ms_per_sentence is the median.
"""
import os
import re
import resource
import statistics
import tempfile
import time

import numpy as np

from vocab import EOS, PAD, SPECIALS

VOCAB = 4000  # ids per side of the synthetic pairs


def synthetic_pairs(count, maxlen, seed):
    """Padded id arrays (count, maxlen) x2 with random lengths 4..maxlen (incl. </S>) per side."""
    rng = np.random.default_rng(seed)
    x, y = np.full((2, count, maxlen), PAD, np.int32)
    for row, (a, b) in enumerate(rng.integers(4, maxlen + 1, (count, 2))):
        x[row, :a - 1], x[row, a - 1] = rng.integers(4, VOCAB, a - 1), EOS
        y[row, :b - 1], y[row, b - 1] = rng.integers(4, VOCAB, b - 1), EOS
    return x, y


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def training_rate(hp, pairs, batch_tokens, train_steps, untimed_steps):
    """Target tokens per second over timed steps, after warm-up steps; the share of real (non-pad)
    tokens among the batches' positions, and the number of distinct batch shapes met."""
    import keras

    import data_load
    from model import build_model
    from optimizer import make_optimizer
    from training import TrainStep

    x, y, vocabs = pairs
    keras.utils.set_random_seed(hp.seed)
    model = build_model(hp, *vocabs)
    optimizer = make_optimizer(hp, total_steps=untimed_steps + train_steps)
    optimizer.build(model.trainable_variables)
    train_step = TrainStep(model, optimizer, hp.label_smoothing, jit=hp.jit, rdrop_alpha=hp.rdrop_alpha)
    dataset = data_load.train_batches(data_load.array_pairs(x, y)[0], maxlen=x.shape[1], batch_size=hp.batch_size,
                                      seed=hp.seed, batch_tokens=batch_tokens)
    train_step.expect(dataset.element_spec)
    batches = iter(dataset.repeat())
    seen = []  # the batches run; counted after timing, not inside it

    def step():
        seen.append(next(batches))
        train_step([seen[-1]])

    for _ in range(untimed_steps):
        step()
    before = train_step.interval.tokens.numpy()  # waits for the device
    start = time.perf_counter()
    for _ in range(train_steps):
        step()
    tokens = train_step.interval.tokens.numpy() - before
    seconds = time.perf_counter() - start
    sides = [side.numpy() for batch in seen for side in batch]
    return {"tokens_per_s": tokens / seconds, "steps_per_s": train_steps / seconds,
            "real_token_share": sum(int((ids != PAD).sum()) for ids in sides) / sum(ids.size for ids in sides),
            "batch_shapes": len({(src.shape, tgt.shape) for src, tgt in seen})}


def decoding_model(hp, vocabs):
    """An untrained model whose </S> logit is pushed down, so every sentence decodes to its limit."""
    import keras
    import tensorflow as tf

    from model import build_model

    keras.utils.set_random_seed(hp.seed)
    model = build_model(hp, *vocabs)
    bias = model.output_projection.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[EOS]], [-1e4]))
    return model


def timed(decode, sources, one_at_a_time):
    """decode(list of rows) timed over all sources at once (after a compiling call on the first two), or over
    each source alone (after an untimed pass over all): sentences/s, and the median ms per sentence."""
    if not one_at_a_time:
        decode(sources[:2])
        start = time.perf_counter()
        decode(sources)
        return {"sentences_per_s": len(sources) / (time.perf_counter() - start)}
    for row in sources:
        decode([row])
    seconds = []
    for row in sources:
        start = time.perf_counter()
        decode([row])
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"sentences_per_s": 1 / median, "ms_per_sentence": 1000 * median}


def measure_ours(model, name, rows, decode_len, beam_size, one_at_a_time):
    """Our decoders (decode_cached, decode_full; beam search with beam_size > 1) on id rows: timed(); for
    decode_cached greedily in one call, whether it equals decode_full's output."""
    import tensorflow as tf

    from decoding import cached_greedy_decoder, greedy_decoder, make_decoder
    from inference import source_batch

    make = {"decode_cached": lambda: make_decoder(model, beam_size, 0.6), "decode_full": lambda: greedy_decoder(model)}
    decoder = make[name]()

    def decode(batch):
        src = source_batch(batch)
        return decoder(src, tf.fill((src.shape[0],), decode_len))

    record = timed(decode, rows, one_at_a_time)
    if name == "decode_cached" and beam_size == 1 and not one_at_a_time:  # the full decoder as the reference
        src, limits = source_batch(rows), tf.fill((len(rows),), decode_len)
        cached, full = cached_greedy_decoder(model)(src, limits), greedy_decoder(model)(src, limits)
        record["identical_to_full"] = bool(np.array_equal(cached.numpy(), full.numpy()))
    return record


def tokens(vocab_size):
    """The synthetic vocab's tokens: the specials, then w4, w5, ..."""
    return list(SPECIALS) + [f"w{i}" for i in range(len(SPECIALS), vocab_size)]


def export_ct2(model, hp, vocab_size, directory, positions):
    """The model as CTranslate2 exports in directory/float32 and directory/int8 (ct2_export.py), as export.py
    makes them."""
    import ct2_export
    from modules import LAYER_NORM_EPSILON, sinusoid

    table = sinusoid(positions, hp.hidden_units).numpy()
    spec_tokens = [tokens(vocab_size)] * 2
    for quantization in ("float32", "int8"):
        spec = ct2_export.model_spec(model, hp, spec_tokens, table, LAYER_NORM_EPSILON)
        ct2_export.write_export(spec, os.path.join(directory, quantization), quantization, [])


def selected_isa(log):
    """The instruction set CTranslate2 chose, from its verbose log ("Selected ISA: AVX2"), or None."""
    found = re.search(r"Selected ISA: (\w+)", log)
    return found[1] if found else None


def measure_ct2(directory, rows, decode_len, beam_size, one_at_a_time):
    """CTranslate2 on the export in directory: timed(), and the CPU instruction set it selected."""
    os.environ["CT2_VERBOSE"] = "1"  # it logs its CPU and the instruction set it selects
    import ctranslate2

    from ct2 import usable_cores

    with tempfile.TemporaryFile() as log:
        stderr = os.dup(2)
        os.dup2(log.fileno(), 2)  # its C++ logger writes to the file descriptor
        try:
            translator = ctranslate2.Translator(directory, device="auto", intra_threads=usable_cores())
        finally:
            os.dup2(stderr, 2)
            os.close(stderr)
        log.seek(0)
        isa = selected_isa(log.read().decode("utf-8", "replace"))
    vocab = tokens(VOCAB)

    def decode(batch):
        sources = [[vocab[i] for i in row if i not in (PAD, EOS)] for row in batch]
        return translator.translate_batch(sources, beam_size=beam_size, max_decoding_length=decode_len,
                                          min_decoding_length=0, max_input_length=0)

    return {**timed(decode, rows, one_at_a_time), "ct2_isa": isa, "ct2": ctranslate2.__version__,
            "ct2_threads": usable_cores()}
