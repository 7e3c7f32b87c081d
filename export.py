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

An existing --out is never deleted: a non-empty directory is refused, and
--overwrite replaces only a SavedModel that export.py wrote (it leaves
export.json there, which names the model it came from). --out may not be, or
contain, the logdir, the vocab_dir or the current directory.
"""
import dataclasses
import json
import os
import shutil
import tempfile

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import tensorflow as tf

import data_load
import hyperparams
from cli import UserError, inside, run
from decoding import decode_limits, make_decoder
from hyperparams import parse_args
from inference import add_checkpoint_flags, load_trained
from vocab import EOS, PAD, UNK


REFINE = r"[^\s\p{Latin}']"  # readers.refine's rule, in RE2 syntax for tf.strings
MARKER = "export.json"  # in every SavedModel export.py writes: what it holds, and that --overwrite may replace it


def add_export_flags(parser):
    parser.add_argument("--out", required=True, metavar="DIR", help="new or empty directory to write the SavedModel to")
    parser.add_argument("--overwrite", action="store_true", default=False,
                        help="replace --out if it holds a SavedModel written by export.py (nothing else is replaced)")
    add_checkpoint_flags(parser, verb="export")


class Exported(tf.Module):
    """The model and its vocab, with one traced function: German strings (n,) -> English strings (n,)."""

    def __init__(self, hp, model, src_vocab, tgt_vocab):
        super().__init__()
        self.hp, self.subword = hp, hp.vocab_type == "subword"
        # The Keras model itself is not an attribute: saving would trace its call() with
        # made-up float inputs. Its variables are, so that the SavedModel holds them.
        self.weights = [v.value for v in model.variables]
        if self.subword:
            self.tokenizer = src_vocab.graph_tokenizer()  # one joint vocab
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
        """(n,) clean strings -> ids (n, T1) ending in </S>, right-padded with <PAD> to a multiple of
        data_load.SHAPE_STEP."""
        ragged = (self.tokenizer.tokenize(text) if self.subword
                  else self.src_ids.lookup(tf.strings.split(text)))
        ragged = tf.concat([tf.cast(ragged, tf.int32), tf.fill((tf.shape(text)[0], 1), EOS)], axis=1)  # (n, None)
        ids = ragged.to_tensor(default_value=PAD)  # (n, longest)
        width = tf.shape(ids)[1]  # padded on to a multiple of SHAPE_STEP: few distinct shapes to run
        ids = tf.pad(ids, [[0, 0], [0, data_load.round_up(width) - width]], constant_values=PAD)  # (n, T1)
        return data_load.within_positions(ids, self.hp)

    def decode_text(self, ids):
        """ids (n, T) -> (n,) detokenized strings of the words before the first </S>."""
        ended = tf.cumsum(tf.cast(ids == EOS, tf.int32), axis=1) > 0
        ragged = tf.ragged.boolean_mask(ids, ~ended & (ids != PAD))  # (n, None): the words
        if self.subword:
            return self.tokenizer.detokenize(ragged)
        return tf.strings.reduce_join(tf.gather(self.tgt_words, ragged), axis=1, separator=" ")  # (n,)

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def translate(self, sentences):
        text = self.clean(sentences)
        src = self.encode(text)
        ids, _ = self.decoder(src, decode_limits(src, self.hp))
        translations = tf.where(text == "", "", self.decode_text(ids[:, 0]))  # an empty line stays empty
        return {"translations": translations}


def check_out(out, hp, overwrite):
    """Refuses an --out whose replacement would lose anything; returns whether a previous export is replaced."""
    kept = ((hp.logdir, "--logdir"), (hp.vocab_dir, "--vocab_dir"), (os.curdir, "the current directory"))
    for directory, what in kept:
        if inside(directory, out):
            raise UserError(f"--out {out} is or contains {what} ({directory}); pass a new directory to --out")
    if not os.path.lexists(out) or (os.path.isdir(out) and not os.listdir(out)):
        return False
    if not os.path.isdir(out):
        raise UserError(f"--out {out} exists and is not a directory; pass a new directory to --out")
    if not overwrite:
        raise UserError(f"--out {out} exists and is not empty; pass a new directory, or --overwrite to "
                        "replace a SavedModel that export.py wrote there")
    if not os.path.isfile(os.path.join(out, MARKER)):
        raise UserError(f"--overwrite replaces only a SavedModel written by export.py (it holds {MARKER}), and "
                        f"{out} is not one; pass a new directory to --out")
    return True


def save(exported, out, record, replace):
    """Writes the SavedModel and its marker to a new directory beside out, then renames it to out.

    The previous export, if replaced, moves aside first and is deleted only
    once the new one is in place, so a failure at any point leaves one of them.
    """
    parent = os.path.dirname(os.path.abspath(out))
    tmp = old = None
    try:
        os.makedirs(parent, exist_ok=True)  # --out may name a new directory inside new ones
        tmp = tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(out)) + ".tmp", dir=parent)
        tf.saved_model.save(exported, tmp, signatures={"serving_default": exported.translate})
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=2) + "\n")
        if replace:
            old = tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(out)) + ".old", dir=parent)
            os.replace(out, old)  # over the empty directory just made: only export.py's own files move
        os.replace(tmp, out)  # never a half-written SavedModel under the name asked for
        tmp = None
    except (OSError, tf.errors.OpError) as e:
        if old and not os.path.exists(out):
            os.replace(old, out)  # the previous export back in place
        raise UserError(f"cannot write {out} ({getattr(e, 'strerror', None) or getattr(e, 'message', e)}); "
                        "free some space or choose another --out (nothing was changed)") from None
    finally:
        for directory in (tmp, old):  # only what this function created
            if directory and os.path.isdir(directory):
                shutil.rmtree(directory, ignore_errors=True)


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_export_flags)
    hp = hyperparams.for_evaluation(explicit)
    replace = check_out(args.out, hp, args.overwrite)
    trained = load_trained(hp, args)
    exported = Exported(hp, trained.model, trained.src_vocab, trained.tgt_vocab)
    save(exported, args.out, {"written_by": "export.py", "checkpoints": trained.checkpoints, "name": trained.name,
                              "settings": dataclasses.asdict(hp)}, replace)
    print(f"{args.out}: SavedModel of {trained.name}; serving_default: 1-D string tensor of German sentences -> "
          "{'translations': 1-D string tensor}")


if __name__ == "__main__":
    run(main)
