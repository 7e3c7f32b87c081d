"""A trained model put to use: loaded with its vocab and weights, and a Translator from lines to translations.

eval.py, translate.py, export.py and plot_attention.py all load a model the
same way, through load_trained(): the settings come from logdir/hparams.json,
the vocab must be the one the model was trained with, and the weights are the
latest checkpoint, --ckpt, --best or an average.
"""
from dataclasses import dataclass

import checkpoints
import data_load
import hyperparams
import vocab
from decoding import decode_limits, make_decoder
from model import build_model



def add_checkpoint_flags(parser, verb="use"):
    """--ckpt and --best, which choose the checkpoint a script loads."""
    parser.add_argument("--ckpt", default=None, metavar="PATH",
                        help=f"checkpoint to {verb}, e.g. logdir/model_epoch_20_gs_1000 (default: the latest "
                             "in --logdir, or the average of --average_checkpoints)")
    parser.add_argument("--best", action="store_true", default=False,
                        help=f"{verb} the checkpoint with the best dev BLEU (logdir/best, kept with --dev_eval)")


@dataclass
class Trained:
    """A model with its weights loaded, its vocabs, and which checkpoints the weights came from."""
    model: object
    src_vocab: object
    tgt_vocab: object
    name: str  # for results files: the checkpoint's name, with _best or _avgK
    checkpoints: list


def load_trained(hp, ckpt=None, best=False):
    """The model trained in hp.logdir, its vocab (refused if rebuilt since the training) and its weights."""
    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    hyperparams.check_same_vocab(hp, vocab.vocab_digest(hp))
    model = build_model(hp, src_vocab.size, tgt_vocab.size)
    name, used = checkpoints.load_weights(model, hp, ckpt=ckpt, best=best)
    return Trained(model, src_vocab, tgt_vocab, name, used)


class Translator:
    """A trained model with its vocab: German lines -> lists of (English translation, score), best first."""

    def __init__(self, hp, nbest=1, ckpt=None, best=False):
        self.hp, self.nbest = hp, nbest
        trained = load_trained(hp, ckpt=ckpt, best=best)
        self.model, self.src_vocab, self.tgt_vocab = trained.model, trained.src_vocab, trained.tgt_vocab
        self.decode = make_decoder(self.model, max(hp.beam_size, nbest), hp.length_penalty)

    def __call__(self, lines):
        cleaned = [self.src_vocab.clean(line) for line in lines]
        todo = [i for i, text in enumerate(cleaned) if text]
        results = [[("", 0.0)] * self.nbest for _ in lines]  # an empty line translates to an empty line
        if todo:
            rows, scores = self.nbest_ids([cleaned[i] for i in todo])
            for i, hypotheses, row_scores in zip(todo, rows, scores):
                results[i] = list(zip(self.tgt_vocab.decode(hypotheses), map(float, row_scores)))
        return results

    def nbest_ids(self, cleaned):
        """Cleaned, non-empty sentences -> the nbest hypotheses' ids (n, nbest, L) and scores (n, nbest)."""
        ids = self.src_vocab.encode(cleaned)
        width = data_load.round_up(max(map(len, ids)))  # few distinct shapes, whatever the lengths
        src = data_load.within_positions(data_load.pad(ids, width), self.hp)  # (n, T1)
        ids, scores = self.decode(src, decode_limits(src, self.hp))
        return ids[:, :self.nbest].numpy(), scores[:, :self.nbest].numpy()  # best first

    def best_translation_ids(self, cleaned):
        """The best translation's ids of one cleaned sentence, ending in </S>."""
        return vocab.ending_in_eos(self.nbest_ids([cleaned])[0][0, 0])
