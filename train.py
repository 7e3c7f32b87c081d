"""Trains the Transformer: vocab + corpus -> batches -> checkpoints and TensorBoard events in logdir.

TensorBoard gets mean_loss, acc, lr, grad_norm and tokens_per_s every
--summary_every steps. With --dev_eval, the model is scored on the dev split
after each epoch: dev_loss, dev_acc, dev_bleu, sample translations and a
cross-attention image go to TensorBoard, and the best model is kept in
logdir/best (with --ema_decay, the moving average of the weights is what is
scored and kept); --patience stops training once the dev BLEU stops rising.
Training ends after --num_epochs, or at --max_steps optimizer steps. Run it
again on the same logdir to resume from the latest checkpoint: the epoch and
the global step continue where they stopped.
"""
import contextlib
import dataclasses
import os
import time

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import keras
import tensorflow as tf
from tqdm import tqdm

import checkpoints
import data_load
import hyperparams
import shards
import vocab
from cli import parse_args, run
from dev_eval import DevEvaluation
from files import check_writable
from messages import UserError, note
from model import build_model
from optimizer import UNREAD_BY_SCHEDULE, averaged_weights, make_optimizer
from training import (Position, StopOnSignal, TrainingClock, TrainStep, make_strategy, steps_per_epoch,
                      worker_count, worker_index)


def check_finite(first_bad_step, hp):
    """Stops training (UserError) once a loss was NaN or Inf; nothing is saved after it."""
    bad = int(first_bad_step.numpy())
    if bad:
        latest = checkpoints.latest(hp.logdir)  # looked up only now: the message names it
        kept = f"{latest} is the last good checkpoint, untouched" if latest else "no checkpoint was written"
        raise UserError(f"the training loss became NaN or Inf at step {bad}; {kept}; lower --lr "
                        f"(now {hp.lr}) or train without --mixed_precision (now {hp.mixed_precision})")


class Loop:
    """The epochs of one run: steps, TensorBoard reports, checkpoints and dev evaluations.

    for each group of --accumulate batches: one optimizer step, then after_step() reports, saves and
    evaluates when they are due and says whether training stops; at the epoch's end, end_epoch().
    """

    def __init__(self, hp, strategy, worker, step, checkpoint, batches_per_epoch, writer, dev):
        self.hp, self.strategy, self.worker, self.step = hp, strategy, worker, step
        self.checkpoint, self.writer, self.dev = checkpoint, writer, dev
        self.position = Position(checkpoint, batches_per_epoch)
        self.clock = TrainingClock()  # for tokens/s: training only, without dev evaluation and checkpoints
        self.reported = 0.0  # the clock's reading at the last report

    def finished(self):
        """Why there is nothing left to train (a line to print), or None."""
        hp, latest, position = self.hp, checkpoints.latest(self.hp.logdir), self.position
        if hp.max_steps and position.step >= hp.max_steps:
            return f"{latest} has reached --max_steps {hp.max_steps}; raise it to train on"
        if position.epoch > hp.num_epochs:
            return f"{latest} has finished all {hp.num_epochs} epochs; raise --num_epochs to train on"
        if self.patience_ran_out():
            return (f"training stopped early: no better dev BLEU in {self.dev.stale} evaluations "
                    f"(best {self.dev.best:.2f}); raise --patience to train on")
        return None

    def run(self, training_set):
        """Trains the epochs left; stops early, with a checkpoint, on SIGINT or SIGTERM, at --max_steps, or
        when --patience runs out, and says why."""
        why = None
        with StopOnSignal() as stop:
            while why is None and self.position.epoch <= self.hp.num_epochs:
                try:
                    why = self.run_epoch(training_set, stop)
                except tf.errors.DataLossError as e:  # a record's checksum failed as it was read
                    said = e.message.splitlines()[0]
                    raise UserError(f"an id shard in {shards.shard_dir(self.hp)} is damaged ({said}); run "
                                    "prepro.py with the same settings again (the last checkpoint is kept)") from None
        if why:
            self.writer.flush()
            print(why)

    def run_epoch(self, training_set, stop):
        """One epoch from where the run stands: why training stops within it or at its end, or None."""
        hp, position = self.hp, self.position
        self.started, self.reported = (time.time(), self.clock.now()), self.clock.now()
        self.shapes = set()  # the batch shapes met this epoch: each is one program to compile (--jit)
        # each input pipeline (one per worker) reads its own shards; the same seed orders them everywhere
        batches = self.strategy.distribute_datasets_from_function(
            lambda context: training_set.batches(hp.seed + position.epoch, context.input_pipeline_id, position.done,
                                                 position.epoch))
        self.step.expect(batches.element_spec)  # one graph for all batch shapes
        with tqdm(total=position.batches_per_epoch, initial=position.done, unit="batch", disable=self.worker > 0,
                  desc=f"epoch {position.epoch}/{hp.num_epochs}") as self.bar:
            for group in shards.chunks(batches, hp.accumulate):  # one optimizer step per group
                self.shapes.update(self.shape(batch) for batch in group)
                # the gradient norm is measured at every summary_every-th step
                self.step(group, measure_norm=(position.step + 1) % hp.summary_every == 0)
                position.advance(len(group))
                self.bar.update(len(group))
                why = self.after_step(stop)
                if why or (hp.max_steps and position.step >= hp.max_steps):
                    break
        return why or self.end_epoch()

    def shape(self, batch):
        """The shapes of a batch's parts on every local replica."""
        return tuple(t.shape for part in batch for t in self.strategy.experimental_local_results(part))

    def after_step(self, stop):
        """After each optimizer step: the report, checkpoint and dev evaluation that are due, and why training
        stops now (a signal, --patience), or None."""
        hp, position = self.hp, self.position
        if position.step % hp.summary_every == 0:
            mean_loss, acc = self.report(measured=True)
            self.bar.set_postfix(mean_loss=f"{mean_loss:.3f}", acc=f"{acc:.3f}")
        if stop.signal:
            return f"{stop.signal} at step {position.step}: saved {self.save()}; run the same command to resume"
        if hp.save_every and position.step % hp.save_every == 0 and position.mid_epoch:
            self.save()
        if self.dev and hp.eval_every and position.step % hp.eval_every == 0 and position.mid_epoch:
            self.bar.set_postfix(dev_bleu=f"{self.evaluate():.2f}")
            if self.patience_ran_out():
                return self.early_stop(f"saved {self.save()}")
        return None

    def patience_ran_out(self):
        return bool(self.dev and self.hp.patience and self.dev.stale >= self.hp.patience)

    def early_stop(self, saved):
        """Why --patience ends training."""
        return (f"no better dev BLEU in the last {self.dev.stale} evaluations (best {self.dev.best:.2f}, kept in "
                f"{checkpoints.best_checkpoint(self.hp.logdir)}): --patience {self.hp.patience} ends training; {saved}")

    def end_epoch(self):
        """The epoch's last report, checkpoint, dev evaluation and summary line (also where --max_steps ends
        it early); why training stops after it (--max_steps, --patience), or None."""
        position, (start, epoch_started) = self.position, self.started
        if self.step.interval.steps.numpy() > 0:
            self.report(measured=False)
        mean_loss, acc = self.step.epoch.means()
        tokens_per_s = self.step.epoch.tokens.numpy() / max(self.clock.now() - epoch_started, 1e-9)
        self.step.epoch.reset()
        with self.writer.as_default(step=position.step):
            tf.summary.scalar("batch_shapes", len(self.shapes))
        epoch, ended = position.epoch, not position.mid_epoch
        if ended:
            position.next_epoch()
        path = self.save()
        scores = f"dev BLEU {self.evaluate(epoch):.2f} (best {self.dev.best:.2f}), " if self.dev else ""
        self.writer.flush()
        print(f"epoch {epoch}: step {position.step}, mean_loss {mean_loss:.3f}, acc {acc:.3f}, {scores}"
              f"{tokens_per_s:,.0f} tokens/s, {len(self.shapes)} batch shapes, {time.time() - start:.0f} s, "
              f"saved {path}")
        if self.hp.max_steps and position.step >= self.hp.max_steps:
            return f"reached --max_steps {self.hp.max_steps}: training ends"
        return self.early_stop("the last checkpoint is saved") if self.patience_ran_out() else None

    def report(self, measured):
        """Writes the means since the last report to TensorBoard (and grad_norm if this step measured it);
        checks that the loss stayed finite; returns the mean loss and accuracy."""
        sums = self.step.interval
        mean_loss, acc = sums.means()
        tokens_per_s = sums.tokens.numpy() / max(self.clock.now() - self.reported, 1e-9)
        sums.reset()
        self.reported = self.clock.now()
        with self.writer.as_default(step=self.position.step):
            tf.summary.scalar("mean_loss", mean_loss)
            tf.summary.scalar("acc", acc)
            tf.summary.scalar("lr", float(keras.ops.convert_to_numpy(self.step.optimizer.learning_rate)))
            if measured:
                tf.summary.scalar("grad_norm", float(self.step.grad_norm.numpy()))
            tf.summary.scalar("tokens_per_s", tokens_per_s)
        if measured:
            check_finite(self.step.first_bad_step, self.hp)
        return mean_loss, acc

    def save(self):
        """Checks the loss stayed finite, then checkpoints the position reached; returns the checkpoint's path."""
        check_finite(self.step.first_bad_step, self.hp)
        name = self.position.record()
        with self.clock.paused():
            return checkpoints.save_checkpoint(self.checkpoint, self.hp.logdir, name, self.hp.keep_checkpoints,
                                               self.worker)

    def evaluate(self, epoch=None):
        """Dev BLEU now (logged, and the best model kept), of the weights' moving average if one is kept;
        not counted as training time. epoch: the one it follows (default: the one in progress)."""
        with self.clock.paused(), averaged_weights(self.step.model, self.step.optimizer):
            return self.dev(epoch or self.position.epoch, self.position.step)


def load_data(hp, strategy):
    """The vocabs, once checked against the training text and against a model being resumed, and the
    training pairs' id shards as a TrainingSet for this strategy's workers; the vocab's digest for hparams.json.
    Each file is read once: the vocab files with corpus.json, then the shards' manifest."""
    src_vocab, tgt_vocab, vocab_sha256, built = vocab.open_vocabs(hp)
    manifest = shards.shard_manifest(hp, fix=shards.AGAIN)
    corpus_sha256 = shards.known_corpus_digest(hp, manifest)
    vocab.check_vocab_source(hp, corpus_sha256, built)  # the vocab was built from this training text ...
    hyperparams.check_same_vocab(hp, vocab_sha256)  # ... and a resumed model was trained with it
    shards.check_shards(hp, manifest, {"corpus_sha256": corpus_sha256, "vocab_sha256": vocab_sha256,
                                       "vocab_type": hp.vocab_type})  # ... and so were the shards
    training_set = data_load.TrainingSet(hp, manifest, (src_vocab.size, tgt_vocab.size), worker_count(strategy),
                              strategy.num_replicas_in_sync)
    return src_vocab, tgt_vocab, training_set, vocab_sha256


def make_checkpoint(model, optimizer):
    """What a checkpoint holds: the model, the optimizer, the place in the run and dropout's random state.

    epoch: the last finished epoch; position: batches done in the epoch after
    it. Dropout's random state is not among the model's weights; it is saved
    too, so a resumed run draws the same dropout masks as an uninterrupted one.
    Call within the strategy's scope.
    """
    weights = {id(w) for w in model.weights}
    return tf.train.Checkpoint(model=model, optimizer=optimizer,
                               epoch=tf.Variable(0, dtype=tf.int64, trainable=False),
                               position=tf.Variable(0, dtype=tf.int64, trainable=False),
                               rng=[v for v in model.variables if id(v) not in weights])


# Settings that shape the rest of a run (its rate, batches, loss, data), not the model: a resumed run may change
# them (a higher num_epochs trains on), and says which, since they bend its course where it resumes
COURSE_FIELDS = ("subword_alpha", "batch_size", "batch_tokens", "lr", "lr_schedule", "lr_scale", "warmup_steps",
                 "decay_fraction", "max_steps", "num_epochs", "accumulate", "ema_decay", "rdrop_alpha", "adam_beta1",
                 "adam_beta2", "adam_epsilon", "label_smoothing", "seed")


def course_changes(hp):
    """The COURSE_FIELDS that hp changes against the run it resumes in hp.logdir, as 'name old -> new' (none for
    a new run; a setting the schedule does not read is no change, unless the schedule itself changes)."""
    if not os.path.exists(hyperparams.hparams_path(hp.logdir)):
        return []
    saved = hyperparams.load(hp.logdir)
    unread = UNREAD_BY_SCHEDULE[hp.lr_schedule] if saved.lr_schedule == hp.lr_schedule else ()
    return [f"{n} {getattr(saved, n)!r} -> {getattr(hp, n)!r}" for n in COURSE_FIELDS
            if n not in unread and getattr(saved, n) != getattr(hp, n)]


# Settings train.py does not read (--help lists the others): evaluation's, and those of prepro.py alone
NOT_READ = {"test_split", "source_test", "target_test", "results_dir", "beam_size", "length_penalty",
            "average_checkpoints", "sampling_topk", "sampling_temperature", "vocab_sample", "shard_pairs"}


def main(argv):
    explicit, _ = parse_args(argv, description=__doc__.splitlines()[0],
                             settings=[f.name for f in dataclasses.fields(hyperparams.Hyperparams)
                                       if f.name not in NOT_READ])
    hp = hyperparams.for_training(explicit)
    check_writable(hp.logdir, "logdir")
    strategy = make_strategy(hp.strategy)  # first: a multiworker process joins its cluster here
    worker = worker_index(strategy)
    # One training process per logdir (the chief; the other workers write nothing there).
    with checkpoints.exclusive(hp.logdir) if worker == 0 else contextlib.nullcontext():
        fit(hp, strategy, worker, argv)


def fit(hp, strategy, worker, argv):
    """settings -> data -> model -> restore -> epochs, in hp.logdir; argv is recorded in hparams.json."""
    keras.utils.set_random_seed(hp.seed)
    src_vocab, tgt_vocab, training_set, vocab_sha256 = load_data(hp, strategy)
    if training_set.batches_per_epoch == 0:
        raise UserError(f"only {training_set.pairs} training pairs fit --maxlen {hp.maxlen}, fewer than one "
                        f"batch of --batch_size {hp.batch_size}; lower the batch size or raise maxlen")
    optimizer_steps = steps_per_epoch(training_set.batches_per_epoch, hp.accumulate)

    with strategy.scope():  # variables made under the strategy live on every replica
        model = build_model(hp, src_vocab.size, tgt_vocab.size)
        optimizer = make_optimizer(hp, total_steps=hp.num_epochs * optimizer_steps)
        optimizer.build(model.trainable_variables)
        checkpoint = make_checkpoint(model, optimizer)
    changes = course_changes(hp)  # before save() writes the new settings over the old
    if checkpoints.resume(checkpoint, hp.logdir) and changes and worker == 0:
        note(f"the run in {hp.logdir} goes on with other training settings than it began with "
             f"({'; '.join(changes)}): its rate, batches and loss follow them from here")
    if worker == 0:  # the chief writes the files; other workers only compute
        hyperparams.save(hp, command=["train.py", *argv], vocab_sha256=vocab_sha256)
    print(f"{training_set.pairs} training pairs fit --maxlen {hp.maxlen} ({training_set.dropped} longer ones are left "
          "out), "
          f"{optimizer_steps} steps per epoch"
          f"{f' ({training_set.batches_per_epoch} batches)' if hp.accumulate > 1 else ''}, "
          f"{model.count_params():,} parameters, "
          f"vocab {src_vocab.size} -> {tgt_vocab.size}, {strategy.num_replicas_in_sync} replica(s)")
    if len(training_set.sets) > 1:
        again = (f"; epochs after the {len(training_set.sets)}th reuse them in turn"
                 if hp.num_epochs > len(training_set.sets) else "")
        print(f"each epoch trains on its own sampled pieces (--subword_alpha {hp.subword_alpha}, "
              f"{len(training_set.sets)} sets from prepro.py){again}")
    if len(training_set.parts) > 1:
        print(f"worker {worker} reads {len(training_set.parts[worker][0])} of "
              f"{sum(len(part[0]) for part in training_set.parts)} id shards")

    step = TrainStep(model, optimizer, hp.label_smoothing, jit=hp.jit, strategy=strategy, accumulate=hp.accumulate,
                     rdrop_alpha=hp.rdrop_alpha)
    writer = tf.summary.create_file_writer(hp.logdir) if worker == 0 else tf.summary.create_noop_writer()
    dev = DevEvaluation(hp, model, src_vocab, tgt_vocab, writer, worker) if hp.dev_eval else None
    loop = Loop(hp, strategy, worker, step, checkpoint, training_set.batches_per_epoch, writer, dev)
    done = loop.finished()
    if done:
        print(done)
        return
    loop.run(training_set)


if __name__ == "__main__":
    run(main)
