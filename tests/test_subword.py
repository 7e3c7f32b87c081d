"""The subword path end to end: a joint SentencePiece vocab on raw text, shared embeddings, the paper's
schedule, dev BLEU with the best checkpoint, beam search and checkpoint averaging."""
import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import shapes
import eval as evaluate
import hyperparams
import prepro
import train
import vocab
import weights
from cli import parse_args
from conftest import ROOT, corpus_flags, toy_pairs, write_lines
from hyperparams import Hyperparams
from messages import UserError
from model import build_model


def raw(pairs, seed):
    """Toy pairs as raw text: capitals, a comma, a number and a full stop, the same on both sides."""
    out = []
    for i, (de, en) in enumerate(pairs):
        number = (i * 7 + seed) % 100
        out.append((f"{de.capitalize()}, {number}.", f"{en.capitalize()}, {number}."))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("subword")
    train_pairs = raw(toy_pairs(2000, seed=1, reverse=True), 0)
    seen = set(train_pairs)
    test_pairs = [p for p in raw(toy_pairs(60, seed=2, reverse=True), 3) if p not in seen]
    dev = ["--source_dev", write_lines(directory / "dev.de", [s for s, _ in test_pairs[:30]]),
           "--target_dev", write_lines(directory / "dev.en", [t for _, t in test_pairs[:30]])]
    flags = corpus_flags(directory, train_pairs, test_pairs) + dev + [
        "--vocab_type", "subword", "--vocab_size", "100", "--maxlen", "32", "--seed", "3"]
    prepro.main(flags)
    return directory, flags, train_pairs, test_pairs


def test_the_vocab_is_reproducible_and_round_trips_raw_text(corpus, tmp_path):
    directory, flags, train_pairs, _ = corpus
    prepro.main(flags + ["--vocab_dir", str(tmp_path)])
    model = vocab.SUBWORD_MODEL
    assert (tmp_path / model).read_bytes() == (directory / "vocab" / model).read_bytes()
    src, tgt = vocab.load_vocabs(Hyperparams(**parse_args(flags, description="")[0]))
    assert src is tgt and src.size == 100
    sentences = [s for pair in train_pairs[:200] for s in pair]
    ids = src.encode(sentences)
    assert all(row[-1] == vocab.EOS and min(row) > vocab.BOS for row in ids)  # no specials inside
    assert src.decode(shapes.pad(ids, max(map(len, ids)))) == sentences  # punctuation, digits, case kept
    assert src.encode([]) == [] and src.decode([]) == [] and src.decode([[vocab.EOS]]) == [""]


HOST_TOKENIZER = """
import json, sys
import vocab
from hyperparams import Hyperparams
subword = vocab.load_vocabs(Hyperparams(vocab_type="subword", vocab_dir=sys.argv[1]))[0]
ids = subword.encode(json.loads(sys.stdin.read()))
print(json.dumps({"ids": ids, "text": subword.decode([row[:-1] for row in ids]),
                  "tensorflow_text": sorted(m for m in sys.modules if m.startswith("tensorflow_text"))}))
"""


@pytest.mark.e2e
def test_the_scripts_split_text_as_an_exported_model_does_without_loading_tensorflow_text(corpus):
    directory, _, train_pairs, _ = corpus
    lines = [s for pair in train_pairs[:50] for s in pair] + [
        "", "  two  spaces ", "Ünïcödé ﬁ ＡＢＣ 42", "日本語", "tab\there", "zero\u200bwidth"]
    result = subprocess.run([sys.executable, "-c", HOST_TOKENIZER, str(directory / "vocab")], cwd=ROOT,
                            input=json.dumps(lines), capture_output=True, text=True, timeout=120, check=True)
    host = json.loads(result.stdout)
    assert host["tensorflow_text"] == []  # its op libraries cost every process 120 MB
    graph = vocab.SubwordVocab.load(str(directory / "vocab" / vocab.SUBWORD_MODEL)).graph_tokenizer()
    assert host["ids"] == [row + [vocab.EOS] for row in graph.tokenize(tf.constant(lines)).to_list()]
    expected = [t.decode("utf-8") for t in graph.detokenize(tf.ragged.constant([row[:-1] for row in host["ids"]],
                                                                               dtype=tf.int32)).numpy()]
    assert host["text"] == expected
    assert host["text"][:100] == lines[:100]  # the training text comes back as it was


def test_too_many_pieces_for_the_corpus_is_a_clear_error(corpus, tmp_path):
    _, flags, _, _ = corpus
    with pytest.raises(UserError, match=r"cannot build --vocab_size 5000 pieces from this training text "
                       r"\(Vocabulary size too high \(5000\)\. Please set it to a value <= \d+\.\); "
                       r"pass a smaller --vocab_size$"):
        prepro.main(flags + ["--vocab_size", "5000", "--vocab_dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def events(logdir):
    """{tag: {step: value}} of the summaries in logdir's event files (an image: [width, height, PNG bytes])."""
    found = {}
    for path in tf.io.gfile.glob(str(logdir / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return found


@pytest.fixture(scope="module")
def trained(corpus):
    """The corpus with a model trained on it six epochs, evaluating on dev: (corpus, what train.py printed)."""
    directory, flags, _, _ = corpus
    model_flags = ["--hidden_units", "64", "--num_blocks", "1", "--num_heads", "4", "--dropout_rate", "0",
                   "--share_embeddings", "true", "--lr_schedule", "paper", "--warmup_steps", "100",
                   "--lr_scale", "0.25", "--dev_eval", "true", "--eval_every", "40", "--num_epochs", "6"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train.main(flags + model_flags + ["--summary_every", "25"])
    return corpus, printed.getvalue()


@pytest.mark.e2e
def test_a_subword_model_learns_and_is_scored_on_raw_text(trained):
    (directory, flags, _, test_pairs), printed = trained
    logdir = directory / "logdir"
    lines = re.findall(r"^epoch (\d+): step (\d+), mean_loss [\d.]+, acc [\d.]+, dev BLEU [\d.]+ \(best [\d.]+\), "
                       r"[\d,]+ tokens/s, \d+ batch shapes, \d+ s, saved .*model_epoch_\d\d_gs_\d+$", printed, re.M)
    assert lines == [(str(e), str(62 * e)) for e in range(1, 7)]

    # TensorBoard: every 25 steps and at each of the 6 epochs' ends (62 steps each) the training scalars;
    # after each epoch and every 40 steps the dev scores, samples and an attention image
    logged = events(logdir)
    reported = sorted({25 * i for i in range(1, 15)} | {62 * e for e in range(1, 7)})
    for tag in "mean_loss", "acc", "lr", "tokens_per_s":
        assert sorted(logged[tag]) == reported, tag
    assert {step: int(n) for step, n in logged["batch_shapes"].items()} == {62 * e: 1 for e in range(1, 7)}
    assert sorted(logged["grad_norm"]) == [25 * i for i in range(1, 15)]  # measured on every 25th step
    evaluated = sorted([62 * e for e in range(1, 7)] + [40 * i for i in range(1, 10)])
    for tag in "dev_loss", "dev_acc", "dev_bleu", "dev_samples", "dev_attention":
        assert sorted(logged[tag]) == evaluated, tag
    assert "**translation:**" in logged["dev_samples"][62].item().decode()
    norms, speeds = (np.array([float(v) for v in logged[tag].values()]) for tag in ("grad_norm", "tokens_per_s"))
    assert (norms > 0).all() and np.isfinite(norms).all() and (speeds > 0).all()
    dev_loss = [float(logged["dev_loss"][step]) for step in evaluated]
    assert dev_loss[-1] < dev_loss[0] / 2  # teacher-forced dev loss falls as the model learns
    assert dev_loss[-1] == pytest.approx(float(logged["mean_loss"][372]), rel=0.5)  # on the training loss' scale
    width, height, png = logged["dev_attention"][372]
    image = tf.image.decode_png(png)
    assert (int(width), int(height)) == (4 * 300, 300)  # the last layer's cross-attention, one map per head
    assert image.shape[:2] == (300, 4 * 300) and int(tf.math.reduce_std(tf.cast(image, tf.float32))) > 0
    assert max(map(float, logged["lr"].values())) < 0.25 * 64 ** -0.5 * 100 ** -0.5 + 1e-9
    best = checkpoints.best_record(str(logdir))
    assert best["dev_bleu"] == pytest.approx(max(map(float, logged["dev_bleu"].values())), abs=1e-4)

    # the test set, translated with beam search from the best checkpoint, detokenized and scored on raw text
    evaluate.main(flags + ["--best", "--beam_size", "3", "--all"])
    name = re.sub(r".*/", "", best["checkpoint"]) + "_best_beam3"
    results = (directory / "results" / name).read_text()
    scores = json.loads((directory / "results" / (name + ".json")).read_text())
    got = re.findall(r"- got: (.*)\n", results)
    assert len(got) == len(test_pairs) and scores["settings"]["vocab_type"] == "subword"
    assert sum(g == t for g, (_, t) in zip(got, test_pairs)) > len(test_pairs) / 2  # "Nine two, 42." exactly
    assert scores["sacrebleu"] > 60 and scores["sacrebleu_lowercase"] >= scores["sacrebleu"]


@pytest.mark.e2e
def test_averaging_checkpoints_averages_their_weights(trained):
    (directory, flags, _, _), _ = trained
    hp = hyperparams.for_evaluation(parse_args(flags, description="")[0])
    subword = vocab.load_vocabs(hp)[0]
    model = build_model(hp, subword.size, subword.size)
    paths = weights.newest(hp.logdir, 2)
    assert [p.rsplit("_gs_", 1)[0][-2:] for p in paths] == ["05", "06"]  # the epoch 5 and 6 checkpoints
    values = []
    for path in paths:
        weights.restore(model, hp, path)
        values.append([w.numpy() for w in model.weights])
    weights.average(model, hp, paths)
    for weight, a, b in zip(model.weights, *values):
        np.testing.assert_allclose(weight.numpy(), (a + b) / 2, rtol=1e-6, atol=1e-7)
    evaluate.main(flags + ["--average_checkpoints", "2"])
    assert (directory / "results" / (paths[-1].rsplit("/", 1)[-1] + "_avg2")).exists()


def test_a_missing_or_broken_subword_model_is_a_clear_error(tmp_path):
    hp = Hyperparams(vocab_type="subword", vocab_dir=str(tmp_path))
    with pytest.raises(UserError, match="subword.model not found; run prepro.py --vocab_type subword first"):
        vocab.load_vocabs(hp)
    (tmp_path / vocab.SUBWORD_MODEL).write_bytes(b"no model")
    manifest = {"files": {vocab.SUBWORD_MODEL: hashlib.sha256(b"no model").hexdigest()}, "source_train": "a.de",
                "target_train": "a.en", "sha256": "0" * 64}
    (tmp_path / vocab.VOCAB_MANIFEST).write_text(json.dumps(manifest))  # as if prepro.py had written it
    with pytest.raises(UserError, match="subword.model is not a SentencePiece model; rebuild it with prepro.py"):
        vocab.load_vocabs(hp)


@pytest.mark.e2e
def test_the_exported_subword_model_translates_raw_text_as_translate_does(trained, tmp_path):
    import export
    import engines
    from test_export import exported_translations
    (directory, flags, _, test_pairs), _ = trained
    export.main(flags + ["--beam_size", "2", "--out", str(tmp_path / "saved")])
    german = [s for s, _ in test_pairs[:8]] + [""]
    hp = hyperparams.for_evaluation(parse_args(flags + ["--beam_size", "2"], description="")[0])
    expected = [hypotheses[0][0] for hypotheses in engines.open_engine(hp)(german)]
    assert exported_translations(tmp_path / "saved", german, "subword") == expected
    assert expected[0][0].isupper() and expected[0].endswith(".")  # cased, punctuated raw text
