"""Exports a trained model as a TensorFlow SavedModel that translates strings: --out DIR.

    python export.py --logdir logdir --out exported
    # anywhere, without this project:
    translate = tf.saved_model.load("exported").signatures["serving_default"]
    translate(tf.constant(["Ein Mann fährt Fahrrad ."]))["translations"]

The serving_default signature takes a 1-D string tensor of raw German
sentences and returns {"translations": 1-D string tensor}. Cleaning,
tokenization, decoding (greedy or --beam_size) and detokenization all run in
the graph: tf.strings and a lookup table for a word vocab, tensorflow-text's
SentencePiece ops for a subword vocab (load those with `import tensorflow_text`
first). The output equals translate.py's.
"""
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console

import tensorflow as tf

import checkpoints
import data_load
import hyperparams
from data_load import EOS, PAD, UNK
from decoding import decode_limits, make_decoder
from hyperparams import UserError, parse_args, run
from model import build_model

REFINE = r"[^\s\p{Latin}']"  # data_load.refine's rule, in RE2 syntax for tf.strings


def add_export_flags(parser):
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write the SavedModel to")
    parser.add_argument("--ckpt", default=None, metavar="PATH", help="checkpoint to export (default: latest)")
    parser.add_argument("--best", action="store_true", default=False, help="export the best dev checkpoint")


class Exported(tf.Module):
    """The model and its vocab, with one traced function: German strings (n,) -> English strings (n,)."""

    def __init__(self, hp, model, src_vocab, tgt_vocab):
        super().__init__()
        self.hp, self.subword = hp, hp.vocab_type == "subword"
        # The Keras model itself is not an attribute: saving would trace its call() with
        # made-up float inputs. Its variables are, so that the SavedModel holds them.
        self.weights = [v.value for v in model.variables]
        if self.subword:
            self.tokenizer = src_vocab.tokenizer  # one joint vocab
        else:
            self.src_ids = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(src_vocab.words, tf.range(src_vocab.size)), default_value=UNK)
            self.tgt_words = tf.Variable(tgt_vocab.words, trainable=False)  # id -> word
        self.decoder = make_decoder(model, hp.beam_size, hp.length_penalty)

    def clean(self, text):
        """As data_load: refine (word vocab) or strip (subword vocab); (n,) -> (n,)."""
        if not self.subword:
            text = tf.strings.regex_replace(text, REFINE, "")
            text = tf.strings.regex_replace(text, r"\s+", " ")
        return tf.strings.strip(text)

    def encode(self, text):
        """(n,) clean strings -> ids (n, T1) ending in </S>, right-padded with <PAD>."""
        ragged = (self.tokenizer.tokenize(text) if self.subword
                  else self.src_ids.lookup(tf.strings.split(text)))
        ragged = tf.concat([tf.cast(ragged, tf.int32), tf.fill((tf.shape(text)[0], 1), EOS)], axis=1)
        ids = ragged.to_tensor(default_value=PAD)
        return ids if self.hp.sinusoid else ids[:, :self.hp.maxlen]

    def decode_text(self, ids):
        """ids (n, T) -> (n,) detokenized strings of the words before the first </S>."""
        ended = tf.cumsum(tf.cast(ids == EOS, tf.int32), axis=1) > 0
        ragged = tf.ragged.boolean_mask(ids, ~ended & (ids != PAD))
        if self.subword:
            return self.tokenizer.detokenize(ragged)
        return tf.strings.reduce_join(tf.gather(self.tgt_words, ragged), axis=1, separator=" ")

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def translate(self, sentences):
        text = self.clean(sentences)
        src = self.encode(text)
        ids, _ = self.decoder(src, decode_limits(src, extra=self.hp.decode_extra, cap=self.hp.decode_cap))
        translations = tf.where(text == "", "", self.decode_text(ids[:, 0]))  # an empty line stays empty
        return {"translations": translations}


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_export_flags)
    hp = hyperparams.for_evaluation(explicit)
    src_vocab, tgt_vocab = data_load.load_vocabs(hp)
    model = build_model(hp, src_vocab.size, tgt_vocab.size)
    name, _ = checkpoints.load_weights(model, hp, ckpt=args.ckpt, best=args.best)
    exported = Exported(hp, model, src_vocab, tgt_vocab)
    tmp = args.out.rstrip("/") + f".tmp{os.getpid()}"
    try:
        tf.saved_model.save(exported, tmp, signatures={"serving_default": exported.translate})
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        os.replace(tmp, args.out)  # never a half-written SavedModel under the name asked for
    except OSError as e:
        raise UserError(f"cannot write {args.out} ({e.strerror or e}); choose another --out") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.out}: SavedModel of {name}; serving_default: 1-D string tensor of German sentences -> "
          "{'translations': 1-D string tensor}")


if __name__ == "__main__":
    run(main)
