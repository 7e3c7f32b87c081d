"""A trained model put to use: loaded with its vocab and weights, and a Translator from lines to translations.

eval.py, translate.py, score.py, export.py and plot_attention.py all load a
model the same way, through load_trained(): the settings come from
logdir/hparams.json, the vocab must be the one the model was trained with, and
the weights are the latest checkpoint, --ckpt, --best or an average (of the
moving average of the weights if one was kept, unless --raw_weights).
eval.py, translate.py and score.py also take --ensemble: more models trained
on the same vocab, whose predictions are combined with the first one's.
"""
import argparse
import dataclasses
from dataclasses import dataclass

import checkpoints
import data_load
import hyperparams
import vocab
from cli import UserError
from decoding import decode_limits, make_decoder
from model import build_model


def add_checkpoint_flags(parser, verb="use", ensemble=False):
    """--ckpt, --best and --raw_weights, which choose the weights a script loads (and --ensemble)."""
    parser.add_argument("--ckpt", default=None, metavar="PATH",
                        help=f"checkpoint to {verb}, e.g. logdir/model_epoch_20_gs_1000 (default: the latest "
                             "in --logdir, or the average of --average_checkpoints)")
    parser.add_argument("--best", action="store_true", default=False,
                        help=f"{verb} the checkpoint with the best dev BLEU (logdir/best, kept with --dev_eval)")
    parser.add_argument("--raw_weights", action="store_true", default=False,
                        help="a model trained with --ema_decay: the weights themselves, not their moving average")
    if ensemble:
        parser.add_argument("--ensemble", action="append", default=[], metavar="LOGDIR",
                            help="add the model trained in LOGDIR (same vocab; its newest checkpoint, or its best "
                                 "or average as chosen for --logdir) and combine their predictions; repeatable")


@dataclass
class Trained:
    """A model with its weights loaded, its vocabs, and which checkpoints the weights came from."""
    model: object
    src_vocab: object
    tgt_vocab: object
    name: str  # for results files: the checkpoint's name, with _best, _avgK, _raw or _ensK
    checkpoints: list
    models: list  # the model, then those of --ensemble


LATEST = argparse.Namespace(ckpt=None, best=False, raw_weights=False)  # the flags' defaults: the latest checkpoint


def load_trained(hp, choice=LATEST):
    """The model trained in hp.logdir, its vocab (refused if rebuilt since the training) and its weights.

    choice: the parsed flags of add_checkpoint_flags() (ckpt, best, raw_weights, ensemble if the script has it).
    """
    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    digest = vocab.vocab_digest(hp)
    hyperparams.check_same_vocab(hp, digest)
    model = build_model(hp, src_vocab.size, tgt_vocab.size)
    name, used = checkpoints.load_weights(model, hp, ckpt=choice.ckpt, best=choice.best, raw=choice.raw_weights)
    models = [model]
    for logdir in getattr(choice, "ensemble", []):
        # the member's own settings (its shape may differ), read with the first model's vocab
        member_hp = dataclasses.replace(hyperparams.load(logdir), logdir=logdir, vocab_dir=hp.vocab_dir,
                                        average_checkpoints=hp.average_checkpoints)
        hyperparams.check_same_vocab(member_hp, digest)
        member = build_model(member_hp, src_vocab.size, tgt_vocab.size)
        used += checkpoints.load_weights(member, member_hp, best=choice.best, raw=choice.raw_weights)[1]
        models.append(member)
    if len(models) > 1:
        name += f"_ens{len(models)}"
    return Trained(model, src_vocab, tgt_vocab, name, used, models)


def decoder_for(models, hp, nbest=1):
    """make_decoder() as the settings ask: beam search (at least nbest wide), greedy or sampling."""
    if hp.sampling_topk and nbest > 1:
        raise UserError(f"--nbest {nbest} needs beam search; --sampling_topk draws one translation per sentence")
    sampling = (hp.sampling_topk, hp.sampling_temperature, hp.seed) if hp.sampling_topk else None
    return make_decoder(models, max(hp.beam_size, nbest), hp.length_penalty, sampling)


class Translator:
    """A trained model (or ensemble) with its vocab: German lines -> lists of (English translation, score),
    best first. choice: as for load_trained()."""

    def __init__(self, hp, choice=LATEST, nbest=1):
        self.hp, self.nbest = hp, nbest
        trained = load_trained(hp, choice)
        self.model, self.src_vocab, self.tgt_vocab = trained.model, trained.src_vocab, trained.tgt_vocab
        self.decode = decoder_for(trained.models, hp, nbest)

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
