"""engine.py, the contract both engines share, with a fake engine: cleaning, empty lines, order, batches, lines too
long with their line numbers, scoring; no model, no TensorFlow."""
import pytest

import engine
from hyperparams import Hyperparams
from messages import UserError
from vocab import EOS, WordVocab

WORDS = WordVocab(["<PAD>", "<UNK>", "<S>", "</S>", "eins", "zwei", "drei"])


class Echo(engine.Engine):
    """Translates each sentence into itself, its score the negated row length; records its calls."""

    kind = "fake"

    def __init__(self, nbest=1, **settings):
        self.hp, self.nbest = Hyperparams(**{"batch_size": 3, **settings}), nbest
        self.src_vocab = self.tgt_vocab = WORDS
        self.calls = []

    def nbest_ids(self, rows):
        assert 0 < len(rows) <= self.hp.batch_size
        self.calls.append([list(row) for row in rows])
        return [[(row, -len(row) - k) for k in range(self.nbest)] for row in rows]

    def token_log_probs(self, src_rows, tgt_rows):
        self.calls.append(len(src_rows))
        return [[-1.0] * len(row) for row in tgt_rows]


def test_lines_come_back_in_order_in_batches_of_batch_size_empty_ones_empty():
    fake = Echo()
    lines = ["eins", "", "zwei drei", "123 !!!", "drei", "eins eins", "zwei", "  "]  # "123 !!!" is empty once refined
    results = fake(lines)
    assert [hypotheses[0][0] for hypotheses in results] == ["eins", "", "zwei drei", "", "drei", "eins eins", "zwei",
                                                            ""]
    assert [len(batch) for batch in fake.calls] == [3, 2]  # 5 lines with words, 3 per call, the last call partial
    assert results[1] == [("", 0.0)]
    assert results[2] == [("zwei drei", -3.0)]  # the score of the row with </S>


def test_a_line_is_encoded_once_and_its_ids_reach_the_engine_as_they_are():
    fake = Echo()
    rows = fake.encode_lines(["zwei Drei", "", "eins"])
    assert rows == [[5, 1, EOS], None, [4, EOS]]  # unknown words are <UNK>; an empty line has no ids
    assert fake.translate_ids(rows)[1] == [("", 0.0)]
    assert fake.calls == [[[4, EOS], [5, 1, EOS]]]  # shortest first


def test_batches_hold_sentences_of_similar_length_and_the_results_keep_the_input_order():
    fake = Echo()  # 3 sentences a batch
    lines = ["eins eins eins eins", "zwei", "drei drei", "eins", "zwei zwei zwei", "drei drei drei drei drei"]
    assert [hypotheses[0][0] for hypotheses in fake(lines)] == lines
    assert [[len(row) for row in batch] for batch in fake.calls] == [[2, 2, 3], [4, 5, 6]]  # </S> included


def test_nbest_lists_keep_their_order_and_variants_change_only_their_settings():
    fake = Echo(nbest=2)
    assert fake(["eins"]) == [[("eins", -2.0), ("eins", -3.0)]]
    other = fake.variant(nbest=3, beam_size=5)
    assert other.hp.beam_size == 5 and other.nbest == 3 and other.hp.batch_size == 3
    assert fake.hp.beam_size == 1 and fake.nbest == 2  # the engine it came from is unchanged


def test_text_that_is_not_unicode_is_refused_with_its_line_number_before_any_call():
    fake = Echo()
    with pytest.raises(UserError, match=r"line 3 is not valid Unicode text \(a lone surrogate, U\+DCFF, at "
                                        r"character 6\); give UTF-8 text"):
        fake(["eins", "zwei", "eins \udcff zwei"])
    with pytest.raises(UserError, match="line 2 is not valid Unicode text"):
        fake.score(["eins", "eins"], ["one", "\ud800"])
    assert fake.calls == []


def test_a_line_too_long_is_refused_with_its_line_number_before_any_call():
    fake = Echo(decode_maxlen=4)
    with pytest.raises(engine.TooLong, match=r"line 12 has 5 tokens, more than the 4 a translation may have") as e:
        fake(["eins", "eins zwei drei eins"], first_line=11)
    assert (e.value.tokens, e.value.limit) == (5, 4) and fake.calls == []


def test_learned_positions_cut_a_long_source_and_refuse_a_long_target():
    fake = Echo(sinusoid=False, maxlen=3)
    assert fake.encode_lines(["eins zwei drei eins"]) == [[4, 5, EOS]]
    with pytest.raises(engine.TooLong, match="line 2 has 4 tokens, more than the 3 positions this model learned"):
        fake.score(["eins", "eins"], ["eins", "zwei drei eins"])


def test_scores_are_sums_over_the_target_tokens_and_none_for_an_empty_side():
    fake = Echo()
    assert fake.score(["eins", "", "zwei", "drei", "eins"], ["eins zwei", "eins", "!!!", "drei", "zwei"]) == [
        (-3.0, 3), None, None, (-2.0, 2), (-2.0, 2)]
    assert fake.calls == [3]  # the three pairs with words on both sides, in one call of batch_size 3


def test_decode_limit_is_the_source_length_plus_decode_extra_within_the_cap():
    hp = Hyperparams(decode_extra=5, decode_maxlen=12)
    assert [engine.decode_limit(n, hp) for n in (1, 7, 8, 20)] == [6, 12, 12, 12]


def test_an_engine_must_define_what_it_computes():
    class Incomplete(engine.Engine):
        def nbest_ids(self, rows):
            return []

    with pytest.raises(TypeError, match="token_log_probs"):
        Incomplete()


def test_a_setting_beyond_what_the_model_can_do_is_refused_before_any_call():
    fake = Echo(sampling_topk=8)  # the vocab has 7 words
    with pytest.raises(UserError, match="--sampling_topk 8 is more than the 7 words this model can write; pass at "
                                        "most 7"):
        fake.check_limits()
    Echo(sampling_topk=7).check_limits()
