"""Translates the test set with a trained model and scores it: results/<checkpoint name>.

The results file has the original's format (source, expected, got, blank line
per sentence) and ends with `Bleu Score = <float>`, computed as the original
did; <results file>.json holds sacreBLEU, chrF and the settings. The model is
the latest checkpoint, --ckpt, --best (highest dev BLEU), or the average of
the newest --average_checkpoints; it decodes greedily or with --beam_size.
"""
import dataclasses
import json
import os

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import sacrebleu
from nltk.translate.bleu_score import corpus_bleu

import data_load
import hyperparams
from cli import check_writable, run, write_files
from decoding import translate
from hyperparams import parse_args
from inference import add_checkpoint_flags, decoder_for, load_trained
from readers import refine



def add_eval_flags(parser):
    add_checkpoint_flags(parser, verb="evaluate", ensemble=True)
    parser.add_argument("--all", action="store_true", default=False,
                        help="evaluate every test sentence, not only those that fit the training maxlen")


def original_bleu(references, hypotheses):
    """nltk corpus BLEU x 100 over the pairs where both sides have more than 3 words, as the original.

    Both sides are refined first, as the original's text was, so that subword
    models' raw-text translations are scored on the same words as word models'
    (refining refined text changes nothing). Returns (score, number of pairs
    scored); 0.0 when no pair qualifies.
    """
    pairs = [(refine(r).split(), refine(h).split()) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if len(r) > 3 and len(h) > 3]
    if not pairs:
        return 0.0, 0
    return 100 * corpus_bleu([[r] for r, _ in pairs], [h for _, h in pairs]), len(pairs)


def results_text(sources, references, hypotheses, bleu):
    """The original's results file: one block per sentence, then the BLEU line."""
    blocks = [f"- source: {s}\n- expected: {r}\n- got: {h}\n\n"
              for s, r, h in zip(sources, references, hypotheses)]
    return "".join(blocks) + f"Bleu Score = {bleu}\n"


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_eval_flags)
    hp = hyperparams.for_evaluation(explicit)
    check_writable(hp.results_dir, "results_dir")

    trained = load_trained(hp, args)
    x, sources, references = data_load.load_test_data(hp, trained.src_vocab, trained.tgt_vocab, keep_all=args.all)
    hypotheses = translate(decoder_for(trained.models, hp), x, trained.tgt_vocab, hp)

    bleu, scored = original_bleu(references, hypotheses)
    path = os.path.join(hp.results_dir, trained.name + (f"_beam{hp.beam_size}" if hp.beam_size > 1 else "")
                        + (f"_sample{hp.sampling_topk}" if hp.sampling_topk else ""))
    scores = score(references, hypotheses, bleu, hp, trained.checkpoints)
    write_files({path: results_text(sources, references, hypotheses, bleu),  # both files or neither
                 path + ".json": json.dumps(scores, indent=2) + "\n"})
    print(f"{path}: {len(hypotheses)} sentences; Bleu Score = {bleu:.2f} "
          f"(nltk, the original's rule: {scored} pairs of more than 3 words)")
    print(f"sacreBLEU = {scores['sacrebleu']:.2f} (lowercased {scores['sacrebleu_lowercase']:.2f}), "
          f"chrF = {scores['chrf']:.2f} on all {len(hypotheses)} sentences ({scores['sacrebleu_signature']}); "
          f"all scores in {path}.json")


def score(references, hypotheses, bleu, hp, used):
    """The scores of a results file, for <results file>.json: sacreBLEU (cased, and lowercased)
    and chrF over every translated sentence (with sacreBLEU's signature), the original's nltk BLEU,
    and what was scored."""
    metric = sacrebleu.BLEU()
    return {"sacrebleu": metric.corpus_score(hypotheses, [references]).score,
            "sacrebleu_signature": str(metric.get_signature()),
            "sacrebleu_lowercase": sacrebleu.BLEU(lowercase=True).corpus_score(hypotheses, [references]).score,
            "chrf": sacrebleu.CHRF().corpus_score(hypotheses, [references]).score,
            "nltk_bleu": bleu, "sentences": len(hypotheses), "checkpoints": used,
            "settings": dataclasses.asdict(hp)}


if __name__ == "__main__":
    run(main)
