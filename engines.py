"""Which engine runs a trained model: the flags that choose its weights, its settings, and open_engine().

    --logdir (the default)  inference.TensorFlowEngine: the TensorFlow model itself
    --ct2 DIR               ct2.CTranslate2Engine: its CTranslate2 export, without TensorFlow

translate.py, eval.py, score.py and serve.py choose their engine here; what
every engine does is engine.Engine's. The engines are imported only when
chosen: with --ct2 nothing imports TensorFlow.
"""
import argparse

import hyperparams
from messages import UserError


def add_model_flags(parser, verb="use", ensemble=False, ct2=True):
    """--ckpt, --best and --raw_weights, which choose the weights a script loads (and --ensemble, and --ct2)."""
    if ct2:
        parser.add_argument("--ct2", default=None, metavar="DIR",
                            help=f"{verb} the CTranslate2 export in DIR (export.py --format ctranslate2) instead of "
                                 "the TensorFlow model in --logdir: faster on a CPU, and without TensorFlow")
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


LATEST = argparse.Namespace(ct2=None, ckpt=None, best=False, raw_weights=False, ensemble=[])  # the flags' defaults


def settings(explicit, args):
    """The settings of the model the flags choose (from logdir/hparams.json, or the export's export.json),
    with the flags given on top. With --ct2, export.json is read (and the export's files checked) here, once:
    the record travels on to open_engine() as args.export."""
    if getattr(args, "ct2", None) is None:
        args.vocab_dir_recorded = "vocab_dir" not in explicit  # (open_engine() checks it is there from here)
        return hyperparams.for_evaluation(explicit)
    chosen = [f"--{name}" for name in ("ckpt", "best", "raw_weights", "ensemble") if getattr(args, name, None)]
    if chosen:
        raise UserError(f"{', '.join(chosen)} choose among the checkpoints in --logdir; --ct2 {args.ct2} holds the "
                        "weights it was exported with (export.py takes the same flags)")
    import ct2
    args.export = ct2.export_record(args.ct2)
    return ct2.settings(args.ct2, explicit, args.export)


def open_engine(hp, args=LATEST, nbest=1):
    """The engine the flags choose: ct2.CTranslate2Engine for --ct2 DIR, else inference.TensorFlowEngine."""
    if getattr(args, "ct2", None) is not None:
        import ct2
        return ct2.CTranslate2Engine(args.ct2, hp, nbest, record=getattr(args, "export", None))
    if getattr(args, "vocab_dir_recorded", False):
        hyperparams.check_vocab_dir(hp)
    import cli
    cli.import_tensorflow()  # only now, and only for this engine
    import inference
    return inference.load_engine(hp, args, nbest)
