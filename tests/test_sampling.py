"""Subword regularization (--subword_alpha, --subword_nbest): sampled pieces, drawn at prepro time, one set
of shards per epoch; what they hold, that they are reproducible, and that only training sees them."""
import os

import numpy as np
import pytest
import tensorflow as tf

import data_load
import prepro
import shards
import train
import vocab
from cli import parse_args
from conftest import TINY_MODEL, corpus_flags, toy_pairs, with_logdir
from hyperparams import Hyperparams
from messages import UserError
from vocab import PAD

SAMPLING = ["--subword_alpha", "0.1", "--subword_nbest", "0", "--num_epochs", "3"]


def raw_pairs(count, seed):
    """Toy pairs written as words that a small subword vocab cuts in more than one way."""
    return [(de.replace(" ", "en ").capitalize() + ".", en.capitalize() + ".")
            for de, en in toy_pairs(count, seed=seed)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sampling")
    flags = corpus_flags(directory, raw_pairs(300, 1), raw_pairs(10, 2)) + [
        "--vocab_type", "subword", "--vocab_size", "80", "--maxlen", "64", "--seed", "5"]
    prepro.main(flags + SAMPLING)
    return directory, flags


def settings(flags):
    return Hyperparams(**parse_args(flags, description="")[0])


def pairs_of(hp, entries):
    """Every pair of some shards (manifest entries), in file order."""
    paths = [os.path.join(shards.shard_dir(hp), e["name"]) for e in entries]
    return [(a.numpy().tolist(), b.numpy().tolist())
            for path in paths for a, b in data_load.shard_pairs([path], seed=0, vocab_sizes=(80, 80))]


def test_a_sample_differs_from_the_best_pieces_and_decodes_to_the_same_text(corpus):
    directory, flags = corpus
    subword = vocab.SubwordVocab.load(str(directory / "vocab" / vocab.SUBWORD_MODEL))
    sentences = [de for de, _ in raw_pairs(50, 3)]
    best = subword.encode(sentences)
    drawn = subword.sample(sentences, alpha=0.1, nbest=0, seed=11)
    assert sum(a != b for a, b in zip(drawn, best)) > 25  # most sentences are cut otherwise
    assert all(row[-1] == vocab.EOS for row in drawn)
    assert subword.decode(drawn) == subword.decode(best) == sentences
    assert subword.sample(sentences, alpha=0.1, nbest=0, seed=11) == drawn  # the same seed, the same pieces
    assert subword.sample(sentences, alpha=0.1, nbest=0, seed=12) != drawn
    assert subword.encode(sentences) == best  # sampling leaves the best segmentation as it was
    nbest = subword.sample(sentences, alpha=0.1, nbest=4, seed=11)
    assert nbest != drawn and subword.decode(nbest) == sentences


def test_prepro_writes_one_set_of_sampled_shards_per_epoch(corpus, tmp_path):
    directory, flags = corpus
    hp = settings(flags + SAMPLING)
    manifest = shards.shard_manifest(hp)
    assert manifest["sampling"] == {"alpha": 0.1, "nbest": 0, "sets": 3, "seed": 5}
    assert len(manifest["samples"]) == 3
    best = pairs_of(hp, manifest["shards"])
    subword = vocab.SubwordVocab.load(str(directory / "vocab" / vocab.SUBWORD_MODEL))
    texts = subword.decode([s for s, _ in best]), subword.decode([t for _, t in best])
    sets = [pairs_of(hp, entries) for entries in manifest["samples"]]
    for drawn in sets:  # the same pairs in the same order, cut into other pieces
        assert drawn != best
        assert (subword.decode([s for s, _ in drawn]), subword.decode([t for _, t in drawn])) == texts
    assert sets[0] != sets[1] != sets[2]
    # the same settings and seed write the same files; another seed other samples
    for seed, same in (("5", True), ("6", False)):
        prepro.main(flags + SAMPLING + ["--vocab_dir", str(tmp_path / seed), "--seed", seed])
        again = shards.shard_manifest(settings(flags + ["--vocab_dir", str(tmp_path / seed)]))
        assert ([e["sha256"] for s in again["samples"] for e in s]
                == [e["sha256"] for s in manifest["samples"] for e in s]) == same


def test_prepro_without_sampling_writes_no_sets_and_then_adds_them(corpus, tmp_path, capsys):
    directory, flags = corpus
    mine = flags + ["--vocab_dir", str(tmp_path)]
    prepro.main(mine)
    assert "samples" not in shards.shard_manifest(settings(mine))
    prepro.main(mine + SAMPLING)  # the vocab stays; the shards are written with their samples
    assert "the vocab is up to date" in capsys.readouterr().out
    assert len(shards.shard_manifest(settings(mine))["samples"]) == 3
    prepro.main(mine + SAMPLING)
    assert "nothing to do" in capsys.readouterr().out
    prepro.main(mine)  # and back: the sampled shards go
    assert not [n for n in os.listdir(tmp_path / "ids_subword") if n.startswith("sample")]


def training_set(flags, **changes):
    hp = Hyperparams(**{**settings(flags + SAMPLING).__dict__, "batch_tokens": 128, **changes})
    return hp, data_load.TrainingSet(hp, shards.shard_manifest(hp), (80, 80))


def ids(batches):
    return [(s.numpy().tolist(), t.numpy().tolist()) for s, t in batches]


def test_each_epoch_reads_its_own_set_and_a_resumed_epoch_the_same_batches(corpus):
    _, flags = corpus
    hp, epochs = training_set(flags)
    manifest = shards.shard_manifest(hp)
    assert len(epochs.sets) == 3
    per_epoch = [ids(epochs.batches(seed=7, epoch=e)) for e in (1, 2, 3, 4)]
    assert all(len(batches) == epochs.batches_per_epoch for batches in per_epoch)
    for epoch, batches in enumerate(per_epoch[:3]):  # epoch e holds set e's pairs, each once
        seen = sorted((tuple(x for x in a if x != PAD), tuple(x for x in b if x != PAD))
                      for src, tgt in batches for a, b in zip(src, tgt) if any(a))
        assert seen == sorted((tuple(a), tuple(b)) for a, b in pairs_of(hp, manifest["samples"][epoch]))
    assert per_epoch[3] == per_epoch[0]  # a fourth epoch reads the first set again (same seed here)
    assert ids(epochs.batches(seed=7, done=4, epoch=2)) == per_epoch[1][4:]  # resumed mid-epoch
    best = training_set(flags, subword_alpha=0.0)[1]
    assert len(best.sets) == 1 and ids(best.batches(seed=7, epoch=2)) != per_epoch[1]


def test_train_refuses_shards_without_the_samples_it_asks_for(corpus, tmp_path):
    _, flags = corpus
    mine = flags + ["--vocab_dir", str(tmp_path)]
    prepro.main(mine)
    with pytest.raises(UserError, match=r"hold no segmentations sampled with --subword_alpha 0.1 --subword_nbest 0; "
                                        r"run prepro.py with these settings"):
        manifest = shards.shard_manifest(settings(mine))
        shards.check_shards(settings(mine + SAMPLING), manifest,
                            {k: manifest[k] for k in ("corpus_sha256", "vocab_sha256", "vocab_type")})
    with pytest.raises(UserError, match="--subword_alpha samples subword pieces; it needs --vocab_type subword"):
        Hyperparams(subword_alpha=0.1)
    with pytest.raises(UserError, match="--subword_nbest must be 0 .all segmentations. or at least 2, got 1"):
        Hyperparams(vocab_type="subword", subword_alpha=0.1, subword_nbest=1)


def weights(logdir):
    reader = tf.train.load_checkpoint(str(logdir))
    names = [n for n, _ in tf.train.list_variables(str(logdir)) if n.startswith("model/")]
    return {n: reader.get_tensor(n) for n in names}


@pytest.mark.e2e
def test_a_run_stopped_mid_epoch_resumes_to_the_weights_of_one_that_was_not(corpus, tmp_path, capsys):
    _, flags = corpus
    run = flags + SAMPLING + TINY_MODEL + ["--batch_tokens", "128", "--num_epochs", "2"]
    train.main(with_logdir(run, tmp_path / "whole"))
    assert "each epoch trains on its own sampled pieces (--subword_alpha 0.1, 3 sets" in capsys.readouterr().out
    hp, epochs = training_set(flags)
    stop = epochs.batches_per_epoch + 3  # in the second epoch, on the second set
    train.main(with_logdir(run, tmp_path / "resumed") + ["--max_steps", str(stop)])
    train.main(with_logdir(run, tmp_path / "resumed"))
    assert f"resuming from {tmp_path / 'resumed'}" in capsys.readouterr().out
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
