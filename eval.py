"""Translates the test set with a trained model and scores it: results/<checkpoint name>.

The results file has the original's format (source, expected, got, blank line
per sentence) and ends with `Bleu Score = <float>`, computed as the original
did; <results file>.json holds sacreBLEU, chrF, what was translated and the
settings. The model is the latest checkpoint, --ckpt, --best (highest dev
BLEU), or the average of the newest --average_checkpoints; it decodes
greedily or with --beam_size. With --ct2 DIR its CTranslate2 export
translates, without TensorFlow, into a results file of its own name.
"""
import dataclasses
import json
import os
import warnings

import cli
import sacrebleu
from nltk.translate.bleu_score import corpus_bleu

import engines
from cli import parse_args, run
from files import check_writable, write_files
import readers
from readers import refine

# The settings eval.py reads (--help lists these; the model's own come from hparams.json or export.json)
SETTINGS = ("dataset", "test_split", "source_test", "target_test", "vocab_dir", "logdir", "batch_size", "seed",
            "results_dir", "decode_extra", "decode_maxlen", "beam_size", "length_penalty", "average_checkpoints",
            "sampling_topk", "sampling_temperature", "preset")


def add_eval_flags(parser):
    engines.add_model_flags(parser, verb="evaluate", ensemble=True)
    parser.add_argument("--all", action="store_true", default=False,
                        help="evaluate every test sentence, not only those that fit the training maxlen")


def original_bleu(references, hypotheses):
    """nltk corpus BLEU x 100 over the pairs where both sides have more than 3 words, as the original.

    Both sides are refined first, as the original's text was, so that subword
    models' raw-text translations are scored on the same words as word models'
    (refining refined text changes nothing). Returns (score, number of pairs
    scored); 0.0 when no pair qualifies. (nltk warns when no 4-gram matches,
    as with a weak model: that is the score, not a problem, so it is not shown.)
    """
    pairs = [(refine(r).split(), refine(h).split()) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if len(r) > 3 and len(h) > 3]
    if not pairs:
        return 0.0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return 100 * corpus_bleu([[r] for r, _ in pairs], [h for _, h in pairs]), len(pairs)


def results_text(sources, references, hypotheses, bleu):
    """The original's results file: one block per sentence, then the BLEU line."""
    blocks = [f"- source: {s}\n- expected: {r}\n- got: {h}\n\n"
              for s, r, h in zip(sources, references, hypotheses)]
    return "".join(blocks) + f"Bleu Score = {bleu}\n"


def results_name(engine, hp):
    """The results file's name: the weights' (with _best, _avgK, _raw, _ensK; _ct2 and its quantization for a
    CTranslate2 export), then _beamK or _sampleK."""
    return (engine.name + (f"_beam{hp.beam_size}" if hp.beam_size > 1 else "")
            + (f"_sample{hp.sampling_topk}" if hp.sampling_topk else ""))


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], settings=SETTINGS,
                                add_arguments=add_eval_flags, epilog=cli.FROM_LOGDIR)
    hp = engines.settings(explicit, args)
    check_writable(hp.results_dir, "results_dir")

    engine = engines.open_engine(hp, args)
    sources, references = readers.evaluation_pairs(hp, engine.src_vocab, engine.tgt_vocab, keep_all=args.all)
    hypotheses = [best[0][0] for best in engine(sources, progress="decoding")]

    bleu, scored = original_bleu(references, hypotheses)
    path = os.path.join(hp.results_dir, results_name(engine, hp))
    scores = corpus_scores(references, hypotheses, bleu, hp, engine.checkpoints)
    write_files({path: results_text(sources, references, hypotheses, bleu),  # both files or neither
                 path + ".json": json.dumps(scores, indent=2) + "\n"})
    print(f"{path}: {len(hypotheses)} sentences; Bleu Score = {bleu:.2f} "
          f"(nltk, the original's rule: {scored} pairs of more than 3 words)")
    print(f"sacreBLEU = {scores['sacrebleu']:.2f} (lowercased {scores['sacrebleu_lowercase']:.2f}), "
          f"chrF = {scores['chrf']:.2f} on all {len(hypotheses)} sentences ({scores['sacrebleu_signature']}); "
          f"all scores in {path}.json")


def corpus_scores(references, hypotheses, bleu, hp, used):
    """The scores of a results file, for <results file>.json: sacreBLEU (cased, and lowercased)
    and chrF over every translated sentence (with sacreBLEU's signature), the original's nltk BLEU,
    and what was scored: the test files (and their split, if they are one), the weights, the settings."""
    metric = sacrebleu.BLEU()
    return {"sacrebleu": metric.corpus_score(hypotheses, [references]).score,
            "sacrebleu_signature": str(metric.get_signature()),
            "sacrebleu_lowercase": sacrebleu.BLEU(lowercase=True).corpus_score(hypotheses, [references]).score,
            "chrf": sacrebleu.CHRF().corpus_score(hypotheses, [references]).score,
            "nltk_bleu": bleu, "sentences": len(hypotheses),
            "test": {"split": hp.test_split or None, "source": hp.source_test, "target": hp.target_test},
            "checkpoints": used, "settings": dataclasses.asdict(hp)}


if __name__ == "__main__":
    run(main)
