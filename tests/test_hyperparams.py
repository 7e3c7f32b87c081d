
import dataclasses
import json

import pytest

import eval as evaluate
import hyperparams
from conftest import ROOT, fails
from hyperparams import Hyperparams
from messages import UserError


def test_defaults_are_the_originals():
    hp = Hyperparams()
    assert (hp.batch_size, hp.lr, hp.maxlen, hp.min_cnt, hp.hidden_units, hp.num_blocks,
            hp.num_epochs, hp.num_heads, hp.dropout_rate, hp.sinusoid) == (
        32, 0.0001, 10, 20, 512, 6, 20, 8, 0.1, True)
    assert (hp.dataset, hp.test_split) == ("iwslt2016", "tst2014")
    assert hp.source_train == "corpora/train.tags.de-en.de"
    assert hp.target_dev == "corpora/IWSLT16.TED.tst2013.de-en.en.xml"
    assert hp.target_test == "corpora/IWSLT16.TED.tst2014.de-en.en.xml"


def test_decode_cap():
    assert Hyperparams().decode_cap == 256
    assert Hyperparams(sinusoid=False, maxlen=12).decode_cap == 12
    assert Hyperparams(decode_maxlen=80).decode_cap == 80


def test_dataset_preset_fills_the_paths_not_given():
    hp = Hyperparams(dataset="multi30k", test_split="test_2017_mscoco", target_train="mine.en")
    assert (hp.source_train, hp.target_train) == ("corpora/multi30k/train.de.gz", "mine.en")
    assert (hp.source_dev, hp.target_dev) == ("corpora/multi30k/val.de.gz", "corpora/multi30k/val.en.gz")
    assert hp.source_test == "corpora/multi30k/test_2017_mscoco.de.gz"
    assert Hyperparams(dataset="multi30k").target_test == "corpora/multi30k/test_2016_flickr.en.gz"
    assert Hyperparams(test_split="dev2010").source_test == "corpora/IWSLT16.TED.dev2010.de-en.de.xml"


@pytest.mark.parametrize("settings, message", [
    ({"hidden_units": 100, "num_heads": 8}, "not divisible"),
    ({"maxlen": 0}, "--maxlen must be at least 1"),
    ({"dropout_rate": 1.0}, "[0, 1)"),
    ({"sinusoid": False, "decode_maxlen": 20}, "learned positions"),
    ({"lr": float("nan")}, "--lr must be positive, got nan"),
    ({"residual_dropout": -0.1}, "--residual_dropout"),
    ({"share_embeddings": True}, "--share_embeddings needs --vocab_type subword"),
    ({"vocab_type": "bpe"}, "--vocab_type 'bpe' is unknown; choose one of word, subword"),
    ({"lr_schedule": "linear"},
     "--lr_schedule 'linear' is unknown; choose one of constant, paper, paper_decay, cosine"),
    ({"beam_size": 0}, "--beam_size must be between 1 and 64, got 0"),
    ({"length_penalty": -1.0}, "--length_penalty must be 0 or more"),
    ({"eval_every": 100}, "--eval_every 100 needs --dev_eval true"),
    ({"dataset": "wmt14"}, "--dataset 'wmt14' is unknown; choose one of iwslt2016, multi30k"),
    ({"seed": -1}, "--seed must be in "),
    ({"adam_beta1": 1.0}, "--adam_beta1 must be in [0, 1), got 1.0"),
    ({"adam_beta2": -0.5}, "--adam_beta2 must be in [0, 1), got -0.5"),
    ({"adam_epsilon": float("nan")}, "--adam_epsilon must be 0 or more, got nan"),
    ({"lr_scale": float("inf")}, "--lr_scale must be positive, got inf"),
    ({"warmup_steps": 0}, "--warmup_steps must be at least 1, got 0"),
    ({"batch_tokens": -5}, "--batch_tokens must be 0 or more"),
    ({"vocab_size": 4}, "--vocab_size must be at least 8"),
    ({"dataset": "multi30k", "test_split": "tst2014"}, "not a split of multi30k; choose one of val,"),
])
def test_invalid_settings_are_refused(settings, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(")", r"\)")):
        Hyperparams(**settings)


def test_settings_round_trip_through_hparams_json(tmp_path):
    hp = Hyperparams(logdir=str(tmp_path), hidden_units=64, num_heads=4, sinusoid=False, lr=0.003)
    hyperparams.save(hp, command=["train.py", "--hidden_units", "64"])
    assert hyperparams.load(str(tmp_path)) == hp
    record = json.loads((tmp_path / "hparams.json").read_text())
    assert record["command"] == ["train.py", "--hidden_units", "64"]


def test_evaluation_uses_saved_model_settings(tmp_path):
    hyperparams.save(Hyperparams(logdir=str(tmp_path), hidden_units=64, num_heads=4, maxlen=15))
    hp = hyperparams.for_evaluation({"logdir": str(tmp_path), "batch_size": 7, "maxlen": 15})
    assert (hp.hidden_units, hp.num_heads, hp.maxlen, hp.batch_size) == (64, 4, 15, 7)
    with pytest.raises(UserError, match=r"\(hidden_units: 64 != 128\); drop those flags"):
        hyperparams.for_evaluation({"logdir": str(tmp_path), "hidden_units": 128})


def test_evaluation_names_the_preset_a_refused_setting_came_from(tmp_path):
    long = hyperparams.PRESETS["multi30k_cpu_long"]
    hyperparams.save(Hyperparams(**{**long, "logdir": str(tmp_path)}))
    with pytest.raises(UserError, match=r"\(residual_dropout: 0.3 != 0.2\); drop those flags \(--preset multi30k_cpu "
                                        r"sets residual_dropout; without --preset the model's own settings are used\)"):
        hyperparams.for_evaluation({**hyperparams.PRESETS["multi30k_cpu"], "preset": "multi30k_cpu",
                                    "logdir": str(tmp_path)})
    hp = hyperparams.for_evaluation({"logdir": str(tmp_path)})  # the fix the message gives works
    assert (hp.residual_dropout, hp.num_epochs) == (0.3, 26)


def test_evaluation_without_training_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match="run train.py first"):
        hyperparams.for_evaluation({"logdir": str(tmp_path / "empty")})


def test_resuming_with_another_shape_is_refused(tmp_path):
    hyperparams.save(Hyperparams(logdir=str(tmp_path), hidden_units=64, num_heads=4))
    assert hyperparams.for_training({"logdir": str(tmp_path), "hidden_units": 64, "num_heads": 4,
                                     "num_epochs": 50}).num_epochs == 50
    with pytest.raises(UserError, match="hidden_units: 64 != 512"):
        hyperparams.for_training({"logdir": str(tmp_path), "num_heads": 4})


def test_evaluation_follows_a_new_test_split_but_keeps_given_paths(tmp_path):
    hyperparams.save(Hyperparams(logdir=str(tmp_path), dataset="multi30k"))
    hp = hyperparams.for_evaluation({"logdir": str(tmp_path)})
    assert hp.source_test == "corpora/multi30k/test_2016_flickr.de.gz"
    hp = hyperparams.for_evaluation({"logdir": str(tmp_path), "test_split": "test_2017_flickr"})
    assert (hp.source_test, hp.target_test) == ("corpora/multi30k/test_2017_flickr.de.gz",
                                                "corpora/multi30k/test_2017_flickr.en.gz")
    assert hp.source_train == "corpora/multi30k/train.de.gz"
    hp = hyperparams.for_evaluation({"logdir": str(tmp_path), "dataset": "iwslt2016"})
    assert hp.target_test == "corpora/IWSLT16.TED.tst2014.de-en.en.xml"

    hyperparams.save(Hyperparams(logdir=str(tmp_path), dataset="multi30k", test_split="val",
                                 source_test="own.de", target_test="own.en"))
    hp = hyperparams.for_evaluation({"logdir": str(tmp_path)})
    assert (hp.test_split, hp.source_test) == ("val", "own.de")
    hp = hyperparams.for_evaluation({"logdir": str(tmp_path), "test_split": "test_2017_flickr"})
    assert (hp.source_test, hp.target_test) == ("own.de", "own.en")  # explicit paths still win


def test_conflicting_controls_are_refused():
    with pytest.raises(UserError, match="--patience 2 needs --dev_eval true"):
        Hyperparams(patience=2)
    with pytest.raises(UserError, match="--sampling_topk 5 samples one translation; .* --beam_size 4"):
        Hyperparams(sampling_topk=5, beam_size=4)
    with pytest.raises(UserError, match="--max_steps 50 ends within --warmup_steps 100"):
        Hyperparams(lr_schedule="cosine", max_steps=50, warmup_steps=100)
    with pytest.raises(UserError, match="--ema_decay must be in"):
        Hyperparams(ema_decay=1.0)


def test_hparams_json_that_is_a_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "logdir" / "hparams.json").mkdir(parents=True)
    line = fails(evaluate.main, "eval.py", ["--logdir", tmp_path / "logdir"], capsys, monkeypatch)
    assert "hparams.json is damaged (Is a directory); move it away and run train.py again" in line


def test_the_reference_lists_every_setting():
    table = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8").split("## Settings", 1)[1]
    missing = [f.name for f in dataclasses.fields(Hyperparams)
               if f"| `{f.name}`" not in table and f", `{f.name}`" not in table]  # a row's first or later name
    assert not missing
