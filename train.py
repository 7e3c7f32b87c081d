"""Trains the Transformer: vocab + corpus -> batches -> checkpoints and TensorBoard events in logdir.

TensorBoard gets mean_loss, acc, lr, grad_norm and tokens_per_s every
--summary_every steps. With --dev_eval, the model is scored on the dev split
after each epoch: dev_loss, dev_acc, dev_bleu, sample translations and a
cross-attention image go to TensorBoard, and the best model is kept in
logdir/best. Run it again on the same logdir to resume from the latest
checkpoint: the epoch and the global step continue where they stopped.
"""
import contextlib
import signal
import threading
import time

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import keras
import tensorflow as tf
from tqdm import tqdm

import checkpoints
import data_load
import hyperparams
from checkpoints import checkpoint_name, resume, save_checkpoint
from cli import UserError, check_writable, run
from data_load import PAD
from dev_eval import DevEvaluation
from hyperparams import parse_args
from model import build_model, shift_right
from modules import loss_and_accuracy


class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr = scale * C^-0.5 * min(step^-0.5, step * warmup^-1.5) (paper 5.3, eq. 3).

    Rises linearly for `warmup` steps, to scale * (C * warmup)^-0.5, then falls
    as 1 / sqrt(step). Keras counts the steps taken before this one from 0,
    the paper's step_num from 1.
    """

    def __init__(self, units, warmup, scale=1.0):
        self.units, self.warmup, self.scale = units, warmup, scale

    def __call__(self, iterations):
        step = tf.cast(iterations, tf.float32) + 1.0
        return self.scale * self.units ** -0.5 * tf.minimum(step ** -0.5, step * self.warmup ** -1.5)

    def get_config(self):
        return {"units": self.units, "warmup": self.warmup, "scale": self.scale}


def make_optimizer(hp):
    """Adam with the paper's settings and --lr_schedule; wrapped for loss scaling when training in float16."""
    lr = PaperSchedule(hp.hidden_units, hp.warmup_steps, hp.lr_scale) if hp.lr_schedule == "paper" else hp.lr
    optimizer = keras.optimizers.Adam(lr, beta_1=hp.adam_beta1, beta_2=hp.adam_beta2, epsilon=hp.adam_epsilon)
    if hp.mixed_precision == "fp16":  # small float16 gradients would round to zero unscaled
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


LOSS, ACC, TOKENS, STEPS = range(4)  # the columns of the running sums


def make_train_step(model, optimizer, epsilon, jit=False, strategy=None):
    """A compiled step: (src, tgt, measure_norm) -> updates the model; running sums go to returned variables.

    totals (2, 4): sums of loss, accuracy, target tokens and steps, one row
    since the last report and one since the epoch began. They stay on the
    device, so the Python loop reads them only when it reports, not after
    every step; so does the number of the first step whose loss was not finite
    (0 while there is none). With measure_norm (a Python bool: the step is
    traced once with it and once without) the global norm of this step's
    gradient is stored in grad_norm. jit compiles the forward and backward
    pass with XLA. With a tf.distribute strategy, (src, tgt) are per-replica
    parts of one global batch, and each replica's loss is divided by the
    global batch's target word count: the summed gradients are then those of
    the one-device loss on the whole batch.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        totals = tf.Variable(tf.zeros((2, 4), tf.float64), trainable=False)  # float64: exact token counts
        first_bad_step = tf.Variable(0, dtype=tf.int64, trainable=False)  # first step with a NaN/Inf loss
        grad_norm = tf.Variable(0.0, trainable=False)  # of the last step run with measure_norm

    @tf.function(jit_compile=jit)
    def gradients(src, tgt, count):
        with tf.GradientTape() as tape:
            logits = model((src, shift_right(tgt)), training=True)  # (N, T2, V)
            loss, acc = loss_and_accuracy(logits, tgt, epsilon, count)
            scaled = optimizer.scale_loss(loss)  # loss x the loss scale (fp16), else the loss
        return loss, acc, tape.gradient(scaled, model.trainable_variables)

    def global_norm(grads):
        """The norm of the whole batch's gradient, not of this replica's share, without the loss scale."""
        grads = [g for g in grads if g is not None]
        if strategy.num_replicas_in_sync > 1:  # Keras sums the replicas' gradients only inside apply_gradients
            grads = tf.distribute.get_replica_context().all_reduce("sum", grads)
        return tf.linalg.global_norm(grads) / optimizer.scale_loss(tf.constant(1.0))

    def replica_step(src, tgt, measure_norm):
        context = tf.distribute.get_replica_context()
        tokens = tf.reduce_sum(tf.cast(tgt != PAD, tf.float32))
        loss, acc, grads = gradients(src, tgt, context.all_reduce("sum", tokens))
        norm = global_norm(grads) if measure_norm else 0.0
        # Keras sums the replicas' gradients; a LossScaleOptimizer divides the scale out
        # again and skips steps whose gradients overflowed.
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, acc, tokens, norm

    @tf.function(reduce_retracing=True)
    def train_step(src, tgt, measure_norm=False):
        """src, tgt ids (N, T1), (N, T2), or their per-replica parts: one optimizer step."""
        loss, acc, tokens, norm = strategy.run(lambda a, b: replica_step(a, b, measure_norm), (src, tgt))
        loss, acc, tokens = (strategy.reduce("sum", value, axis=None) for value in (loss, acc, tokens))
        totals.assign_add(tf.tile(tf.cast(tf.stack([loss, acc, tokens, 1.0]), tf.float64)[None], (2, 1)))
        if measure_norm:
            grad_norm.assign(strategy.reduce("mean", norm, axis=None))  # the same on every replica
        bad = (first_bad_step == 0) & ~tf.math.is_finite(loss)
        first_bad_step.assign(tf.where(bad, optimizer.iterations, first_bad_step))

    return train_step, totals, first_bad_step, grad_norm


def make_strategy(name):
    """The tf.distribute strategy of --strategy: default (one device), mirrored or multiworker.

    mirrored uses every local GPU, or, without GPUs, every logical CPU device
    (one, unless the process configured more). multiworker reads the cluster
    from the TF_CONFIG environment variable.
    """
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def worker_index(strategy):
    """This process's index among the workers; 0 is the chief, which alone writes files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver.task_id if resolver and resolver.task_type == "worker" and resolver.task_id else 0


def check_finite(first_bad_step, latest_checkpoint, hp):
    """Stops training (UserError) once a loss was NaN or Inf; nothing is saved after it."""
    bad = int(first_bad_step.numpy())
    if bad:
        kept = f"{latest_checkpoint} is the last good checkpoint, untouched" if latest_checkpoint else \
            "no checkpoint was written"
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


INTERVAL, EPOCH = 0, 1  # the rows of the running sums


def take_means(totals, row, clock, started):
    """Mean loss, accuracy and target tokens per second of one row of running sums, which is then reset.

    started: the clock's reading when the row was last reset.
    """
    sums = totals[row].numpy()
    totals.assign(tf.tensor_scatter_nd_update(totals, [[row]], tf.zeros((1, 4), tf.float64)))
    steps, seconds = max(sums[STEPS], 1), max(clock.now() - started, 1e-9)
    return sums[LOSS] / steps, sums[ACC] / steps, sums[TOKENS] / seconds


def report(totals, grad_norm, writer, optimizer, step, clock, started):
    """Writes the means since the last report to TensorBoard, and grad_norm if given (the gradient norm
    measured at this step); returns the means."""
    mean_loss, acc, tokens_per_s = take_means(totals, INTERVAL, clock, started)
    with writer.as_default(step=step):
        tf.summary.scalar("mean_loss", mean_loss)
        tf.summary.scalar("acc", acc)
        tf.summary.scalar("lr", float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        if grad_norm is not None:
            tf.summary.scalar("grad_norm", float(grad_norm.numpy()))
        tf.summary.scalar("tokens_per_s", tokens_per_s)
    return mean_loss, acc


def main(argv):
    # settings
    explicit, _ = parse_args(argv, description=__doc__.splitlines()[0])
    hp = hyperparams.for_training(explicit)
    check_writable(hp.logdir, "logdir")
    strategy = make_strategy(hp.strategy)  # first: a multiworker process joins its cluster here
    worker = worker_index(strategy)
    # One training process per logdir (the chief; the other workers write nothing there).
    with checkpoints.exclusive(hp.logdir) if worker == 0 else contextlib.nullcontext():
        fit(hp, strategy, worker, argv)


def fit(hp, strategy, worker, argv):
    """Trains in hp.logdir, resuming from its latest checkpoint; argv is recorded in hparams.json."""
    keras.utils.set_random_seed(hp.seed)

    # data
    src_vocab, tgt_vocab = data_load.load_vocabs(hp)
    x, y = data_load.load_train_data(hp, src_vocab, tgt_vocab)
    data_load.check_vocab_source(hp)  # the vocab was built from this training text ...
    vocab_sha256 = data_load.vocab_digest(hp)
    hyperparams.check_same_vocab(hp, vocab_sha256)  # ... and a resumed model was trained with it
    steps_per_epoch = data_load.count_batches(x, y, batch_size=hp.batch_size, batch_tokens=hp.batch_tokens)
    if steps_per_epoch == 0:
        raise UserError(f"only {len(x)} training pairs fit --maxlen {hp.maxlen}, fewer than one "
                        f"batch of --batch_size {hp.batch_size}; lower the batch size or raise maxlen")

    # model, optimizer, restore: variables made under the strategy live on every replica
    with strategy.scope():
        model = build_model(hp, src_vocab.size, tgt_vocab.size)
        optimizer = make_optimizer(hp)
        optimizer.build(model.trainable_variables)
        last_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # last finished epoch
        position = tf.Variable(0, dtype=tf.int64, trainable=False)  # batches done in the epoch after it
    # Dropout's random state is not among the model's weights; saved too, so a resumed run
    # draws the same dropout masks as an uninterrupted one.
    weights = {id(w) for w in model.weights}
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=last_epoch, position=position,
                                     rng=[v for v in model.variables if id(v) not in weights])
    latest = resume(checkpoint, hp.logdir)
    if worker == 0:  # the chief writes the files; other workers only compute
        hyperparams.save(hp, command=["train.py", *argv], vocab_sha256=vocab_sha256)
    print(f"{len(x)} training pairs, {steps_per_epoch} steps per epoch, {model.count_params():,} parameters, "
          f"vocab {src_vocab.size} -> {tgt_vocab.size}, {strategy.num_replicas_in_sync} replica(s)")

    # loop
    writer = tf.summary.create_file_writer(hp.logdir) if worker == 0 else tf.summary.create_noop_writer()
    train_step, totals, first_bad_step, grad_norm = make_train_step(model, optimizer, hp.label_smoothing,
                                                                    jit=hp.jit, strategy=strategy)
    dev = DevEvaluation(hp, model, src_vocab, tgt_vocab, writer, worker) if hp.dev_eval else None
    clock = TrainingClock()  # for tokens/s: training only, without dev evaluation and checkpoints

    def save(epoch, done):
        """Checks the loss stayed finite, then checkpoints `done` batches into `epoch`."""
        check_finite(first_bad_step, checkpoints.latest(hp.logdir), hp)
        last_epoch.assign(epoch - 1 if done < steps_per_epoch else epoch)
        position.assign(done % steps_per_epoch)
        with clock.paused():
            return save_checkpoint(checkpoint, hp.logdir, checkpoint_name(epoch, step), hp.keep_checkpoints, worker)

    def evaluate(epoch):
        with clock.paused():
            return dev(epoch, step)

    step = int(optimizer.iterations.numpy())
    first_epoch, skip = int(last_epoch.numpy()) + 1, int(position.numpy())
    if first_epoch > hp.num_epochs:
        print(f"{latest} has finished all {hp.num_epochs} epochs; raise --num_epochs to train on")
    with StopOnSignal() as stop:
        for epoch in range(first_epoch, hp.num_epochs + 1):
            start = time.time()
            reported = epoch_started = clock.now()  # the clock's readings when the two rows of sums began
            batches = strategy.experimental_distribute_dataset(data_load.train_batches(
                x, y, batch_size=hp.batch_size, seed=hp.seed + epoch, batch_tokens=hp.batch_tokens).skip(skip))
            with tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch}/{hp.num_epochs}", unit="step",
                      disable=worker > 0) as bar:
                for done, (src, tgt) in enumerate(batches, skip + 1):
                    # the gradient norm is measured on every summary_every-th step; not at an epoch's end,
                    # where the last batches of length buckets are small and their gradients noisier
                    train_step(src, tgt, (step + 1) % hp.summary_every == 0)
                    step += 1
                    bar.update()
                    if step % hp.summary_every == 0:
                        mean_loss, acc = report(totals, grad_norm, writer, optimizer, step, clock, reported)
                        reported = clock.now()
                        check_finite(first_bad_step, checkpoints.latest(hp.logdir), hp)
                        bar.set_postfix(mean_loss=f"{mean_loss:.3f}", acc=f"{acc:.3f}")
                    if stop.signal or (hp.save_every and step % hp.save_every == 0 and done < steps_per_epoch):
                        path = save(epoch, done)
                    if dev and hp.eval_every and step % hp.eval_every == 0 and done < steps_per_epoch:
                        bar.set_postfix(dev_bleu=f"{evaluate(epoch):.2f}")
                    if stop.signal:
                        bar.close()
                        writer.flush()
                        print(f"{stop.signal} at step {step}: saved {path}; run the same command to resume")
                        return
            skip = 0
            if totals[INTERVAL, STEPS] > 0:
                report(totals, None, writer, optimizer, step, clock, reported)
            mean_loss, acc, tokens_per_s = take_means(totals, EPOCH, clock, epoch_started)
            writer.flush()
            path = save(epoch, steps_per_epoch)
            scores = f"dev BLEU {evaluate(epoch):.2f} (best {dev.best:.2f}), " if dev else ""
            writer.flush()
            print(f"epoch {epoch}: step {step}, mean_loss {mean_loss:.3f}, acc {acc:.3f}, {scores}"
                  f"{tokens_per_s:,.0f} tokens/s, {time.time() - start:.0f} s, saved {path}")


if __name__ == "__main__":
    run(main)
