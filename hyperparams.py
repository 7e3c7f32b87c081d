"""Every setting of the pipeline, the presets, and hparams.json, where the settings travel with a model.

`Hyperparams` holds all settings with the original's defaults. Each field is
also a flag of the scripts (`--hidden_units 256`, made in cli.py), typed by
its annotation. `--dataset` fills the corpus paths that are not given from
the layout download.py creates. train.py writes the resolved settings to
`<logdir>/hparams.json`; eval.py rebuilds the model from that file, never from
the defaults.
"""
import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass

from corpora import DATASETS, corpus_paths
from files import read_record, write_atomic
from messages import UserError


def preset_values(dataset, test_split=""):
    """The values --dataset gives the path settings (and test_split) that are left empty."""
    test_split = test_split or DATASETS[dataset]["test"]
    values = {"test_split": test_split}
    for kind, split in (("train", "train"), ("dev", DATASETS[dataset]["dev"]), ("test", test_split)):
        values[f"source_{kind}"], values[f"target_{kind}"] = corpus_paths(dataset, split)
    return values


# --mixed_precision -> the Keras dtype policy (variables stay float32 in all three).
PRECISIONS = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
STRATEGIES = ("default", "mirrored", "multiworker")  # train.py's tf.distribute choices
VOCAB_TYPES = ("word", "subword")
LR_SCHEDULES = ("constant", "paper", "paper_decay", "cosine")
NORM_POSITIONS = ("post", "pre")

MAX_BEAM = 64  # the widest beam (and the longest n-best list) any script or request may ask for

# The allowed range of every numeric setting, as (words for the error, test).
AT_LEAST_1 = ("at least 1", lambda v: v >= 1)
NOT_NEGATIVE = ("0 or more (0 = off)", lambda v: v >= 0)
POSITIVE = ("positive", lambda v: v > 0)
FRACTION = ("in [0, 1)", lambda v: 0 <= v < 1)
RANGES = {
    "vocab_size": ("at least 8 (a few hundred pieces or more in practice)", lambda v: v >= 8),
    "min_cnt": AT_LEAST_1, "vocab_sample": AT_LEAST_1, "shard_pairs": AT_LEAST_1,
    "shuffle_pairs": AT_LEAST_1, "maxlen": AT_LEAST_1, "hidden_units": AT_LEAST_1, "num_blocks": AT_LEAST_1,
    "num_heads": AT_LEAST_1, "dropout_rate": FRACTION, "residual_dropout": FRACTION, "ff_dropout": FRACTION,
    "word_dropout": FRACTION,
    "batch_size": AT_LEAST_1, "batch_tokens": NOT_NEGATIVE, "lr": POSITIVE, "lr_scale": POSITIVE,
    "warmup_steps": AT_LEAST_1, "decay_fraction": ("in (0, 1]", lambda v: 0 < v <= 1),
    "max_steps": NOT_NEGATIVE, "accumulate": AT_LEAST_1, "ema_decay": FRACTION, "patience": NOT_NEGATIVE,
    "rdrop_alpha": ("0 or more (0 = off)", lambda v: v >= 0), "adam_beta1": FRACTION, "adam_beta2": FRACTION,
    "adam_epsilon": ("0 or more", lambda v: v >= 0), "label_smoothing": FRACTION, "num_epochs": AT_LEAST_1,
    "keep_checkpoints": AT_LEAST_1, "save_every": NOT_NEGATIVE, "summary_every": AT_LEAST_1,
    "eval_every": NOT_NEGATIVE, "seed": ("in [0, 2^32)", lambda v: 0 <= v < 2 ** 32),
    "decode_extra": ("0 or more", lambda v: v >= 0), "decode_maxlen": NOT_NEGATIVE,
    "beam_size": (f"between 1 and {MAX_BEAM}", lambda v: 1 <= v <= MAX_BEAM), "length_penalty": NOT_NEGATIVE,
    "average_checkpoints": AT_LEAST_1, "sampling_topk": NOT_NEGATIVE, "sampling_temperature": POSITIVE,
    "subword_alpha": NOT_NEGATIVE, "subword_nbest": ("0 (all segmentations) or at least 2", lambda v: v == 0 or v >= 2),
}

# Multi30k on two CPU cores (about 45 minutes): a small pre-norm model on a joint subword vocab,
# bf16 matmuls, batches of similar lengths, a cosine schedule to 0 at the last step from a peak of
# 1.55e-3 (lr_scale 0.7: captions of new images gain most), the moving average of the weights, beam search.
MULTI30K_CPU = {"dataset": "multi30k", "vocab_type": "subword", "vocab_size": 8000, "maxlen": 64,
                "hidden_units": 256, "num_blocks": 3, "num_heads": 4, "dropout_rate": 0.1,
                "residual_dropout": 0.2, "ff_dropout": 0.1, "norm_position": "pre",
                "share_embeddings": True, "batch_tokens": 2048, "mixed_precision": "bf16",
                "lr_schedule": "cosine", "lr_scale": 0.7, "warmup_steps": 800, "ema_decay": 0.999,
                "num_epochs": 15, "dev_eval": True, "beam_size": 4, "length_penalty": 1.4}

# --preset NAME: settings applied as if given on the command line, before the flags
# actually given (which win). The figures they reach are in docs/benchmarks.md.
PRESETS = {
    "original": {},  # the original's settings: word vocab, 512/6/8, constant lr, greedy decoding
    "multi30k_cpu": MULTI30K_CPU,
    # The same model, vocab and peak rate trained 26 epochs (70 to 90 minutes on 2 cores), with more
    # label smoothing and residual dropout, which pay only over the longer run, and a wider beam:
    # captions of new images gain most (docs/notes/2026-12-06-carry-over-search.md). A logdir of its
    # own, so that both presets' models can live side by side.
    "multi30k_cpu_long": {**MULTI30K_CPU, "num_epochs": 26, "label_smoothing": 0.2, "residual_dropout": 0.3,
                          "beam_size": 8, "logdir": "logdir_long"},
    # The same recipe at the paper's base width for one GPU: more dropout against the small
    # corpus, bigger batches, XLA (not yet measured on a GPU).
    "multi30k_gpu": {"dataset": "multi30k", "vocab_type": "subword", "vocab_size": 8000, "maxlen": 64,
                     "hidden_units": 512, "num_blocks": 6, "num_heads": 8, "dropout_rate": 0.1,
                     "residual_dropout": 0.3, "share_embeddings": True, "batch_tokens": 4096,
                     "mixed_precision": "bf16", "jit": True, "lr_schedule": "paper", "lr_scale": 1.0,
                     "warmup_steps": 4000, "num_epochs": 60, "dev_eval": True, "beam_size": 5,
                     "length_penalty": 0.6, "average_checkpoints": 5},
}


# The settings that name one of a few choices.
CHOICES = {"vocab_type": VOCAB_TYPES, "norm_position": NORM_POSITIONS, "lr_schedule": LR_SCHEDULES,
           "mixed_precision": PRECISIONS, "strategy": STRATEGIES, "preset": PRESETS}


@dataclass(frozen=True)
class Hyperparams:
    # data
    dataset: str = "iwslt2016"  # corpus preset, iwslt2016 (the original's) or multi30k: fills the empty paths below
    test_split: str = ""  # split eval.py translates; empty = the preset's (tst2014, test_2016_flickr); none: own files
    source_train: str = ""  # German training text (IWSLT tags, XML or plain; .gz ok); empty = from --dataset
    target_train: str = ""  # English training text, line-aligned with source_train; empty = from --dataset
    source_dev: str = ""  # German dev text (iwslt2016: tst2013, multi30k: val); empty = from --dataset
    target_dev: str = ""  # English dev references; empty = from --dataset
    source_test: str = ""  # German test text; empty = --test_split of --dataset
    target_test: str = ""  # English test references; empty = --test_split of --dataset
    vocab_dir: str = "preprocessed"  # where prepro.py writes the vocab (de/en.vocab.tsv, or subword.model)
    vocab_type: str = "word"  # word: refined words, one vocab per side (the original); subword: raw text, joint
    vocab_size: int = 8000  # subword only: pieces in the joint German-English SentencePiece vocab, specials included
    min_cnt: int = 20  # word only: words seen fewer times become <UNK> (the original: 20)
    vocab_sample: int = 500000  # subword only: SentencePiece learns from a seeded random sample of this many sentences
    shard_pairs: int = 100000  # prepro writes the training ids in shards of this many pairs; workers split the shards
    subword_alpha: float = 0.0  # subword only: sample each epoch's pieces with this alpha (lower: more varied); 0 = off
    subword_nbest: int = 64  # with subword_alpha: sample among each sentence's N best segmentations; 0 = among all
    maxlen: int = 10  # T: max tokens per sentence incl. </S>; longer pairs are dropped (original: 10)

    # model
    hidden_units: int = 512  # C: model width, as in the paper's base model
    num_blocks: int = 6  # encoder blocks and decoder blocks, each
    num_heads: int = 8  # h: attention heads; must divide hidden_units
    dropout_rate: float = 0.1  # on embeddings and attention weights
    residual_dropout: float = 0.0  # on each sublayer's output before the residual sum (paper 5.4); 0 = original
    ff_dropout: float = 0.0  # on the feed-forward's inner ReLU activations; 0 = off
    word_dropout: float = 0.0  # in training, decoder input words become <UNK> with this probability; 0 = off
    norm_position: str = "post"  # post: layer norm after each residual sum (the paper); pre: before each sublayer
    sinusoid: bool = True  # sinusoid positions (any length); false = learned, maxlen positions only
    share_embeddings: bool = False  # subword only: one table for source and target embeddings and output layer

    # training
    batch_size: int = 32  # N: sentence pairs per step
    batch_tokens: int = 0  # instead: batches of similar-length pairs, up to this many tokens per side; 0 = off
    shuffle_pairs: int = 100000  # pairs shuffled at a time, after the shards' order (a whole small corpus)
    lr: float = 0.0001  # Adam learning rate of --lr_schedule constant (the original's)
    lr_schedule: str = "constant"  # constant (--lr), paper (warm-up, then 1/sqrt(step)), paper_decay, cosine
    lr_scale: float = 1.0  # paper: lr = lr_scale * C^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)
    warmup_steps: int = 4000  # steps of linear warm-up to the peak rate (the paper: 4000), in every schedule
    decay_fraction: float = 0.2  # paper_decay: paper's rate, then linear to 0 over this last part of the steps
    max_steps: int = 0  # stop after this many optimizer steps (schedules end there); 0 = after num_epochs
    accumulate: int = 1  # batches per optimizer step; the loss is normalised by the target tokens of all of them
    ema_decay: float = 0.0  # keep an exponential moving average of the weights (e.g. 0.999), used to evaluate; 0 = off
    rdrop_alpha: float = 0.0  # R-Drop: each batch runs twice, plus alpha x the KL between the two passes; 0 = off
    adam_beta1: float = 0.9  # Adam's first-moment decay (paper 5.3)
    adam_beta2: float = 0.98  # Adam's second-moment decay (paper 5.3)
    adam_epsilon: float = 1e-8  # Adam's denominator guard (paper 5.3)
    mixed_precision: str = "none"  # bf16 or fp16: 16-bit matmuls; weights, softmax and loss stay float32
    jit: bool = False  # compile the training step with XLA (one compilation per batch shape)
    recompute: bool = False  # compute each block's activations again in the backward pass: less memory, more time
    strategy: str = "default"  # default (one device), mirrored (all local GPUs) or multiworker (from TF_CONFIG)
    label_smoothing: float = 0.1  # eps: weight moved from the gold word to the uniform distribution
    num_epochs: int = 20  # passes over the training pairs (the original published its epoch-18 model)
    logdir: str = "logdir"  # checkpoints, hparams.json and TensorBoard events
    keep_checkpoints: int = 5  # only the newest checkpoints are kept, to bound disk use
    save_every: int = 0  # also checkpoint every this many steps inside an epoch; 0 = at epoch ends only
    summary_every: int = 100  # steps between TensorBoard points and progress-bar updates
    dev_eval: bool = False  # after each epoch: dev-set BLEU and samples to TensorBoard, keep the best checkpoint
    eval_every: int = 0  # with dev_eval, also every this many steps inside an epoch; 0 = at epoch ends only
    patience: int = 0  # with dev_eval, stop after this many evaluations without a better dev BLEU; 0 = never
    seed: int = 42  # seeds Python, NumPy, TensorFlow and the shuffling

    # evaluation
    results_dir: str = "results"  # eval.py writes <results_dir>/<checkpoint name>
    decode_extra: int = 50  # a translation may have this many more words than its source ...
    decode_maxlen: int = 0  # ... and at most this many, incl. </S>; 0 = 256 (learned positions: maxlen)
    beam_size: int = 1  # hypotheses kept per sentence while decoding; 1 = greedy (the original)
    length_penalty: float = 0.6  # beam search: GNMT alpha, scores divided by ((5 + length) / 6)^alpha; 0 = none
    average_checkpoints: int = 1  # eval.py: average the weights of the newest this many checkpoints
    sampling_topk: int = 0  # sample each word among the K most likely instead of searching (back-translation); 0 = off
    sampling_temperature: float = 1.0  # with sampling_topk: logits divided by T before sampling (<1 sharper)
    preset: str = "original"  # named settings (PRESETS), applied under the flags given: original = the defaults

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise UserError(f"--dataset {self.dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
        splits = DATASETS[self.dataset]["splits"]
        if self.test_split and self.test_split not in splits:
            raise UserError(f"--test_split {self.test_split!r} is not a split of {self.dataset}; "
                            f"choose one of {', '.join(splits)}")
        own_test = bool(self.source_test and self.target_test) and not self.test_split  # no split: the user's files
        for name, value in preset_values(self.dataset, self.test_split).items():
            if not getattr(self, name) and not (own_test and name == "test_split"):
                object.__setattr__(self, name, value)  # frozen: resolved once, here
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} {getattr(self, name)!r} is unknown; choose one of {', '.join(choices)}")
        for name, (words, allowed) in RANGES.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and allowed(value)):  # NaN and inf fail here too
                raise UserError(f"--{name} must be {words}, got {value}")
        problem = next(self._conflicts(), None)
        if problem:
            raise UserError(problem)

    def _conflicts(self):
        """Settings that are each valid but do not go together, as messages."""
        if self.hidden_units % self.num_heads:
            yield (f"--hidden_units {self.hidden_units} is not divisible by --num_heads {self.num_heads}; "
                   "pick a width that splits into the heads")
        if self.share_embeddings and self.vocab_type != "subword":
            yield ("--share_embeddings needs --vocab_type subword: only the joint subword vocab gives "
                   "source and target the same ids")
        if self.subword_alpha and self.vocab_type != "subword":
            yield ("--subword_alpha samples subword pieces; it needs --vocab_type subword (a word has one "
                   "segmentation)")
        if self.eval_every and not self.dev_eval:
            yield f"--eval_every {self.eval_every} needs --dev_eval true, which evaluates on the dev split"
        if self.batch_tokens and self.batch_tokens < self.maxlen:
            yield (f"--batch_tokens {self.batch_tokens} cannot hold one pair of --maxlen {self.maxlen}; "
                   "use at least maxlen (or 0 for fixed batches)")
        if self.patience and not self.dev_eval:
            yield f"--patience {self.patience} needs --dev_eval true: it counts dev evaluations"
        if self.sampling_topk and self.beam_size > 1:
            yield (f"--sampling_topk {self.sampling_topk} samples one translation; it does not go with "
                   f"--beam_size {self.beam_size} (use 1)")
        if self.lr_schedule in ("paper_decay", "cosine") and 0 < self.max_steps <= self.warmup_steps:
            yield (f"--max_steps {self.max_steps} ends within --warmup_steps {self.warmup_steps}: "
                   f"--lr_schedule {self.lr_schedule} would never decay; train longer or warm up less")
        if not self.sinusoid and self.decode_maxlen > self.maxlen:
            yield (f"--decode_maxlen {self.decode_maxlen} exceeds --maxlen {self.maxlen}: learned positions "
                   "exist only up to maxlen (sinusoid ones have no limit)")

    @property
    def decode_cap(self):
        """The longest translation decoded, incl. </S>: sinusoid positions exist for any length."""
        return self.decode_maxlen or (256 if self.sinusoid else self.maxlen)


# Settings that fix the model's shape, vocabulary or test filter. A logdir's
# model can only be resumed or evaluated with the values it was trained with.
# (vocab_dir may move; a vocab of another size fails when the checkpoint loads.)
MODEL_FIELDS = ("vocab_type", "vocab_size", "min_cnt", "maxlen", "hidden_units", "num_blocks", "num_heads",
                "dropout_rate", "residual_dropout", "ff_dropout", "word_dropout", "norm_position", "sinusoid",
                "share_embeddings")


def hparams_path(logdir):
    return os.path.join(logdir, "hparams.json")


# hparams.json, as files.read_record checks it: every setting of its type (one this version added may be missing)
HPARAMS_RECORD = {"hparams": {f"{f.name}?": f.type for f in dataclasses.fields(Hyperparams)}, "command?": [str],
                  "vocab_sha256?": (str, None)}


def save(hp, command=None, vocab_sha256=None):
    """Writes the resolved settings, the command that produced them and the vocab's digest to hparams.json."""
    record = {"hparams": dataclasses.asdict(hp), "command": command or [], "vocab_sha256": vocab_sha256}
    write_atomic(hparams_path(hp.logdir), json.dumps(record, indent=2) + "\n")


def _record(logdir):
    """What train.py wrote to logdir/hparams.json, as a dict: read once per process for as long as the file is
    unchanged (its size and modification time), however many checks ask for it."""
    path = hparams_path(logdir)
    try:
        seen = os.stat(path)
        key = (os.path.realpath(path), seen.st_size, seen.st_mtime_ns, seen.st_ino)
    except OSError:
        key = (path,)  # missing or unreadable: read_record says which, every time
    return _read_once(key, path, logdir)


@functools.lru_cache(maxsize=8)
def _read_once(key, path, logdir):
    record = read_record(path, HPARAMS_RECORD, fix="move it away and run train.py again")
    if record is None:
        raise UserError(f"{path} not found: no model was trained in --logdir {logdir}; run train.py first")
    return record


def check_same_vocab(hp, vocab_sha256):
    """Refuses a vocab other than the one the model in hp.logdir was trained with (if one was)."""
    if not os.path.exists(hparams_path(hp.logdir)):
        return
    trained_with = _record(hp.logdir).get("vocab_sha256")
    if trained_with and trained_with != vocab_sha256:
        raise UserError(f"the vocab in {hp.vocab_dir} is not the one the model in {hp.logdir} was trained "
                        "with (it was rebuilt since); pass the --vocab_dir it was trained with, or use "
                        "another --logdir")


def load(logdir):
    """Reads the settings a model in `logdir` was trained with."""
    saved = _record(logdir)["hparams"]
    try:
        return Hyperparams(**saved)
    except (TypeError, UserError) as e:  # a field this version does not know, a value out of its range
        raise UserError(f"{hparams_path(logdir)} is damaged ({e}); move it away and run train.py again") from None


def refuse_other_model(saved, asked, where, fix):
    """Refuses settings `asked` that differ from the model's `saved` ones in a MODEL_FIELDS value:
    '<where> ... trained with other settings (name: saved != asked; ...); <fix>'."""
    differences = [f"{n}: {getattr(saved, n)!r} != {getattr(asked, n)!r}"
                   for n in MODEL_FIELDS if getattr(saved, n) != getattr(asked, n)]
    if differences:
        raise UserError(f"{where} trained with other settings ({'; '.join(differences)}); {fix}")


def for_training(explicit):
    """Settings for train.py: defaults plus flags, checked against a run being resumed."""
    hp = Hyperparams(**explicit)
    if os.path.exists(hparams_path(hp.logdir)):
        refuse_other_model(load(hp.logdir), hp, f"{hparams_path(hp.logdir)} holds a model",
                           "use another --logdir or the same settings")
    return hp


def _unresolved(hp):
    """hp's values with those that --dataset filled in emptied again, so that they follow a new preset."""
    values = dataclasses.asdict(hp)
    for name, value in preset_values(hp.dataset, hp.test_split).items():
        if name != "test_split" and values[name] == value:
            values[name] = ""
    if hp.test_split == DATASETS[hp.dataset]["test"]:
        values["test_split"] = ""
    return values


def for_evaluation(explicit, saved=None, where=None):
    """Settings for eval.py and the other scripts that use a trained model: those saved in logdir, with flags
    applied on top (saved, where: the settings of a model read elsewhere, a CTranslate2 export, and its words).

    Flags may change what is evaluated (test files or --dataset/--test_split,
    batch size, results_dir, decoding), not what the model is: a differing
    MODEL_FIELDS flag is an error.
    """
    if saved is None:
        logdir = explicit.get("logdir", Hyperparams.logdir)  # the logdir may have moved
        saved, where, explicit = load(logdir), f"the model in {logdir} was", {**explicit, "logdir": logdir}
    asked = Hyperparams(**{**_unresolved(saved), **explicit})
    preset = PRESETS.get(explicit.get("preset"), {})
    from_preset = [n for n in MODEL_FIELDS if n in preset and getattr(saved, n) != preset[n]]
    refuse_other_model(saved, asked, where, "drop those flags" + (  # flags the user may never have typed
        f" (--preset {explicit['preset']} sets {', '.join(from_preset)}; without --preset the model's own "
        "settings are used)" if from_preset else ""))
    return asked


def check_vocab_dir(hp):
    """Refuses the --vocab_dir that the logdir's hparams.json records, relative to where train.py ran, when it is
    not there from here (a script run from another directory), before the vocab's own 'run prepro.py' message."""
    if not os.path.isabs(hp.vocab_dir) and not os.path.isdir(hp.vocab_dir):
        raise UserError(f"--vocab_dir {hp.vocab_dir}, which {hparams_path(hp.logdir)} records, is not here: it is "
                        "relative to the directory train.py ran in; run from there, or pass --vocab_dir with its path")
