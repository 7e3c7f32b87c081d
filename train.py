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
import signal
import threading
import time
from dataclasses import dataclass

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
from checkpoints import checkpoint_name
from cli import UserError, check_writable, run
from dev_eval import DevEvaluation
from hyperparams import parse_args
from model import build_model
from training import (TrainStep, averaged_weights, make_optimizer, make_strategy, steps_per_epoch, worker_count,
                      worker_index)


def check_finite(first_bad_step, hp):
    """Stops training (UserError) once a loss was NaN or Inf; nothing is saved after it."""
    bad = int(first_bad_step.numpy())
    if bad:
        latest = checkpoints.latest(hp.logdir)  # looked up only now: the message names it
        kept = f"{latest} is the last good checkpoint, untouched" if latest else "no checkpoint was written"
        raise UserError(f"the training loss became NaN or Inf at step {bad}; {kept}; lower --lr "
                        f"(now {hp.lr}) or train without --mixed_precision (now {hp.mixed_precision})")


class StopOnSignal:
    """Within `with`, SIGINT (Ctrl-C) and SIGTERM set .signal instead of killing the process.

    The loop then finishes its step, writes a checkpoint and returns. A second
    Ctrl-C interrupts at once.
    """

    def __enter__(self):
        self.signal, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._note)
        return self

    def _note(self, number, frame):
        self.signal = signal.Signals(number).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


class TrainingClock:
    """Seconds spent training, not counting the time inside paused() (dev evaluation, checkpoints)."""

    def __init__(self):
        self.total, self.since = 0.0, time.perf_counter()

    def now(self):
        return self.total + time.perf_counter() - self.since

    @contextlib.contextmanager
    def paused(self):
        self.total = self.now()
        try:
            yield
        finally:
            self.since = time.perf_counter()


@dataclass
class Place:
    """Where the loop stands: the epoch it trains, the batches done in it, the global (optimizer) step."""
    epoch: int
    done: int
    step: int


class Loop:
    """The epochs of one run: steps, TensorBoard reports, checkpoints and dev evaluations."""

    def __init__(self, hp, strategy, worker, step, checkpoint, batches_per_epoch, writer, dev):
        self.hp, self.strategy, self.worker, self.step = hp, strategy, worker, step
        self.checkpoint, self.batches_per_epoch, self.writer, self.dev = checkpoint, batches_per_epoch, writer, dev
        self.clock = TrainingClock()  # for tokens/s: training only, without dev evaluation and checkpoints
        self.place = Place(epoch=int(checkpoint.epoch.numpy()) + 1, done=int(checkpoint.position.numpy()),
                           step=int(step.optimizer.iterations.numpy()))
        self.reported = 0.0  # the clock's reading at the last report

    def finished(self):
        """Why there is nothing left to train (a line to print), or None."""
        hp, latest = self.hp, checkpoints.latest(self.hp.logdir)
        if hp.max_steps and self.place.step >= hp.max_steps:
            return f"{latest} has reached --max_steps {hp.max_steps}; raise it to train on"
        if self.place.epoch > hp.num_epochs:
            return f"{latest} has finished all {hp.num_epochs} epochs; raise --num_epochs to train on"
        if self.dev and hp.patience and self.dev.stale >= hp.patience:
            return (f"training stopped early: no better dev BLEU in {self.dev.stale} evaluations "
                    f"(best {self.dev.best:.2f}); raise --patience to train on")
        return None

    def run(self, epochs):
        """Trains the epochs left; returns early, with a checkpoint, on SIGINT or SIGTERM, at --max_steps, or
        when --patience runs out."""
        with StopOnSignal() as stop:
            for epoch in range(self.place.epoch, self.hp.num_epochs + 1):
                self.place.epoch = epoch
                try:
                    finished = self.run_epoch(epochs, stop)
                except tf.errors.DataLossError as e:  # a record's checksum failed as it was read
                    said = e.message.splitlines()[0]
                    raise UserError(f"an id shard in {shards.shard_dir(self.hp)} is damaged ({said}); run "
                                    "prepro.py with the same settings again (the last checkpoint is kept)") from None
                if not finished:
                    return
                self.place.done = 0

    def run_epoch(self, epochs, stop):
        """One epoch from place.done on; False if training stops within or after it."""
        hp, place = self.hp, self.place
        start, epoch_started = time.time(), self.clock.now()
        self.reported = epoch_started
        self.shapes = set()  # the batch shapes met this epoch: each is one program to compile (--jit)
        # each input pipeline (one per worker) reads its own shards; the same seed orders them everywhere
        batches = self.strategy.distribute_datasets_from_function(
            lambda context: epochs.batches(hp.seed + place.epoch, context.input_pipeline_id, place.done))
        self.step.expect(batches.element_spec)  # one graph for all batch shapes
        with tqdm(total=self.batches_per_epoch, initial=place.done, desc=f"epoch {place.epoch}/{hp.num_epochs}",
                  unit="batch", disable=self.worker > 0) as bar:
            for src, tgt in batches:
                self.shapes.add(tuple(t.shape for part in (src, tgt)
                                      for t in self.strategy.experimental_local_results(part)))
                place.done += 1
                mid_epoch = place.done < self.batches_per_epoch
                # with --accumulate N, every N-th batch (and an epoch's last) ends an optimizer step; the
                # gradient norm is measured on every summary_every-th step; not at an epoch's end, where
                # the last batches of length buckets are small and their gradients noisier
                apply = place.done % hp.accumulate == 0 or not mid_epoch
                self.step(src, tgt, (place.step + 1) % hp.summary_every == 0, apply)
                bar.update()
                if not apply:
                    continue
                place.step += 1
                if place.step % hp.summary_every == 0:
                    mean_loss, acc = self.report(measured=True)
                    bar.set_postfix(mean_loss=f"{mean_loss:.3f}", acc=f"{acc:.3f}")
                if stop.signal or (hp.save_every and place.step % hp.save_every == 0 and mid_epoch):
                    path = self.save()
                if self.dev and hp.eval_every and place.step % hp.eval_every == 0 and mid_epoch:
                    bar.set_postfix(dev_bleu=f"{self.evaluate():.2f}")
                    if self.patience_ran_out():
                        bar.close()
                        return self.end_early(f"saved {self.save()}")
                if stop.signal:
                    bar.close()
                    self.writer.flush()
                    print(f"{stop.signal} at step {place.step}: saved {path}; run the same command to resume")
                    return False
                if hp.max_steps and place.step >= hp.max_steps:
                    break
        self.end_epoch(time.time() - start, epoch_started)
        if hp.max_steps and place.step >= hp.max_steps:
            print(f"reached --max_steps {hp.max_steps}: training ends")
            return False
        if self.patience_ran_out():
            return self.end_early("the last checkpoint is saved")
        return True

    def patience_ran_out(self):
        return bool(self.dev and self.hp.patience and self.dev.stale >= self.hp.patience)

    def end_early(self, saved):
        """Says that --patience ended training; returns False (the loop stops)."""
        self.writer.flush()
        print(f"no better dev BLEU in the last {self.dev.stale} evaluations (best {self.dev.best:.2f}, kept in "
              f"{checkpoints.best_checkpoint(self.hp.logdir)}): --patience {self.hp.patience} ends training; {saved}")
        return False

    def end_epoch(self, seconds, epoch_started):
        """The epoch's last report, checkpoint, dev evaluation and summary line."""
        if self.step.interval.steps.numpy() > 0:
            self.report(measured=False)
        mean_loss, acc = self.step.epoch.means()
        tokens_per_s = self.step.epoch.tokens.numpy() / max(self.clock.now() - epoch_started, 1e-9)
        self.step.epoch.reset()
        with self.writer.as_default(step=self.place.step):
            tf.summary.scalar("batch_shapes", len(self.shapes))
        self.writer.flush()
        path = self.save()
        scores = f"dev BLEU {self.evaluate():.2f} (best {self.dev.best:.2f}), " if self.dev else ""
        self.writer.flush()
        print(f"epoch {self.place.epoch}: step {self.place.step}, mean_loss {mean_loss:.3f}, acc {acc:.3f}, {scores}"
              f"{tokens_per_s:,.0f} tokens/s, {len(self.shapes)} batch shapes, {seconds:.0f} s, saved {path}")

    def report(self, measured):
        """Writes the means since the last report to TensorBoard (and grad_norm if this step measured it);
        checks that the loss stayed finite; returns the mean loss and accuracy."""
        sums = self.step.interval
        mean_loss, acc = sums.means()
        tokens_per_s = sums.tokens.numpy() / max(self.clock.now() - self.reported, 1e-9)
        sums.reset()
        self.reported = self.clock.now()
        with self.writer.as_default(step=self.place.step):
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
        """Checks the loss stayed finite, then checkpoints the place reached; returns the checkpoint's path."""
        hp, place = self.hp, self.place
        check_finite(self.step.first_bad_step, hp)
        finished = place.done == self.batches_per_epoch
        self.checkpoint.epoch.assign(place.epoch if finished else place.epoch - 1)
        self.checkpoint.position.assign(place.done % self.batches_per_epoch)
        with self.clock.paused():
            return checkpoints.save_checkpoint(self.checkpoint, hp.logdir, checkpoint_name(place.epoch, place.step),
                                               hp.keep_checkpoints, self.worker)

    def evaluate(self):
        """Dev BLEU now (logged, and the best model kept), of the weights' moving average if one is kept;
        not counted as training time."""
        with self.clock.paused(), averaged_weights(self.step.model, self.step.optimizer):
            return self.dev(self.place.epoch, self.place.step)


def load_data(hp, strategy):
    """The vocabs, once checked against the training text and against a model being resumed, and the
    training pairs' id shards as Epochs for this strategy's workers; the vocab's digest for hparams.json."""
    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    corpus_sha256 = shards.corpus_digest(hp)
    vocab.check_vocab_source(hp, corpus_sha256)  # the vocab was built from this training text ...
    vocab_sha256 = vocab.vocab_digest(hp)
    hyperparams.check_same_vocab(hp, vocab_sha256)  # ... and a resumed model was trained with it
    manifest = shards.checked_shards(hp, {"corpus_sha256": corpus_sha256, "vocab_sha256": vocab_sha256,
                                          "vocab_type": hp.vocab_type})  # ... and so were the shards
    epochs = data_load.Epochs(hp, manifest, (src_vocab.size, tgt_vocab.size), worker_count(strategy),
                              strategy.num_replicas_in_sync)
    return src_vocab, tgt_vocab, epochs, vocab_sha256


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


def main(argv):
    explicit, _ = parse_args(argv, description=__doc__.splitlines()[0])
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
    src_vocab, tgt_vocab, epochs, vocab_sha256 = load_data(hp, strategy)
    if epochs.steps == 0:
        raise UserError(f"only {epochs.pairs} training pairs fit --maxlen {hp.maxlen}, fewer than one "
                        f"batch of --batch_size {hp.batch_size}; lower the batch size or raise maxlen")
    optimizer_steps = steps_per_epoch(epochs.steps, hp.accumulate)

    with strategy.scope():  # variables made under the strategy live on every replica
        model = build_model(hp, src_vocab.size, tgt_vocab.size)
        optimizer = make_optimizer(hp, total_steps=hp.num_epochs * optimizer_steps)
        optimizer.build(model.trainable_variables)
        checkpoint = make_checkpoint(model, optimizer)
    checkpoints.resume(checkpoint, hp.logdir)
    if worker == 0:  # the chief writes the files; other workers only compute
        hyperparams.save(hp, command=["train.py", *argv], vocab_sha256=vocab_sha256)
    print(f"{epochs.pairs} training pairs fit --maxlen {hp.maxlen} ({epochs.dropped} longer ones are left out), "
          f"{optimizer_steps} steps per epoch{f' ({epochs.steps} batches)' if hp.accumulate > 1 else ''}, "
          f"{model.count_params():,} parameters, "
          f"vocab {src_vocab.size} -> {tgt_vocab.size}, {strategy.num_replicas_in_sync} replica(s)")
    if len(epochs.parts) > 1:
        print(f"worker {worker} reads {len(epochs.parts[worker])} of {sum(map(len, epochs.parts))} id shards")

    step = TrainStep(model, optimizer, hp.label_smoothing, jit=hp.jit, strategy=strategy, accumulate=hp.accumulate,
                     rdrop_alpha=hp.rdrop_alpha)
    writer = tf.summary.create_file_writer(hp.logdir) if worker == 0 else tf.summary.create_noop_writer()
    dev = DevEvaluation(hp, model, src_vocab, tgt_vocab, writer, worker) if hp.dev_eval else None
    loop = Loop(hp, strategy, worker, step, checkpoint, epochs.steps, writer, dev)
    done = loop.finished()
    if done:
        print(done)
        return
    loop.run(epochs)


if __name__ == "__main__":
    run(main)
