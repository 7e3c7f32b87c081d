"""Translates the test set with a trained model and scores it: results/<checkpoint name>.

The results file has the original's format (source, expected, got, blank line
per sentence) and ends with `Bleu Score = <float>`, computed as the original
did; a sacreBLEU score of the same translations is printed beside it.
"""
import dataclasses
import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console

import sacrebleu
import tensorflow as tf
from nltk.translate.bleu_score import corpus_bleu
from tqdm import tqdm

import data_load
import hyperparams
from data_load import EOS
from hyperparams import UserError, parse_args, run, write_atomic
from model import build_model, cached_greedy_decoder, decode_limits


def add_eval_flags(parser):
    parser.add_argument("--ckpt", default=None, metavar="PATH",
                        help="checkpoint to evaluate, e.g. logdir/model_epoch_20_gs_1000 (default: latest in logdir)")
    parser.add_argument("--all", action="store_true", default=False,
                        help="evaluate every test sentence, not only those that fit the training maxlen")


def ids_to_text(ids, id2word):
    """A decoded id row -> the words before the first </S>."""
    words = []
    for i in ids:
        if i == EOS:
            break
        words.append(id2word[i])
    return " ".join(words)


def original_bleu(references, hypotheses):
    """nltk corpus BLEU x 100 over the pairs where both sides have more than 3 words, as the original.

    Returns (score, number of pairs scored); 0.0 when no pair qualifies.
    """
    pairs = [(r.split(), h.split()) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if len(r) > 3 and len(h) > 3]
    if not pairs:
        return 0.0, 0
    return 100 * corpus_bleu([[r] for r, _ in pairs], [h for _, h in pairs]), len(pairs)


def results_text(sources, references, hypotheses, bleu):
    """The original's results file: one block per sentence, then the BLEU line."""
    blocks = [f"- source: {s}\n- expected: {r}\n- got: {h}\n\n"
              for s, r, h in zip(sources, references, hypotheses)]
    return "".join(blocks) + f"Bleu Score = {bleu}\n"


def restore(model, hp, ckpt):
    """Loads the model weights of checkpoint `ckpt` (default: the latest in logdir); returns its path."""
    path = ckpt or tf.train.latest_checkpoint(hp.logdir)
    if path is None:
        raise UserError(f"no checkpoint in {hp.logdir}; run train.py first (or pass --ckpt)")
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"{path}: no such checkpoint; pass a path like {hp.logdir}/model_epoch_01_gs_100")
    try:
        tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()
    except (ValueError, AssertionError) as e:
        raise UserError(f"{path} does not fit the vocab in {hp.vocab_dir} or the settings in "
                        f"{hyperparams.hparams_path(hp.logdir)} ({str(e).splitlines()[0]})") from None
    return path


def translate(model, x, hp, id2word):
    """Greedy translations of the source ids x (n, T1), in batches, as text."""
    decode = cached_greedy_decoder(model)
    hypotheses = []
    batches = data_load.eval_batches(x, hp.batch_size)
    for src in tqdm(batches, total=math.ceil(len(x) / hp.batch_size), desc="decoding", unit="batch"):
        limits = decode_limits(src, extra=hp.decode_extra, cap=hp.decode_cap)
        hypotheses += [ids_to_text(row, id2word) for row in decode(src, limits).numpy()]
    return hypotheses


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_eval_flags)
    hp = hyperparams.for_evaluation(explicit)
    hyperparams.check_writable(hp.results_dir, "results_dir")

    (src_w2i, _), (tgt_w2i, tgt_i2w) = data_load.load_vocabs(hp)
    x, sources, references = data_load.load_test_data(hp, src_w2i, tgt_w2i, keep_all=args.all)
    if not hp.sinusoid:
        x = x[:, :hp.maxlen]  # learned positions exist only up to maxlen

    model = build_model(hp, len(src_w2i), len(tgt_w2i))
    ckpt = restore(model, hp, args.ckpt)
    hypotheses = translate(model, x, hp, tgt_i2w)

    bleu, scored = original_bleu(references, hypotheses)
    path = os.path.join(hp.results_dir, os.path.basename(ckpt))
    write_atomic(path, results_text(sources, references, hypotheses, bleu))
    scores = score(references, hypotheses, bleu, hp, ckpt)
    write_atomic(path + ".json", json.dumps(scores, indent=2) + "\n")
    print(f"{path}: {len(hypotheses)} sentences; Bleu Score = {bleu:.2f} "
          f"(nltk, the original's rule: {scored} pairs of more than 3 words)")
    print(f"sacreBLEU = {scores['sacrebleu']:.2f}, chrF = {scores['chrf']:.2f} on all {len(hypotheses)} "
          f"sentences ({scores['sacrebleu_signature']}); all scores in {path}.json")


def score(references, hypotheses, bleu, hp, ckpt):
    """The scores of a results file, for <results file>.json: sacreBLEU and chrF over every
    translated sentence (with sacreBLEU's signature), the original's nltk BLEU, and what was scored."""
    metric = sacrebleu.BLEU()
    return {"sacrebleu": metric.corpus_score(hypotheses, [references]).score,
            "sacrebleu_signature": str(metric.get_signature()),
            "chrf": sacrebleu.CHRF().corpus_score(hypotheses, [references]).score,
            "nltk_bleu": bleu, "sentences": len(hypotheses), "checkpoint": ckpt,
            "settings": dataclasses.asdict(hp)}


if __name__ == "__main__":
    run(main)
