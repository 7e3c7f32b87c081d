"""What one optimizer step needs: Adam with the paper's schedule, the compiled step and its running sums.

train.py runs TrainStep in its loop; bench.py times it. With a tf.distribute
strategy (make_strategy), the same step runs on every replica.
"""
import keras
import tensorflow as tf

from model import shift_right
from modules import loss_and_accuracy
from vocab import PAD



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
    """A compiled optimizer step: step(src, tgt, measure_norm) updates the model.

    What it measures stays on the device: `interval` and `epoch` sums (since
    the last report, and since the epoch began), the number of the first step
    whose loss was not finite (`first_bad_step`, 0 while there is none) and,
    on steps run with measure_norm (a Python bool: the step is traced once
    with it and once without), the global norm of the gradient (`grad_norm`).
    jit compiles the forward and backward pass with XLA. With a tf.distribute
    strategy, (src, tgt) are per-replica parts of one global batch, and each
    replica's loss is divided by the global batch's target word count: the
    summed gradients are then those of the one-device loss on the whole batch.
    """

    def __init__(self, model, optimizer, epsilon, jit=False, strategy=None):
        self.model, self.optimizer, self.epsilon = model, optimizer, epsilon
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.interval, self.epoch = RunningSums(), RunningSums()
            self.first_bad_step = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.grad_norm = tf.Variable(0.0, trainable=False)  # of the last step run with measure_norm
        self._gradients = tf.function(self._gradients, jit_compile=jit)
        self._step = tf.function(self._step, reduce_retracing=True)

    def __call__(self, src, tgt, measure_norm=False):
        """src, tgt ids (N, T1), (N, T2), or their per-replica parts: one optimizer step."""
        self._step(src, tgt, measure_norm)

    def _gradients(self, src, tgt, count):
        """Loss, accuracy (sums over the batch / count) and the gradients of the (scaled) loss."""
        with tf.GradientTape() as tape:
            logits = self.model((src, shift_right(tgt)), training=True)  # (N, T2, V)
            loss, acc = loss_and_accuracy(logits, tgt, self.epsilon, count)
            scaled = self.optimizer.scale_loss(loss)  # loss x the loss scale (fp16), else the loss
        return loss, acc, tape.gradient(scaled, self.model.trainable_variables)

    def _global_norm(self, grads):
        """The norm of the whole batch's gradient, not of this replica's share, without the loss scale."""
        grads = [g for g in grads if g is not None]
        if self.strategy.num_replicas_in_sync > 1:  # Keras sums the replicas' gradients only inside apply_gradients
            grads = tf.distribute.get_replica_context().all_reduce("sum", grads)
        return tf.linalg.global_norm(grads) / self.optimizer.scale_loss(tf.constant(1.0))

    def _replica_step(self, src, tgt, measure_norm):
        context = tf.distribute.get_replica_context()
        tokens = tf.reduce_sum(tf.cast(tgt != PAD, tf.float32))
        loss, acc, grads = self._gradients(src, tgt, context.all_reduce("sum", tokens))
        norm = self._global_norm(grads) if measure_norm else 0.0
        # Keras sums the replicas' gradients; a LossScaleOptimizer divides the scale out
        # again and skips steps whose gradients overflowed.
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss, acc, tokens, norm

    def _step(self, src, tgt, measure_norm):
        loss, acc, tokens, norm = self.strategy.run(lambda a, b: self._replica_step(a, b, measure_norm), (src, tgt))
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
