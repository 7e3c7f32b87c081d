"""Trains the Transformer: vocab + corpus -> batches -> checkpoints and TensorBoard events in logdir.

Run it again on the same logdir to resume from the latest checkpoint: the
epoch and the global step continue where they stopped. With --dev_eval, the
dev split is translated after each epoch: its BLEU and a few samples go to
TensorBoard and the best model is kept in logdir/best.
"""
import os
import signal
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console

import keras
import sacrebleu
import tensorflow as tf
from tqdm import tqdm

import data_load
import hyperparams
from checkpoints import best_record, checkpoint_name, resume, save_best, save_checkpoint
from data_load import PAD
from decoding import make_decoder, translate
from hyperparams import UserError, parse_args, run
from model import build_model, shift_right
from modules import label_smoothing


def loss_and_accuracy(logits, tgt, epsilon, count=None):
    """Label-smoothed cross-entropy and accuracy over the non-pad target positions.

    logits (N, T2, V), tgt ids (N, T2) -> two float32 scalars: sums over this
    batch's real positions divided by `count` (default: their number; with
    several replicas, the number in the global batch). Computed in float32
    whatever the model's compute dtype.
    """
    logits = tf.cast(logits, tf.float32)
    real = tf.cast(tgt != PAD, tf.float32)  # (N, T2)
    targets = label_smoothing(tgt, tf.shape(logits)[-1], epsilon)  # (N, T2, V)
    xent = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)  # (N, T2)
    count = tf.maximum(tf.reduce_sum(real) if count is None else count, 1.0)
    hits = tf.cast(tf.argmax(logits, axis=-1, output_type=tgt.dtype) == tgt, tf.float32)
    return tf.reduce_sum(xent * real) / count, tf.reduce_sum(hits * real) / count


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


def make_train_step(model, optimizer, epsilon, jit=False, strategy=None):
    """A compiled step: (src, tgt) -> updates the model; running sums go to the returned variable.

    The sums (loss, accuracy, steps; one row since the last report, one since
    the epoch began) stay on the device, so the Python loop reads them only
    when it reports, not after every step; so does the number of the first
    step whose loss was not finite (0 while there is none). jit compiles the forward and
    backward pass with XLA. With a tf.distribute strategy, (src, tgt) are
    per-replica parts of one global batch, and each replica's loss is divided
    by the global batch's target word count: the summed gradients are then
    those of the one-device loss on the whole batch.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        totals = tf.Variable(tf.zeros((2, 3)), trainable=False)
        first_bad_step = tf.Variable(0, dtype=tf.int64, trainable=False)  # first step with a NaN/Inf loss

    @tf.function(jit_compile=jit)
    def gradients(src, tgt, count):
        with tf.GradientTape() as tape:
            logits = model((src, shift_right(tgt)), training=True)  # (N, T2, V)
            loss, acc = loss_and_accuracy(logits, tgt, epsilon, count)
            scaled = optimizer.scale_loss(loss)  # loss x the loss scale (fp16), else the loss
        return loss, acc, tape.gradient(scaled, model.trainable_variables)

    def replica_step(src, tgt):
        context = tf.distribute.get_replica_context()
        count = context.all_reduce("sum", tf.reduce_sum(tf.cast(tgt != PAD, tf.float32)))
        loss, acc, grads = gradients(src, tgt, count)
        # Keras sums the replicas' gradients; a LossScaleOptimizer divides the scale out
        # again and skips steps whose gradients overflowed.
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, acc

    @tf.function(reduce_retracing=True)
    def train_step(src, tgt):
        """src, tgt ids (N, T1), (N, T2), or their per-replica parts: one optimizer step."""
        loss, acc = (strategy.reduce("sum", value, axis=None) for value in strategy.run(replica_step, (src, tgt)))
        totals.assign_add(tf.tile(tf.stack([loss, acc, 1.0])[None], (2, 1)))
        bad = (first_bad_step == 0) & ~tf.math.is_finite(loss)
        first_bad_step.assign(tf.where(bad, optimizer.iterations, first_bad_step))

    return train_step, totals, first_bad_step


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


class DevEvaluation:
    """Translates the dev split, logs its BLEU and samples, and keeps the best model (--dev_eval)."""

    SAMPLES = 3  # dev sentences shown in TensorBoard, the same ones each time

    def __init__(self, hp, model, src_vocab, tgt_vocab, writer, worker):
        self.hp, self.model, self.vocab, self.writer, self.worker = hp, model, tgt_vocab, writer, worker
        self.x, self.sources, self.references = data_load.load_test_data(hp, src_vocab, tgt_vocab, keep_all=True,
                                                                         split="dev")
        self.decode = make_decoder(model, 1, hp.length_penalty)  # greedy: fast enough to repeat
        record = best_record(hp.logdir)
        self.best = record["dev_bleu"] if record else -1.0

    def __call__(self, epoch, step):
        """Returns the dev BLEU of the model now, after logging it and keeping the model if it is the best."""
        hypotheses = translate(self.decode, self.x, self.vocab, self.hp, desc="dev")
        bleu = sacrebleu.corpus_bleu(hypotheses, [self.references]).score
        samples = "\n\n".join(f"**source:** {s}  \n**reference:** {r}  \n**translation:** {h}"
                               for s, r, h in list(zip(self.sources, self.references, hypotheses))[:self.SAMPLES])
        with self.writer.as_default(step=step):
            tf.summary.scalar("dev_bleu", bleu)
            tf.summary.text("dev_samples", samples)
        if bleu > self.best:
            self.best = bleu
            save_best(self.model, self.hp.logdir, checkpoint_name(epoch, step), bleu, step, self.worker)
        return bleu


INTERVAL, EPOCH = 0, 1  # the rows of the running sums


def take_means(totals, row):
    """Mean loss and accuracy of one row of running sums, which is then reset."""
    loss_sum, acc_sum, steps = totals[row].numpy()
    totals.assign(tf.tensor_scatter_nd_update(totals, [[row]], tf.zeros((1, 3))))
    return loss_sum / max(steps, 1), acc_sum / max(steps, 1)


def report(totals, writer, optimizer, step):
    """Writes the means since the last report to TensorBoard and returns them."""
    mean_loss, acc = take_means(totals, INTERVAL)
    with writer.as_default(step=step):
        tf.summary.scalar("mean_loss", mean_loss)
        tf.summary.scalar("acc", acc)
        tf.summary.scalar("lr", float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    return mean_loss, acc


def main(argv):
    # settings
    explicit, _ = parse_args(argv, description=__doc__.splitlines()[0])
    hp = hyperparams.for_training(explicit)
    hyperparams.check_writable(hp.logdir, "logdir")
    strategy = make_strategy(hp.strategy)  # first: a multiworker process joins its cluster here
    worker = worker_index(strategy)
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
    train_step, totals, first_bad_step = make_train_step(model, optimizer, hp.label_smoothing, jit=hp.jit,
                                                         strategy=strategy)
    dev = DevEvaluation(hp, model, src_vocab, tgt_vocab, writer, worker) if hp.dev_eval else None

    def save(epoch, done):
        """Checks the loss stayed finite, then checkpoints `done` batches into `epoch`."""
        check_finite(first_bad_step, tf.train.latest_checkpoint(hp.logdir), hp)
        last_epoch.assign(epoch - 1 if done < steps_per_epoch else epoch)
        position.assign(done % steps_per_epoch)
        return save_checkpoint(checkpoint, hp.logdir, checkpoint_name(epoch, step), hp.keep_checkpoints, worker)

    step = int(optimizer.iterations.numpy())
    first_epoch, skip = int(last_epoch.numpy()) + 1, int(position.numpy())
    if first_epoch > hp.num_epochs:
        print(f"{latest} has finished all {hp.num_epochs} epochs; raise --num_epochs to train on")
    with StopOnSignal() as stop:
        for epoch in range(first_epoch, hp.num_epochs + 1):
            start = time.time()
            batches = strategy.experimental_distribute_dataset(data_load.train_batches(
                x, y, batch_size=hp.batch_size, seed=hp.seed + epoch, batch_tokens=hp.batch_tokens).skip(skip))
            with tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch}/{hp.num_epochs}", unit="step",
                      disable=worker > 0) as bar:
                for done, (src, tgt) in enumerate(batches, skip + 1):
                    train_step(src, tgt)
                    step += 1
                    bar.update()
                    if step % hp.summary_every == 0:
                        mean_loss, acc = report(totals, writer, optimizer, step)
                        check_finite(first_bad_step, tf.train.latest_checkpoint(hp.logdir), hp)
                        bar.set_postfix(mean_loss=f"{mean_loss:.3f}", acc=f"{acc:.3f}")
                    if stop.signal or (hp.save_every and step % hp.save_every == 0 and done < steps_per_epoch):
                        path = save(epoch, done)
                    if dev and hp.eval_every and step % hp.eval_every == 0 and done < steps_per_epoch:
                        bar.set_postfix(dev_bleu=f"{dev(epoch, step):.2f}")
                    if stop.signal:
                        bar.close()
                        writer.flush()
                        print(f"{stop.signal} at step {step}: saved {path}; run the same command to resume")
                        return
            skip = 0
            if totals[INTERVAL, 2] > 0:
                report(totals, writer, optimizer, step)
            writer.flush()
            path = save(epoch, steps_per_epoch)
            mean_loss, acc = take_means(totals, EPOCH)
            scores = f"dev BLEU {dev(epoch, step):.2f} (best {dev.best:.2f}), " if dev else ""
            writer.flush()
            print(f"epoch {epoch}: step {step}, mean_loss {mean_loss:.3f}, acc {acc:.3f}, {scores}"
                  f"{time.time() - start:.0f} s, saved {path}")


if __name__ == "__main__":
    run(main)
