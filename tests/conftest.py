"""Shared helpers: fixture files, tiny settings and a synthetic translation task."""
import gzip
import os
import random
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small enough that a few epochs take seconds on two CPU cores.
TINY_MODEL = ["--hidden_units", "32", "--num_blocks", "1", "--num_heads", "2", "--dropout_rate", "0.0"]

# A toy language pair: each German number word has one English translation.
GERMAN = "eins zwei drei vier fuenf sechs sieben acht neun zehn elf zwoelf".split()
ENGLISH = "one two three four five six seven eight nine ten eleven twelve".split()
DICTIONARY = dict(zip(GERMAN, ENGLISH))


def write_lines(path, lines):
    """Writes lines as UTF-8 text (gzip when the name ends in .gz); returns the path as str."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def toy_pairs(count, seed, reverse=False, lengths=(4, 7)):
    """Random German sentences of number words and their word-by-word translations.

    With reverse, the English side is also in reverse order, so the model must
    learn positions as well as words.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = [rng.choice(GERMAN) for _ in range(rng.randint(*lengths))]
        english = [DICTIONARY[w] for w in words]
        pairs.append((" ".join(words), " ".join(english[::-1] if reverse else english)))
    return pairs


def corpus_flags(directory, train_pairs, test_pairs):
    """Writes a train/test corpus under `directory`; returns the flags that point every script at it."""
    flags = []
    for split, pairs in (("train", train_pairs), ("test", test_pairs)):
        flags += [f"--source_{split}", write_lines(directory / f"{split}.de", [s for s, _ in pairs]),
                  f"--target_{split}", write_lines(directory / f"{split}.en", [t for _, t in pairs])]
    return flags + ["--vocab_dir", str(directory / "vocab"), "--logdir", str(directory / "logdir"),
                    "--results_dir", str(directory / "results"), "--min_cnt", "1"]


def decoders_on_test_set(flags):
    """Output on every test sentence, for the model trained with `flags`, of both greedy decoders
    and of beam search with beam size 1 (its best hypothesis)."""
    import tensorflow as tf

    import data_load
    import hyperparams
    from decoding import beam_search_decoder, cached_greedy_decoder, decode_limits, greedy_decoder
    from inference import load_trained

    hp = hyperparams.for_evaluation(hyperparams.parse_args(flags, description="")[0])
    trained = load_trained(hp)
    model = trained.model
    x, _, _ = data_load.load_test_data(hp, trained.src_vocab, trained.tgt_vocab, keep_all=True)
    src = tf.constant(x)
    limits = decode_limits(src, hp)
    beam_one = beam_search_decoder(model, 1, hp.length_penalty)(src, limits)[0][:, 0]
    return tuple(out.numpy() for out in (greedy_decoder(model)(src, limits), cached_greedy_decoder(model)(src, limits),
                                         beam_one))
