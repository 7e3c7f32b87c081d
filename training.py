"""One optimizer step, compiled, with its running sums; and what train.py's loop keeps around it.

train.py runs TrainStep on each group of --accumulate batches (shards.chunks());
bench.py times it. With a tf.distribute strategy (make_strategy), the same
step runs on every replica. Position, TrainingClock and StopOnSignal are the
loop's: where the run stands, how long it trained, and a stop asked for.
"""
import contextlib
import signal
import threading
import time

import tensorflow as tf

from checkpoints import checkpoint_name
from modules import loss_and_accuracy, rdrop_kl
from vocab import PAD


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


class Position:
    """Where the run stands, its one home: the epoch in progress (from 1), the batches done in it, and the
    optimizer steps done. Python numbers while training (reading the device's would wait for every step);
    written into the checkpoint's `epoch` (the epochs finished) and `position` (the batches done since) by
    record(), read back from them when a run resumes."""

    def __init__(self, checkpoint, batches_per_epoch):
        self.checkpoint, self.batches_per_epoch = checkpoint, batches_per_epoch
        self.epoch, self.done = int(checkpoint.epoch.numpy()) + 1, int(checkpoint.position.numpy())
        self.step = int(checkpoint.optimizer.iterations.numpy())

    def advance(self, batches):
        """After an optimizer step over `batches` batches."""
        self.done += batches
        self.step += 1

    def next_epoch(self):
        self.epoch, self.done = self.epoch + 1, 0

    @property
    def mid_epoch(self):
        return self.done < self.batches_per_epoch

    def record(self):
        """Writes the position into the checkpoint's variables, before it is saved; returns the checkpoint's name."""
        self.checkpoint.epoch.assign(self.epoch - 1)
        self.checkpoint.position.assign(self.done)
        return checkpoint_name(self.epoch if self.done else self.epoch - 1, self.step)


def steps_per_epoch(batches, accumulate):
    """Optimizer steps in an epoch of `batches` batches: one per `accumulate`, and one for the rest."""
    return -(-batches // accumulate)


class RunningSums:
    """Loss, accuracy, target tokens and steps summed since the last reset().

    float64 variables on the device: token counts stay exact on large corpora,
    and the loop reads them only when it reports, not after every step.
    """

    def __init__(self):
        self.loss, self.acc, self.tokens, self.steps = (tf.Variable(0.0, dtype=tf.float64, trainable=False)
                                                        for _ in range(4))

    def add(self, loss, acc, tokens):
        """Adds one step (inside the compiled step)."""
        for total, value in zip((self.loss, self.acc, self.tokens, self.steps), (loss, acc, tokens, 1.0)):
            total.assign_add(tf.cast(value, tf.float64))

    def reset(self):
        for total in (self.loss, self.acc, self.tokens, self.steps):
            total.assign(0.0)

    def means(self):
        """Mean loss and accuracy per step since the last reset (0 before any step)."""
        steps = max(float(self.steps.numpy()), 1.0)
        return float(self.loss.numpy()) / steps, float(self.acc.numpy()) / steps


class TrainStep:
    """One optimizer step, compiled: step(batches, measure_norm) updates the model from a group of batches.

    What it measures stays on the device: `interval` and `epoch` sums (since
    the last report, and since the epoch began), the number of the first step
    whose loss was not finite (`first_bad_step`, 0 while there is none) and,
    on steps run with measure_norm (a Python bool: the step is traced once
    with it and once without), the global norm of the gradient (`grad_norm`).
    jit compiles the forward and backward pass with XLA. With a tf.distribute
    strategy, (src, tgt) are per-replica parts of one global batch, and each
    replica's loss is divided by the global batch's target word count: the
    summed gradients are then those of the one-device loss on the whole batch.

    accumulate > 1 (gradient accumulation): a group holds up to `accumulate`
    batches; each but the last only adds its gradients, weighted by its target
    words, to a running sum; the last adds its own and updates the weights
    with the sum divided by the target words of all of them: the update one
    batch holding them all would give. The sums are empty again after it.
    rdrop_alpha > 0 (R-Drop, Liang et al., 2021): the batch runs twice, with
    different dropout, and the loss is the mean of the two cross-entropies plus
    alpha x the symmetric KL divergence between the two passes' predictions.
    """

    def __init__(self, model, optimizer, epsilon, jit=False, strategy=None, accumulate=1, rdrop_alpha=0.0):
        self.model, self.optimizer, self.epsilon = model, optimizer, epsilon
        self.accumulate, self.rdrop_alpha = accumulate, rdrop_alpha
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.interval, self.epoch = RunningSums(), RunningSums()
            self.first_bad_step = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.grad_norm = tf.Variable(0.0, trainable=False)  # of the last step run with measure_norm
            if accumulate > 1:  # each replica sums its own share; the word count is the same on all
                local = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ)
                self.sums = [tf.Variable(tf.zeros_like(v), aggregation=tf.VariableAggregation.SUM, **local)
                             for v in model.trainable_variables]
                self.words = tf.Variable(0.0, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, **local)
        self._gradients = tf.function(self._gradients, jit_compile=jit, autograph=False)
        self._step = tf.function(self._step, reduce_retracing=True, autograph=False)
        self.batch_spec, self._traced = None, set()  # see expect()

    def expect(self, batch_spec):
        """Has the step traced once for all batches of batch_spec, the (src, tgt) element_spec of the dataset
        that feeds it (None where lengths vary), at the first call with each measure_norm and apply. Left
        alone, tf.function traces it for the first batch's shapes and again for all shapes: twice the graphs
        (docs/notes/2026-12-04-lab-notebook.md measured what they held)."""
        self.batch_spec, self._traced = batch_spec, set()  # the same spec again: found in tf.function's cache

    def __call__(self, batches, measure_norm=False):
        """One optimizer step on `batches`, a list of (src, tgt) ids (N, T1), (N, T2) (or their per-replica
        parts), at most `accumulate` of them. measure_norm (a Python bool): measure the gradient's norm."""
        for i, (src, tgt) in enumerate(batches):
            apply = i == len(batches) - 1
            flags = (measure_norm and apply, apply)
            if self.batch_spec is not None and flags not in self._traced:  # a set of bools: no spec compared
                self._step.get_concrete_function(*self.batch_spec, *flags)
                self._traced.add(flags)
            self._step(src, tgt, *flags)

    def _gradients(self, src, tgt, count):
        """Loss, accuracy (sums over the batch / count) and the gradients of the (scaled) loss."""
        with tf.GradientTape() as tape:
            if self.rdrop_alpha:  # both passes in one batch: rows n and N + n are the same pair
                src, tgt = tf.concat([src, src], 0), tf.concat([tgt, tgt], 0)
            logits = self.model.teacher_forced(src, tgt, training=True)  # (N, T2, V), or (2N, T2, V)
            if self.rdrop_alpha:
                loss, acc = loss_and_accuracy(logits, tgt, self.epsilon, 2.0 * count)  # the two passes' mean
                first, second = tf.split(logits, 2)
                kl = rdrop_kl(first, second, tgt[:tf.shape(first)[0]]) / count
                scaled = self.optimizer.scale_loss(loss + self.rdrop_alpha * kl)
            else:
                loss, acc = loss_and_accuracy(logits, tgt, self.epsilon, count)
                scaled = self.optimizer.scale_loss(loss)  # loss x the loss scale (fp16), else the loss
        return loss, acc, tape.gradient(scaled, self.model.trainable_variables)

    def _global_norm(self, grads):
        """The norm of the whole batch's gradient, not of this replica's share, without the loss scale."""
        grads = [g for g in grads if g is not None]
        if self.strategy.num_replicas_in_sync > 1:  # Keras sums the replicas' gradients only inside apply_gradients
            grads = tf.distribute.get_replica_context().all_reduce("sum", grads)
        return tf.linalg.global_norm(grads) / self.optimizer.scale_loss(tf.constant(1.0))

    def _replica_step(self, src, tgt, measure_norm, apply):
        context = tf.distribute.get_replica_context()
        tokens = tf.reduce_sum(tf.cast(tgt != PAD, tf.float32))
        count = context.all_reduce("sum", tokens)  # target words of the global batch
        loss, acc, grads = self._gradients(src, tgt, count)
        if self.accumulate > 1:
            for total, grad in zip(self.sums, grads):
                total.assign_add(grad * count)  # this replica's share of the batch's summed gradient
            self.words.assign_add(count)
            if not apply:
                return loss, acc, tokens, 0.0
            grads = [total / self.words for total in self.sums]
        norm = self._global_norm(grads) if measure_norm else 0.0
        # Keras sums the replicas' gradients; a LossScaleOptimizer divides the scale out
        # again and skips steps whose gradients overflowed.
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        if self.accumulate > 1:
            for total in self.sums:
                total.assign(tf.zeros_like(total))
            self.words.assign(0.0)
        return loss, acc, tokens, norm

    def _step(self, src, tgt, measure_norm, apply):
        loss, acc, tokens, norm = self.strategy.run(lambda a, b: self._replica_step(a, b, measure_norm, apply),
                                                    (src, tgt))
        loss, acc, tokens = (self.strategy.reduce("sum", value, axis=None) for value in (loss, acc, tokens))
        for sums in (self.interval, self.epoch):
            sums.add(loss, acc, tokens)
        if measure_norm:
            self.grad_norm.assign(self.strategy.reduce("mean", norm, axis=None))  # the same on every replica
        bad = (self.first_bad_step == 0) & ~tf.math.is_finite(loss)
        self.first_bad_step.assign(tf.where(bad, self.optimizer.iterations, self.first_bad_step))


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


def worker_count(strategy):
    """How many worker processes train together (1 without multiworker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return len(resolver.cluster_spec().as_dict().get("worker", [])) or 1 if resolver else 1


def worker_index(strategy):
    """This process's index among the workers; 0 is the chief, which alone writes files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver.task_id if resolver and resolver.task_type == "worker" and resolver.task_id else 0
