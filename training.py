"""What one optimizer step needs: Adam with its schedule, the compiled step and its running sums.

train.py runs TrainStep in its loop; bench.py times it. With a tf.distribute
strategy (make_strategy), the same step runs on every replica.
"""
import contextlib
import math

import keras
import tensorflow as tf

from model import shift_right
from modules import loss_and_accuracy, rdrop_kl
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


class DecayingSchedule(PaperSchedule):
    """The paper's warm-up to the same peak, then down to 0 at step `total` (the run's last).

    paper_decay: the paper's rate, times a factor falling linearly from 1 to 0
    over the last `fraction` of the steps. cosine: from the peak along half a
    cosine, 0.5 * (1 + cos(pi * p)), p going from 0 after the warm-up to 1 at
    `total`. Both reach 0 where training ends, which smooths the last weights.
    """

    def __init__(self, units, warmup, scale=1.0, *, kind, total, fraction=0.2):
        super().__init__(units, warmup, scale)
        self.kind, self.total, self.fraction = kind, total, fraction

    def __call__(self, iterations):
        if not self.total:
            raise ValueError(f"the {self.kind} schedule needs the run's number of steps")
        step = tf.cast(iterations, tf.float32) + 1.0
        if self.kind == "cosine":
            peak = self.scale * (self.units * self.warmup) ** -0.5
            progress = tf.clip_by_value((step - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
            decayed = peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
            return tf.where(step < self.warmup, peak * step / self.warmup, decayed)
        factor = tf.clip_by_value((self.total - step) / (self.fraction * self.total), 0.0, 1.0)
        return super().__call__(iterations) * factor

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "total": self.total, "fraction": self.fraction}


class Adam(keras.optimizers.Adam):
    """Keras's Adam, each weight's update one fused kernel, with a moving average of the weights
    (use_ema) whose decay warms up.

    Keras starts the average at the weights after the first step and then uses
    a fixed decay d; with d = 0.999 the first step's weights would still weigh
    e^-1 after a thousand steps. Here the decay after t earlier steps is
    min(d, (1 + t) / (10 + t)), as TensorFlow's ExponentialMovingAverage with
    num_updates and OpenNMT-tf's moving_average_decay: the average covers
    about the last t / 9 steps until d takes over.
    """

    def update_step(self, gradient, variable, learning_rate):
        """Keras's Adam update in one fused TensorFlow kernel per weight (ResourceApplyAdam, the
        arithmetic of Keras's own update_step) instead of about ten element-wise ops, each a pass
        over the weight. A gather's gradient (rows of an embedding table) is made dense first, which
        sums a row's repeats as Adam's definition (and TensorFlow 1's Adam) does; Keras's update
        would instead add up their squares in the second moment. amsgrad keeps Keras's update."""
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))

    def _update_model_variables_moving_average(self, trainable_variables):  # Keras's hook, run after each update
        if not self.use_ema:
            return
        t = tf.cast(self.iterations, tf.float32)  # steps before this one
        decay = tf.where(t > 0, tf.minimum(self.ema_momentum, (1.0 + t) / (10.0 + t)), 0.0)
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                average.assign(decay * average + (1.0 - decay) * variable)


def make_optimizer(hp, total_steps=0):
    """Adam with the paper's settings and --lr_schedule; wrapped for loss scaling when training in float16.

    total_steps: the optimizer steps the run will take, where the schedule ends
    (--max_steps wins when set); only paper_decay and cosine use it. With
    --ema_decay the optimizer also keeps the moving average of the weights.
    """
    if hp.lr_schedule == "paper":
        lr = PaperSchedule(hp.hidden_units, hp.warmup_steps, hp.lr_scale)
    elif hp.lr_schedule in ("paper_decay", "cosine"):
        lr = DecayingSchedule(hp.hidden_units, hp.warmup_steps, hp.lr_scale, kind=hp.lr_schedule,
                              total=hp.max_steps or total_steps, fraction=hp.decay_fraction)
    else:
        lr = hp.lr
    ema = dict(use_ema=True, ema_momentum=hp.ema_decay) if hp.ema_decay else {}
    optimizer = Adam(lr, beta_1=hp.adam_beta1, beta_2=hp.adam_beta2, epsilon=hp.adam_epsilon, **ema)
    if hp.mixed_precision == "fp16":  # small float16 gradients would round to zero unscaled
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def steps_per_epoch(batches, accumulate):
    """Optimizer steps in an epoch of `batches` batches: one per `accumulate`, and one for the rest."""
    return -(-batches // accumulate)


def keeps_average(optimizer):
    """Whether the optimizer keeps a moving average of the weights (--ema_decay)."""
    return getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False)


@contextlib.contextmanager
def averaged_weights(model, optimizer):
    """Within `with`, the model holds the optimizer's moving average of its weights, if it keeps one;
    its own weights come back afterwards, bit for bit."""
    if not keeps_average(optimizer):
        yield
        return
    own = [v.numpy() for v in model.trainable_variables]
    optimizer.finalize_variable_values(model.trainable_variables)  # Keras: copies the averages in
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, own):
            variable.assign(value)


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
    """A compiled step: step(src, tgt, measure_norm, apply) computes a batch's gradients and updates the model.

    What it measures stays on the device: `interval` and `epoch` sums (since
    the last report, and since the epoch began), the number of the first step
    whose loss was not finite (`first_bad_step`, 0 while there is none) and,
    on steps run with measure_norm (a Python bool: the step is traced once
    with it and once without), the global norm of the gradient (`grad_norm`).
    jit compiles the forward and backward pass with XLA. With a tf.distribute
    strategy, (src, tgt) are per-replica parts of one global batch, and each
    replica's loss is divided by the global batch's target word count: the
    summed gradients are then those of the one-device loss on the whole batch.

    accumulate > 1 (gradient accumulation): a step with apply=False only adds
    the batch's gradients, weighted by its target words, to a running sum; the
    step with apply=True adds its own and updates the weights with the sum
    divided by the target words of all those batches: the update one batch
    holding them all would give. The sums are empty again after each update.
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
        self._gradients = tf.function(self._gradients, jit_compile=jit)
        self._step = tf.function(self._step, reduce_retracing=True)
        self.batch_spec, self._traced = None, set()  # see expect()

    def expect(self, batch_spec):
        """Has the step traced once for all batches of batch_spec, the (src, tgt) element_spec of the dataset
        that feeds it (None where lengths vary), at the first call with each measure_norm and apply. Left
        alone, tf.function traces it for the first batch's shapes and again for all shapes: twice the graphs,
        which held about 100 MB in the multi30k_cpu preset (docs/benchmarks.md)."""
        self.batch_spec, self._traced = batch_spec, set()  # the same spec again: found in tf.function's cache

    def __call__(self, src, tgt, measure_norm=False, apply=True):
        """src, tgt ids (N, T1), (N, T2), or their per-replica parts: one batch, and with apply (always,
        unless accumulating) an optimizer step. measure_norm and apply are Python bools."""
        flags = (measure_norm and apply, apply or self.accumulate == 1)
        if self.batch_spec is not None and flags not in self._traced:  # a set of bools: no spec compared per step
            self._step.get_concrete_function(*self.batch_spec, *flags)
            self._traced.add(flags)
        self._step(src, tgt, *flags)

    def _gradients(self, src, tgt, count):
        """Loss, accuracy (sums over the batch / count) and the gradients of the (scaled) loss."""
        with tf.GradientTape() as tape:
            if self.rdrop_alpha:  # both passes in one batch: rows n and N + n are the same pair
                src, tgt = tf.concat([src, src], 0), tf.concat([tgt, tgt], 0)
            logits = self.model((src, shift_right(tgt)), training=True)  # (N, T2, V), or (2N, T2, V)
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
