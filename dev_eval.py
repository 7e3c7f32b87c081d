"""Scores a model on the dev split while it trains, and keeps the best one (train.py --dev_eval)."""
import dataclasses

import sacrebleu
import tensorflow as tf

import data_load
import readers
import shapes
import plotting
from checkpoints import best_record, checkpoint_name, note_stale, save_best
from engine import encode
from inference import TensorFlowEngine
from messages import note
from modules import loss_and_accuracy
from vocab import PAD



class DevEvaluation:
    """Scores the model on the dev split and keeps the best model (--dev_eval).

    Logs dev_loss and dev_acc (teacher-forced, as mean_loss and acc, on the dev
    pairs that fit maxlen), dev_bleu (greedy translations of every dev
    sentence), dev_samples and dev_attention (the first dev sentence's
    cross-attention in the last layer).
    """

    SAMPLES = 3  # dev sentences shown in TensorBoard, the same ones each time

    def __init__(self, hp, model, src_vocab, tgt_vocab, writer, worker):
        self.hp, self.model, self.writer, self.worker = hp, model, writer, worker
        self.sources, self.references = readers.evaluation_pairs(hp, src_vocab, tgt_vocab, keep_all=True, split="dev")
        encode(src_vocab, self.sources, hp)  # a sentence too long to translate is refused now, not later
        x, y, _, _ = data_load.create_data(self.sources, self.references, src_vocab, tgt_vocab, hp.maxlen)
        self.pairs = (data_load.untuned(tf.data.Dataset.from_tensor_slices((x, y)).batch(hp.batch_size))
                      if len(x) else None)
        if self.pairs is None:
            note(f"no dev pair fits --maxlen {hp.maxlen}: dev_loss and dev_acc are not logged")
        greedy = dataclasses.replace(hp, beam_size=1, sampling_topk=0)  # fast enough to repeat
        self.translate = TensorFlowEngine(model, src_vocab, tgt_vocab, greedy)
        record = best_record(hp.logdir)
        self.best = record["dev_bleu"] if record else -1.0
        self.stale = record.get("stale", 0) if record else 0  # evaluations since the best, for --patience

        @tf.function(input_signature=[shapes.IDS] * 2, autograph=False)  # one graph for all lengths
        def sums(src, tgt):
            logits = model.teacher_forced(src, tgt)
            loss, acc = loss_and_accuracy(logits, tgt, hp.label_smoothing, count=1.0)  # sums over the batch
            return tf.stack([loss, acc, tf.reduce_sum(tf.cast(tgt != PAD, tf.float32))])

        self.sums = sums

    def __call__(self, epoch, step):
        """Returns the dev BLEU of the model now, after logging the scores and keeping the model if it is the best."""
        hypotheses = [best[0][0] for best in self.translate(self.sources, progress="dev")]
        bleu = sacrebleu.corpus_bleu(hypotheses, [self.references]).score
        samples = "\n\n".join(f"**source:** {s}  \n**reference:** {r}  \n**translation:** {h}"
                               for s, r, h in list(zip(self.sources, self.references, hypotheses))[:self.SAMPLES])
        with self.writer.as_default(step=step):
            if self.pairs is not None:
                loss_sum, acc_sum, tokens = sum(self.sums(src, tgt) for src, tgt in self.pairs).numpy()
                tf.summary.scalar("dev_loss", loss_sum / tokens)
                tf.summary.scalar("dev_acc", acc_sum / tokens)
            tf.summary.scalar("dev_bleu", bleu)
            tf.summary.text("dev_samples", samples)
            tf.summary.image("dev_attention", tf.image.decode_png(self.attention_png())[None])
        if bleu > self.best:
            self.best, self.stale = bleu, 0
            save_best(self.model, self.hp.logdir, checkpoint_name(epoch, step), bleu, step, self.worker)
        else:
            self.stale += 1
            if not self.worker:  # the chief alone writes files
                note_stale(self.hp.logdir, self.stale)
        return bleu

    def attention_png(self):
        """The last layer's cross-attention of every head for the first dev sentence and its translation."""
        seen = self.translate.attention(self.translate.source_ids(self.sources[0]))
        cross = {"cross-attention": seen["maps"]["cross-attention"]}
        return plotting.png_bytes(plotting.draw(seen["source"], seen["target"], cross, layer=self.hp.num_blocks - 1))
