"""Exports a trained model that translates strings: a TensorFlow SavedModel, or a CTranslate2 model (--out DIR).

    python export.py --logdir logdir --out exported
    # anywhere, without this project:
    translate = tf.saved_model.load("exported").signatures["serving_default"]
    translate(tf.constant(["Ein Mann fährt Fahrrad ."]))["translations"]

    python export.py --logdir logdir --out exported_ct2 --format ctranslate2 --quantization int8
    # anywhere, with the ctranslate2 and sentencepiece packages alone: see README, "Fast translation"

--format savedmodel (the default): the serving_default signature takes a 1-D
string tensor of raw German sentences and returns {"translations": 1-D string
tensor}. Cleaning, tokenization, decoding (greedy or --beam_size) and
detokenization all run in the graph: tf.strings and a lookup table for a
word vocab, tensorflow-text's SentencePiece ops for a subword vocab (load
those with `import tensorflow_text` first). The output equals translate.py's;
a sentence longer than --decode_maxlen tokens fails the call with that limit.

--format ctranslate2: CTranslate2's model files with --quantization float32,
int8, int8_float32 or int16, the tokenizer (the SentencePiece model, or the
word vocabularies, cleaned by readers.refine's rule) and export.json (ct2.py
describes the mapping). translate.py, eval.py, score.py and serve.py take it
as --ct2 DIR.

An existing --out is never deleted: a non-empty directory is refused, and
--overwrite replaces only an export that export.py wrote (its export.json
says so, and the directory holds nothing else). --out may not be, or contain,
the logdir, the vocab_dir or the current directory.
"""
import dataclasses
import json
import os
import re
import shutil

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import tensorflow as tf

import ct2
import ct2_export
import engines
import hyperparams
import shapes
import vocab
from cli import parse_args, run
from decoding import decode_limits, make_decoder
from files import inside, process_alive, read_record, remove_orphans, temporary_name
from inference import load_trained
from messages import UserError
from modules import LAYER_NORM_EPSILON, sinusoid
from vocab import EOS, PAD, UNK

# The settings export.py reads (--help lists these; the model's own come from hparams.json)
SETTINGS = ("logdir", "vocab_dir", "decode_extra", "decode_maxlen", "beam_size", "length_penalty",
            "average_checkpoints", "preset")
FORMATS = ("savedmodel", "ctranslate2")
# What each format's directory holds (besides export.json): --overwrite replaces nothing else
CONTENTS = {"savedmodel": {"saved_model.pb", "fingerprint.pb", "variables", "assets"},
            "ctranslate2": {"model.bin", "config.json", "shared_vocabulary.json", "source_vocabulary.json",
                            "target_vocabulary.json", vocab.SUBWORD_MODEL}}
CT2_POSITIONS = 1024  # rows of the sinusoid table a CTranslate2 export holds, at least (more if --decode_maxlen asks)


REFINE = r"[^\s\p{Latin}']"  # readers.refine's rule, in RE2 syntax for tf.strings


def add_export_flags(parser):
    parser.add_argument("--out", required=True, metavar="DIR", help="new or empty directory to write the model to")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="savedmodel (TensorFlow, strings in and out) or ctranslate2 (default: savedmodel)")
    parser.add_argument("--quantization", choices=ct2.QUANTIZATIONS, default="float32",
                        help="ctranslate2: the weights' type (default: float32)")
    parser.add_argument("--overwrite", action="store_true", default=False,
                        help="replace --out if it holds an export written by export.py (nothing else is replaced)")
    engines.add_model_flags(parser, verb="export", ct2=False)


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
        shapes.SHAPE_STEP, as engine.encode(): learned positions keep a source's first maxlen - 1 tokens;
        with sinusoid ones, a source longer than decode_cap fails the call (InvalidArgumentError)."""
        ragged = (self.tokenizer.tokenize(text) if self.subword
                  else self.src_ids.lookup(tf.strings.split(text)))
        ragged = tf.cast(ragged, tf.int32)
        if not self.hp.sinusoid:
            ragged = ragged[:, :self.hp.maxlen - 1]
        ragged = tf.concat([ragged, tf.fill((tf.shape(text)[0], 1), EOS)], axis=1)  # (n, None)
        if self.hp.sinusoid:  # before any tensor of the sentence's length is made
            tf.debugging.assert_less_equal(
                tf.cast(ragged.row_lengths(), tf.int32), self.hp.decode_cap,
                message=f"a sentence has more than the {self.hp.decode_cap} tokens a translation may have "
                        "(export.py --decode_maxlen); split it into sentences")
        ids = ragged.to_tensor(default_value=PAD)  # (n, longest)
        width = tf.shape(ids)[1]  # padded on to a multiple of SHAPE_STEP: few distinct shapes to run
        return tf.pad(ids, [[0, 0], [0, shapes.round_up(width) - width]], constant_values=PAD)  # (n, T1)

    def decode_text(self, ids):
        """ids (n, T) -> (n,) detokenized strings of the words before the first </S>."""
        ended = tf.cumsum(tf.cast(ids == EOS, tf.int32), axis=1) > 0
        ragged = tf.ragged.boolean_mask(ids, ~ended & (ids != PAD))  # (n, None): the words
        if self.subword:
            return self.tokenizer.detokenize(ragged)
        return tf.strings.reduce_join(tf.gather(self.tgt_words, ragged), axis=1, separator=" ")  # (n,)

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)], autograph=False)
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
                        "replace an export that export.py wrote there")
    fix = "--overwrite replaces only an export written by export.py; pass a new directory to --out"
    record = read_record(os.path.join(out, ct2.MARKER), ct2.EXPORT_RECORD, fix=fix)
    if record is None or record["written_by"] != "export.py" or record["format"] not in CONTENTS:
        raise UserError(f"--out {out} holds no {ct2.MARKER} written by export.py; {fix}")
    others = sorted(set(os.listdir(out)) - CONTENTS[record["format"]] - {ct2.MARKER})
    if others:
        raise UserError(f"--out {out} holds files export.py did not write ({', '.join(others[:3])}); {fix}")
    return True


def restore_or_remove_orphans(out):
    """What a killed export.py left beside out: its new directory half written (removed), and the previous
    export it had moved aside (put back, if out is missing)."""
    parent, base = os.path.split(os.path.abspath(out))
    if os.path.isdir(parent):
        for name in os.listdir(parent):
            old = re.fullmatch(rf"{re.escape(base)}\.old\.tmp(\d+)", name)
            if old and not os.path.lexists(out) and not process_alive(int(old[1])):
                os.replace(os.path.join(parent, name), out)
        remove_orphans(parent, rf"{re.escape(base)}(?:\.old)?")


def save(write, out, record, replace):
    """Writes the export with write(directory) (which returns what it adds to the record) and its
    export.json into a new directory beside out, then renames that to out.

    The previous export, if replaced, moves aside first and is deleted only
    once the new one is in place, so a failure at any point leaves one of them.
    """
    out = os.path.abspath(out)
    tmp, old = temporary_name(out), temporary_name(out + ".old")
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)  # --out may name a new directory inside new ones
        record = {**record, **(write(tmp) or {})}
        with open(os.path.join(tmp, ct2.MARKER), "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=2) + "\n")
        if replace:
            os.replace(out, old)  # only export.py's own files move (check_out)
        os.replace(tmp, out)  # never a half-written export under the name asked for
    except (OSError, tf.errors.OpError, RuntimeError, ValueError) as e:
        if replace and os.path.isdir(old) and not os.path.exists(out):
            os.replace(old, out)  # the previous export back in place
        raise UserError(f"cannot write {out} ({getattr(e, 'strerror', None) or getattr(e, 'message', e)}); "
                        "free some space or choose another --out (nothing was changed)") from None
    finally:
        for directory in (tmp, old):  # only what this function created
            shutil.rmtree(directory, ignore_errors=True)


def ctranslate2_writer(trained, hp, quantization):
    """write(directory) of a CTranslate2 export of the trained model (ct2.py), and what export.json adds."""
    model = getattr(trained.model, "members", [trained.model])[0]
    tokens = [v.tokens(range(v.size)) for v in (trained.src_vocab, trained.tgt_vocab)]
    rows = max(hp.decode_cap, CT2_POSITIONS) if hp.sinusoid else hp.maxlen
    positions = sinusoid(rows, hp.hidden_units).numpy() if hp.sinusoid else None
    spec = ct2_export.model_spec(model, hp, tokens, positions, LAYER_NORM_EPSILON)
    tokenizer = vocab.vocab_files(hp) if hp.vocab_type == "subword" else []  # a word vocab: the vocabulary files
    return (lambda directory: ct2_export.write_export(spec, directory, quantization, tokenizer),
            {"quantization": quantization, "positions": rows})


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], settings=SETTINGS,
                                add_arguments=add_export_flags, epilog=cli.FROM_LOGDIR)
    hp = hyperparams.for_evaluation(explicit)
    if args.quantization != "float32" and args.format != "ctranslate2":
        raise UserError(f"--quantization {args.quantization} is for --format ctranslate2; a SavedModel keeps the "
                        "model's float32 weights")
    restore_or_remove_orphans(args.out)  # before check_out: a killed run's previous export is back at --out
    replace = check_out(args.out, hp, args.overwrite)
    trained = load_trained(hp, args)
    record = {"written_by": "export.py", "format": args.format, "name": trained.name,
              "checkpoints": trained.checkpoints, "settings": dataclasses.asdict(hp),
              "vocab_sha256": trained.vocab_sha256}
    if args.format == "ctranslate2":
        write, extra = ctranslate2_writer(trained, hp, args.quantization)
        save(write, args.out, {**record, **extra}, replace)
        print(f"{args.out}: CTranslate2 model ({args.quantization}) of {trained.name}; translate with "
              f"translate.py --ct2 {args.out}, or with ctranslate2 alone (README)")
        return
    exported = Exported(hp, trained.model, trained.src_vocab, trained.tgt_vocab)
    signatures = {"serving_default": exported.translate}
    save(lambda directory: tf.saved_model.save(exported, directory, signatures=signatures), args.out, record, replace)
    print(f"{args.out}: SavedModel of {trained.name}; serving_default: 1-D string tensor of German sentences -> "
          "{'translations': 1-D string tensor}")


if __name__ == "__main__":
    run(main)
