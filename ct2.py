"""The CTranslate2 engine: translating and scoring with a model exported by export.py --format ctranslate2.

An export directory holds CTranslate2's model.bin, config.json and vocabulary
files, the SentencePiece model of a subword vocab (a word vocab is the
vocabulary files themselves, with readers.refine's cleaning), and export.json.
Nothing here imports TensorFlow: translate.py, eval.py, score.py and serve.py
given --ct2 DIR run on CTranslate2 alone. ct2_export.py writes the export.

How the model maps onto CTranslate2's TransformerSpec (tests/test_ct2.py
checks the log-probabilities to 1e-4):
- Dense kernels (in, out) are its Linear weights transposed (out, in);
  self-attention's Q, K and V are one Linear (3C, C), cross-attention's K and
  V one (2C, C);
- our sinusoid (sin and cos interleaved) is not its built-in one (sines, then
  cosines), so the position table itself is exported, as long as the longest
  source or translation the settings allow; learned positions are their table;
- layer norm's epsilon (1e-8) is a config field;
- our decoders and score.py never give <PAD> or <S> any probability: in the
  export their output bias is -1e4 (exp(-1e4) is 0 in float32), so that its
  distribution is theirs;
- its decode limit is one per batch, ours one per sentence (its length plus
  --decode_extra): sentences are translated in groups that share a limit;
- its beam search is ours (decoding.beam_search_decoder), but its length
  penalty is score / length^alpha, ours GNMT's ((5 + length) / 6)^alpha:
  CTranslate2Engine has it search without a penalty and ranks the k hypotheses
  found by ours, as our beam search does (docs/benchmarks.md compares that with
  its own penalty on the dev split).
"""
import os

import numpy as np

import vocab
from engine import Engine, decode_limit
from files import file_digest, parse_json, read_record
from hyperparams import Hyperparams, for_evaluation
from messages import UserError

QUANTIZATIONS = ("float32", "int8", "int8_float32", "int16")  # export.py --quantization
MARKER = "export.json"  # in every directory export.py writes: what it holds, and that --overwrite may replace it
# export.json, as files.read_record checks it (both formats; "tokenizer" only in a CTranslate2 export)
EXPORT_RECORD = {"written_by": str, "format": str, "name": str, "checkpoints": [str], "settings": dict,
                 "vocab_sha256": (str, None), "quantization?": str, "positions?": int, "tokenizer?": {str: str},
                 "files?": {str: str}}


def tokenizer_names(directory):
    """The files of an export that turn text into tokens and back: the vocabularies and the subword model."""
    return sorted(name for name in os.listdir(directory)
                  if name.endswith("vocabulary.json") or name == vocab.SUBWORD_MODEL)


def export_record(directory, flag="--ct2"):
    """What export.json of a CTranslate2 export says, refused in one line unless the directory is one whole."""
    path = os.path.join(directory, MARKER)
    fix = f"pass a directory written by export.py --format ctranslate2 to {flag}"
    if not os.path.isdir(directory):
        raise UserError(f"{flag} {directory} is not a directory; {fix}")
    record = read_record(path, EXPORT_RECORD, fix=f"export the model again, or {fix}")
    if record is None:
        raise UserError(f"{directory} holds no {MARKER}, so it is not an export of this project; {fix}")
    if record["written_by"] != "export.py" or record["format"] != "ctranslate2" or "tokenizer" not in record:
        raise UserError(f"{path} does not describe a CTranslate2 export (format {record['format']!r}); {fix}")
    # every file of the export (exports of earlier versions list the tokenizer's files alone), model.bin too:
    # a damaged, truncated or foreign model is refused here, not by CTranslate2 with a traceback
    for name, digest in record.get("files", record["tokenizer"]).items():
        file = os.path.join(directory, name)
        if not os.path.isfile(file) or file_digest(file) != digest:
            raise UserError(f"{file} is missing or is not the file {path} lists (the export was changed or "
                            "damaged); export the model again")
    for name in ("model.bin", "config.json"):
        if not os.path.isfile(os.path.join(directory, name)):
            raise UserError(f"{os.path.join(directory, name)} is missing; export the model again")
    return record


def settings(directory, explicit, record=None):
    """The settings of the model exported to `directory` (its export.json: `record` if it was read already),
    with the flags `explicit` on top: they may change how it decodes, not what the model is."""
    record = record or export_record(directory)
    try:
        saved = Hyperparams(**record["settings"])
    except (TypeError, UserError) as e:
        raise UserError(f"{os.path.join(directory, MARKER)} is damaged ({e}); export the model again") from None
    return for_evaluation(explicit, saved=saved, where=f"the model exported to {directory} was")


def _tokens(path):
    with open(path, encoding="utf-8") as f:
        return parse_json(f.read())


def load_vocabs(directory, hp):
    """The export's source and target vocab objects (one SubwordVocab for a joint subword vocab); refused in one
    line if the export does not hold the files of the vocab type its export.json names."""
    names = ("source_vocabulary.json", "target_vocabulary.json")
    if not os.path.isfile(os.path.join(directory, names[0])):
        names = ("shared_vocabulary.json",) * 2
    needed = (vocab.SUBWORD_MODEL,) if hp.vocab_type == "subword" else names
    missing = [name for name in needed if not os.path.isfile(os.path.join(directory, name))]
    if missing:
        raise UserError(f"{os.path.join(directory, MARKER)} says the model has a {hp.vocab_type} vocab, but "
                        f"{directory} holds no {missing[0]} (export.json was changed); export the model again")
    if hp.vocab_type == "subword":
        subword = vocab.SubwordVocab.load(os.path.join(directory, vocab.SUBWORD_MODEL))
        return subword, subword
    return tuple(vocab.WordVocab(_tokens(os.path.join(directory, name))) for name in names)


def usable_cores():
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gnmt_penalty(length, alpha):
    """decoding.length_penalty() in Python: ((5 + length) / 6)^alpha."""
    return ((5.0 + length) / 6.0) ** alpha


class CTranslate2Engine(Engine):
    """The CTranslate2 engine: an export's model and tokenizer, lines -> (translation, score) lists, best first,
    and target log-probabilities (engine.Engine). Settings as for the TensorFlow engine; the weights are the
    export's."""

    kind = "ctranslate2"

    def __init__(self, directory, hp, nbest=1, threads=0, record=None):
        """record: the export's export.json, if export_record() read it already."""
        import ctranslate2

        record = record or export_record(directory)
        if hp.sinusoid and hp.decode_cap > record.get("positions", 0):
            raise UserError(f"--decode_maxlen {hp.decode_cap} needs more positions than the export in {directory} "
                            f"holds ({record.get('positions')}); export it again with this --decode_maxlen")
        self.hp, self.nbest, self.directory = hp, nbest, directory
        self.src_vocab, self.tgt_vocab = load_vocabs(directory, hp)
        self.name = f"{record['name']}_ct2_{record.get('quantization', 'float32')}"
        self.checkpoints, self.vocab_sha256 = record["checkpoints"], record["vocab_sha256"]
        self.check_limits()
        self.ids = {token: i for i, token in enumerate(self.tgt_vocab.tokens(range(self.tgt_vocab.size)))}
        # (its default of 4 threads on fewer cores slows it down: as many as this process may use)
        self.model = ctranslate2.Translator(directory, device="auto", intra_threads=threads or usable_cores())
        if hp.sampling_topk:
            ctranslate2.set_random_seed(hp.seed)

    def _options(self, limit):
        """translate_batch()'s options for a group of sentences whose translations may have `limit` tokens.
        A length penalty of 1e-9 divides scores by length^1e-9, which changes no float32; but unlike 0 it keeps
        the beam search going until k hypotheses have finished, as ours does."""
        hp, beam = self.hp, max(self.hp.beam_size, self.nbest)
        return dict(beam_size=beam, num_hypotheses=beam, length_penalty=1e-9, max_decoding_length=limit,
                    min_decoding_length=0, max_input_length=0, return_scores=True, return_end_token=True,
                    max_batch_size=hp.batch_size, sampling_topk=hp.sampling_topk or 1,
                    sampling_temperature=hp.sampling_temperature)

    def nbest_ids(self, rows):
        """One call for the whole batch at its longest limit. A sentence whose hypotheses all ended before its
        own limit was searched as with that limit (the search stopped before reaching it); the few others
        are translated again in calls of their own limit, as ours translates them."""
        limits = [decode_limit(len(row), self.hp) for row in rows]
        found = self._translate(rows, range(len(rows)), max(limits))
        groups = {}
        for i, hypotheses in enumerate(found):
            if any(len(ids) >= limits[i] for ids, _ in hypotheses):
                groups.setdefault(limits[i], []).append(i)
        for limit, members in groups.items():
            for i, hypotheses in zip(members, self._translate(rows, members, limit)):
                found[i] = hypotheses
        return found

    def _translate(self, rows, members, limit):
        results = self.model.translate_batch([self.src_vocab.tokens(rows[i][:-1]) for i in members],
                                             **self._options(limit))  # its own </S> (add_source_eos)
        return [self._ranked(result) for result in results]

    def _ranked(self, result):
        """A result's hypotheses as (ids, score), ranked as our beam search ranks them: log-probability divided
        by GNMT's length penalty of its tokens, </S> included; greedy and sampled ones score 0, as ours."""
        hypotheses = []
        for tokens, logp in zip(result.hypotheses, result.scores):
            ids = [self.ids.get(token, vocab.UNK) for token in tokens]
            score = logp / gnmt_penalty(len(ids), self.hp.length_penalty) if len(result.hypotheses) > 1 else 0.0
            hypotheses.append((ids, score))
        return sorted(hypotheses, key=lambda hypothesis: -hypothesis[1])[:self.nbest]

    def token_log_probs(self, src_rows, tgt_rows):
        results = self.model.score_batch([self.src_vocab.tokens(row[:-1]) for row in src_rows],
                                         [self.tgt_vocab.tokens(row[:-1]) for row in tgt_rows], max_input_length=0)
        return [np.array(result.log_probs, np.float64) for result in results]
