"""Adam with the paper's settings, its learning-rate schedules, and the moving average of the weights.

train.py makes the optimizer with make_optimizer(); weights.py makes the same
one to read a moving average back from a checkpoint; dev evaluation scores the
average inside averaged_weights().
"""
import contextlib
import math

import keras
import tensorflow as tf


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


# The rate settings each --lr_schedule leaves unread in make_optimizer (num_epochs and max_steps: the run's end,
# which only the decaying schedules fall to)
UNREAD_BY_SCHEDULE = {"constant": ("lr_scale", "warmup_steps", "decay_fraction", "max_steps", "num_epochs"),
                      "paper": ("lr", "decay_fraction", "max_steps", "num_epochs"),
                      "paper_decay": ("lr",), "cosine": ("lr", "decay_fraction")}


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
