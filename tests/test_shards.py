"""prepro.py's id shards: what they hold, their manifest, incremental runs, refusals, and how workers split them."""
import collections
import json
import os

import pytest

import data_load
import prepro
import readers
import shards
import train
import vocab
from messages import UserError
from conftest import TINY_MODEL, corpus_flags, toy_pairs, write_lines
from cli import parse_args
from hyperparams import Hyperparams
from vocab import PAD

PAIRS = 230  # with --shard_pairs 50: shards of 50, 50, 50, 50 and 30 pairs


@pytest.fixture
def corpus(tmp_path):
    pairs = toy_pairs(PAIRS, seed=3, lengths=(1, 12))
    flags = corpus_flags(tmp_path, pairs, toy_pairs(4, seed=4)) + ["--shard_pairs", "50", "--maxlen", "8"]
    prepro.main(flags)
    return Hyperparams(**parse_args(flags, description="")[0]), pairs, flags


def read_back(hp, sizes):
    """Every pair of hp's shards, in shard order, as (source ids, target ids) lists."""
    paths = [os.path.join(shards.shard_dir(hp), e["name"]) for e in shards.shard_manifest(hp)["shards"]]
    pairs = []
    for path in paths:  # one at a time, so that the order is the files'
        pairs += [(a.numpy().tolist(), b.numpy().tolist()) for a, b in data_load.shard_pairs([path], seed=0,
                                                                                              vocab_sizes=sizes)]
    return pairs


def test_shards_hold_every_pair_as_the_vocab_encodes_it(corpus):
    hp, pairs, _ = corpus
    manifest = shards.shard_manifest(hp)
    assert [e["pairs"] for e in manifest["shards"]] == [50, 50, 50, 50, 30]
    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    expected = list(zip(src_vocab.encode([s for s, _ in pairs]), tgt_vocab.encode([t for _, t in pairs])))
    assert read_back(hp, (src_vocab.size, tgt_vocab.size)) == expected  # longer than maxlen too: no filter
    lengths = shards.histogram(manifest["shards"])
    assert lengths == collections.Counter(max(len(a), len(b)) for a, b in expected)
    assert manifest["pairs"] == PAIRS and max(lengths) > hp.maxlen


def test_words_rarer_than_min_cnt_become_unk_as_they_are_read(corpus):
    hp, pairs, _ = corpus
    counts = collections.Counter(w for s, _ in pairs for w in s.split())
    rare = min(counts, key=counts.get)
    src_vocab = vocab.WordVocab.load(os.path.join(hp.vocab_dir, vocab.SRC_VOCAB), counts[rare] + 1)
    tgt_vocab = vocab.WordVocab.load(os.path.join(hp.vocab_dir, vocab.TGT_VOCAB), counts[rare] + 1)
    assert rare not in src_vocab.word2id
    read = read_back(hp, (src_vocab.size, tgt_vocab.size))
    assert read == list(zip(src_vocab.encode([s for s, _ in pairs]), tgt_vocab.encode([t for _, t in pairs])))
    assert any(vocab.UNK in a for a, _ in read)


def test_prepro_again_does_nothing_and_a_new_shard_size_keeps_the_vocab(corpus, capsys):
    hp, _, flags = corpus
    before = {name: os.stat(os.path.join(root, name)).st_mtime_ns
              for root, _, names in os.walk(hp.vocab_dir) for name in names}
    capsys.readouterr()
    prepro.main(flags)
    assert "are up to date" in capsys.readouterr().out.replace("\n", " ")
    after = {name: os.stat(os.path.join(root, name)).st_mtime_ns
             for root, _, names in os.walk(hp.vocab_dir) for name in names}
    assert after == before
    prepro.main(flags + ["--shard_pairs", "100"])
    out = capsys.readouterr().out
    assert "the vocab is up to date" in out and "230 pairs in 3 shards" in out
    assert os.stat(os.path.join(hp.vocab_dir, vocab.SRC_VOCAB)).st_mtime_ns == before[vocab.SRC_VOCAB]
    assert sorted(os.listdir(shards.shard_dir(hp))) == [shards.MANIFEST, *map(shards.shard_name, range(3))]


def cut_shard(hp):
    with open(os.path.join(shards.shard_dir(hp), shards.shard_name(1)), "r+b") as f:
        f.truncate(100)


def other_vocab(hp):
    manifest = shards.shard_manifest(hp)
    manifest["vocab_sha256"] = "0" * 64
    with open(shards.manifest_path(hp), "w") as f:
        json.dump(manifest, f)


@pytest.mark.parametrize("change, message", [
    (lambda hp: os.remove(shards.manifest_path(hp)), "manifest.json not found .* run prepro.py"),
    (cut_shard, "train-00001.tfrecord is missing or is not the shard .* run prepro.py"),
    (other_vocab, "were made from another vocab than the one given now; run prepro.py"),
], ids=["no manifest", "cut shard", "other vocab"])
def test_train_refuses_shards_that_do_not_match(corpus, change, message):
    hp, _, _ = corpus
    change(hp)
    provenance = {"corpus_sha256": readers.corpus_digest(hp.source_train, hp.target_train),
                  "vocab_sha256": vocab.vocab_digest(hp), "vocab_type": hp.vocab_type}
    with pytest.raises(UserError, match=message):
        shards.check_shards(hp, shards.shard_manifest(hp, fix=shards.AGAIN), provenance)


@pytest.mark.e2e
def test_a_shard_damaged_within_stops_training_with_one_line(corpus):
    hp, _, flags = corpus
    with open(os.path.join(shards.shard_dir(hp), shards.shard_name(3)), "r+b") as f:
        f.seek(20)  # inside the first record's ids: the size stays, its checksum fails
        f.write(b"\xff")
    with pytest.raises(UserError, match=r"an id shard in .*ids_word is damaged .* run prepro.py"):
        train.main(flags + TINY_MODEL + ["--num_epochs", "1", "--batch_size", "8"])
    prepro.main(flags)  # finds the damage, and writes the shards again
    train.main(flags + TINY_MODEL + ["--num_epochs", "1", "--batch_size", "8"])


def test_a_subword_vocab_learns_from_a_seeded_sample(tmp_path):
    pairs = toy_pairs(400, seed=5)
    flags = corpus_flags(tmp_path, pairs, toy_pairs(4, seed=4)) + ["--vocab_type", "subword", "--vocab_size", "40"]
    drawn = [prepro.sample(iter(range(1000)), 100, prepro.random.Random(seed)) for seed in (1, 1, 2)]
    assert drawn[0] == drawn[1] != drawn[2] and len(set(drawn[0])) == 100
    assert prepro.sample(iter(range(10)), 100, prepro.random.Random(1)) == list(range(10))  # all, in order
    models = []
    for sample in (100, 100, 800):
        prepro.main(flags + ["--vocab_sample", str(sample), "--vocab_dir", str(tmp_path / f"v{len(models)}")])
        models.append((tmp_path / f"v{len(models)}" / vocab.SUBWORD_MODEL).read_bytes())
    assert models[0] == models[1]  # the same seed, the same sample
    assert models[2] != models[0]  # 800 sentences: the whole corpus, not the sample


@pytest.mark.parametrize("batch_tokens", [0, 24])
def test_two_workers_read_disjoint_shards_and_every_pair_once(corpus, batch_tokens):
    hp, pairs, _ = corpus
    hp = Hyperparams(**{**hp.__dict__, "batch_tokens": batch_tokens, "batch_size": 8})
    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    manifest = shards.shard_manifest(hp)
    epochs = data_load.TrainingSet(hp, manifest, (src_vocab.size, tgt_vocab.size), pipelines=2, replicas=2)
    files = [path for part in epochs.parts for path in part[0]]
    assert sorted(files) == sorted(set(files)) and all(part[0] for part in epochs.parts)
    seen, steps = [], []
    for worker in range(2):
        batches = list(epochs.batches(seed=7, pipeline=worker))
        steps.append(len(batches))
        for src, tgt in batches:
            for a, b in zip(src.numpy(), tgt.numpy()):
                if (a != PAD).any():
                    seen.append((tuple(a[a != PAD]), tuple(b[b != PAD])))
    assert steps[0] == steps[1] == epochs.batches_per_epoch  # the workers keep step
    encoded = zip(src_vocab.encode([s for s, _ in pairs]), tgt_vocab.encode([t for _, t in pairs]))
    fitting = [(tuple(a), tuple(b)) for a, b in encoded if max(len(a), len(b)) <= hp.maxlen]
    if batch_tokens:  # every pair that fits maxlen, exactly once across the two workers
        assert sorted(seen) == sorted(fitting)
    else:  # each worker drops its last partial batch (of 8 / 2 replicas), as one device drops its own
        assert collections.Counter(seen) <= collections.Counter(fitting)
        assert len(fitting) - len(seen) < 2 * 4
    assert epochs.pairs == len(fitting)


def test_a_resumed_epoch_skips_exactly_the_batches_done(corpus):
    hp, _, _ = corpus
    hp = Hyperparams(**{**hp.__dict__, "batch_tokens": 24})
    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    epochs = data_load.TrainingSet(hp, shards.shard_manifest(hp), (src_vocab.size, tgt_vocab.size))
    whole = [s.numpy().tolist() for s, _ in epochs.batches(seed=3)]
    assert len(whole) == epochs.batches_per_epoch
    assert [s.numpy().tolist() for s, _ in epochs.batches(seed=3, done=5)] == whole[5:]
    assert [s.numpy().tolist() for s, _ in epochs.batches(seed=4)] != whole


def test_a_line_count_mismatch_is_found_while_streaming(tmp_path):
    src = write_lines(tmp_path / "a.de", ["eins", "zwei", "drei"])
    tgt = write_lines(tmp_path / "a.en", ["one", "two"])
    with pytest.raises(UserError, match=r"a.de has 3 lines but .*a.en has 2"):
        list(readers.iter_parallel(src, tgt))
    with pytest.raises(UserError, match=r"a.en has 2 lines but .*a.de has 3"):
        list(readers.iter_parallel(tgt, src))
