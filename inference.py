"""The TensorFlow engine: a model trained in --logdir, loaded with its vocab and weights (TensorFlowEngine).

eval.py, translate.py, score.py, serve.py, export.py and plot_attention.py
load a model the same way, through load_trained(): the settings come from
logdir/hparams.json, the vocab must be the one the model was trained with,
and the weights are the latest checkpoint, --ckpt, --best or an average (of
the moving average of the weights if one was kept, unless --raw_weights).
--ensemble adds models trained on the same vocab: together they are one
Ensemble, which decodes and scores as a single model does.
"""
import dataclasses
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

import engine
import hyperparams
import shapes
import vocab
import weights
from decoding import decode_limits, make_decoder, only_words
from messages import UserError
from model import build_model, shift_right


@dataclass
class Trained:
    """A model (or Ensemble) with its weights loaded, its vocabs, and which checkpoints the weights came from."""
    model: object
    src_vocab: object
    tgt_vocab: object
    name: str  # for results files: the checkpoint's name, with _best, _avgK, _raw or _ensK
    checkpoints: list
    vocab_sha256: str


def mean_log_probs(logits):
    """The ensemble's prediction: the mean of its models' log-probabilities (fairseq's and OpenNMT's ensembles).
    logits: one (N, ..., V) tensor per model -> float32 (N, ..., V)."""
    return tf.add_n([tf.nn.log_softmax(tf.cast(x, tf.float32)) for x in logits]) / len(logits)


class Ensemble:
    """Models trained on one vocab, of any shapes, that decode and score as one model (model.Transformer's
    methods that the decoders and scoring call): the next word's scores are mean_log_probs() of theirs."""

    def __init__(self, models):
        self.members = list(models)

    def encode(self, src):
        return [m.encode(src) for m in self.members]

    def decode(self, tgt_in, encs, src):
        return mean_log_probs([m.decode(tgt_in, enc, src) for m, enc in zip(self.members, encs)])

    def teacher_forced(self, src, tgt, training=False):
        return mean_log_probs([m.teacher_forced(src, tgt, training=training) for m in self.members])

    def start_decoding(self, src, width, repeat=1):
        started = [m.start_decoding(src, width, repeat) for m in self.members]
        return [enc_kvs for enc_kvs, _ in started], [caches for _, caches in started]

    def decode_step(self, tokens, position, caches, enc_kvs, src):
        stepped = [m.decode_step(tokens, position, c, e, src) for m, c, e in zip(self.members, caches, enc_kvs)]
        return mean_log_probs([logits for logits, _ in stepped]), [filled for _, filled in stepped]


def load_trained(hp, choice=None):
    """The model trained in hp.logdir, its vocab (refused if rebuilt since the training) and its weights;
    with choice.ensemble, the Ensemble of it and those models.

    choice: the parsed flags of engines.add_model_flags() (ckpt, best, raw_weights, ensemble if the script has
    it); None: the latest checkpoint (or the average of --average_checkpoints), of the moving average if kept.
    """
    src_vocab, tgt_vocab, digest, _ = vocab.open_vocabs(hp)  # each vocab file read once
    hyperparams.check_same_vocab(hp, digest)
    model = build_model(hp, src_vocab.size, tgt_vocab.size)
    ckpt, best, raw = (getattr(choice, name, default) for name, default in (("ckpt", None), ("best", False),
                                                                              ("raw_weights", False)))
    name, used = weights.load_weights(model, hp, ckpt=ckpt, best=best, raw=raw)
    models = [model]
    for logdir in getattr(choice, "ensemble", []):
        # the member's own settings (its shape may differ), read with the first model's vocab
        member_hp = dataclasses.replace(hyperparams.load(logdir), logdir=logdir, vocab_dir=hp.vocab_dir,
                                        average_checkpoints=hp.average_checkpoints)
        hyperparams.check_same_vocab(member_hp, digest)
        member = build_model(member_hp, src_vocab.size, tgt_vocab.size)
        used += weights.load_weights(member, member_hp, best=best, raw=raw)[1]
        models.append(member)
    if len(models) > 1:
        return Trained(Ensemble(models), src_vocab, tgt_vocab, f"{name}_ens{len(models)}", used, digest)
    return Trained(model, src_vocab, tgt_vocab, name, used, digest)


KEPT_DECODERS = 8  # decoder_for() keeps at most this many for a model (each a traced graph)


def decoder_for(model, hp, nbest=1, made=None):
    """make_decoder() as the settings ask: beam search (at least nbest wide), greedy or sampling.

    made: a dict of the decoders made so far (at most KEPT_DECODERS), by everything but the length penalty
    (an input of the search, decoding.LENGTH_PENALTY): one that fits is used again, not traced again."""
    if hp.sampling_topk and nbest > 1:
        raise UserError(f"--nbest {nbest} needs beam search; --sampling_topk draws one translation per sentence")
    sampling = (hp.sampling_topk, hp.sampling_temperature, hp.seed) if hp.sampling_topk else None
    made = {} if made is None else made
    beam = max(hp.beam_size, nbest)
    key = (beam, sampling)
    if key not in made:
        if len(made) == KEPT_DECODERS:
            del made[next(iter(made))]  # the oldest
        made[key] = make_decoder(model, beam, hp.length_penalty, sampling)
    return made[key]


def source_batch(rows):
    """Id rows ending in </S> -> one padded batch (n, T1) int32, T1 their longest rounded up to a multiple of
    shapes.SHAPE_STEP: few distinct shapes to trace and run, whatever the lengths."""
    return tf.constant(shapes.pad(rows, shapes.round_up(max(map(len, rows)))))


def filled(rows):
    """Id rows, and rows of </S> alone after them up to shapes.round_rows() of their number: a batch of any
    size meets one of a few shapes (see shapes.py)."""
    return list(rows) + [[vocab.EOS]] * (shapes.round_rows(len(rows)) - len(rows))


def token_log_probs(model):
    """A compiled function: src (N, T1), tgt (N, T2) ids -> (N, T2) float32 log-probabilities of each target
    token (0 at pads), under the distribution decoding draws from (pads and <S> are not words)."""

    @tf.function(input_signature=[shapes.IDS] * 2, autograph=False)  # one graph for all lengths
    def score(src, tgt):
        logp = tf.nn.log_softmax(only_words(tf.cast(model.teacher_forced(src, tgt), tf.float32)), axis=-1)
        picked = tf.gather(logp, tgt, batch_dims=2)  # (N, T2)
        return tf.where(tgt == vocab.PAD, 0.0, picked)

    return score


class TensorFlowEngine(engine.Engine):
    """A model (or Ensemble) with its vocab: lines -> (translation, score) lists, target log-probabilities,
    attention (engine.Engine). trained: the Trained it comes from (its name and checkpoints, for results
    files), if any."""

    kind = "tensorflow"

    def __init__(self, model, src_vocab, tgt_vocab, hp, nbest=1, trained=None):
        self.model, self.src_vocab, self.tgt_vocab, self.hp, self.nbest = model, src_vocab, tgt_vocab, hp, nbest
        self.name, self.checkpoints, self.vocab_sha256 = ((trained.name, trained.checkpoints, trained.vocab_sha256)
                                                          if trained else ("", [], None))
        self._scorer = None  # compiled at the first score()
        self._decoders = {}  # shared with its variants: decoder_for()'s
        self.check_limits()
        self.configure()

    def configure(self):
        self.decode = decoder_for(self.model, self.hp, self.nbest, self._decoders)

    def nbest_ids(self, rows):
        src = source_batch(filled(rows))  # (n', T1): n' = shapes.round_rows(n)
        real = tf.range(tf.shape(src)[0]) < len(rows)  # (n',): the rows that filled it end at once
        ids, scores = self.decode(src, tf.where(real, decode_limits(src, self.hp), 1), self.hp.length_penalty)
        ids, scores = ids[:len(rows), :self.nbest].numpy(), scores[:len(rows), :self.nbest].numpy()  # best first
        return [list(zip(row_ids, row_scores)) for row_ids, row_scores in zip(ids, scores)]

    def token_log_probs(self, src_rows, tgt_rows):
        self._scorer = self._scorer or token_log_probs(self.model)
        logp = self._scorer(source_batch(filled(src_rows)), source_batch(filled(tgt_rows)))
        return [row[:len(ids)] for row, ids in zip(logp.numpy().astype(np.float64), tgt_rows)]

    def source_ids(self, line):
        """A sentence's ids ending in </S>, as attention() takes them: refused (UserError, TooLong) before any
        tensor is made."""
        cleaned = self.src_vocab.clean(line)
        if not cleaned:
            raise UserError("the sentence is empty once cleaned as the training text was; give a German sentence")
        return engine.encode(self.src_vocab, [cleaned], self.hp)[0]

    def target_ids(self, translation):
        """A given translation's ids ending in </S>, as attention() takes them (TooLong if too long)."""
        return engine.encode(self.tgt_vocab, [self.tgt_vocab.clean(translation)], self.hp, target=True)[0]

    def attention(self, src, tgt=None):
        """The attention of every layer and head for a sentence's ids and its translation's (None: the best
        translation), from source_ids() and target_ids(): {"source", "target": tokens, "translation": text,
        "maps": {kind: array (layers, h, Tq, Tk)}}, as attention_weights() computes them."""
        if tgt is None:  # at most decode_cap positions: one that stopped at its limit ends without </S>
            tgt = vocab.ending_in_eos(self.nbest_ids([src])[0][0][0])[:self.hp.decode_cap]
        model = getattr(self.model, "members", [self.model])[0]  # an ensemble's first model
        source, target, maps = attention_weights(model, self.src_vocab, self.tgt_vocab, src, tgt)
        return {"source": source, "target": target, "translation": self.tgt_vocab.decode([tgt])[0], "maps": maps}


def attention_weights(model, src_vocab, tgt_vocab, src, translation):
    """(source tokens, target tokens, {kind: array (layers, h, Tq, Tk)}) of one sentence.

    src: its ids ending in </S>; translation: its translation's ids ending in </S>.
    """
    maps = model.attention_maps(tf.constant([src]), shift_right(tf.constant([translation])))
    target = ["<S>"] + tgt_vocab.tokens(translation[:-1])  # the decoder's input at each position
    return (src_vocab.tokens(src), target,
            {kind: np.stack([tf.cast(w[0], tf.float32).numpy() for w in weights]) for kind, weights in maps.items()})


def load_engine(hp, choice=None, nbest=1):
    """The TensorFlowEngine of the model the flags choose (load_trained())."""
    trained = load_trained(hp, choice)
    return TensorFlowEngine(trained.model, trained.src_vocab, trained.tgt_vocab, hp, nbest, trained)
