import dataclasses
import json

import pytest

import hyperparams
from hyperparams import Hyperparams, UserError, parse_args


def test_every_field_is_a_typed_flag_with_help():
    explicit, _ = parse_args(["--maxlen", "7", "--lr", "0.5", "--sinusoid", "false",
                              "--logdir", "runs/a"], description="t")
    assert explicit == {"maxlen": 7, "lr": 0.5, "sinusoid": False, "logdir": "runs/a"}
    helps = hyperparams._field_help()
    assert set(helps) == {f.name for f in dataclasses.fields(Hyperparams)}  # every field has a comment


def test_defaults_are_the_originals():
    hp = Hyperparams()
    assert (hp.batch_size, hp.lr, hp.maxlen, hp.min_cnt, hp.hidden_units, hp.num_blocks,
            hp.num_epochs, hp.num_heads, hp.dropout_rate, hp.sinusoid) == (
        32, 0.0001, 10, 20, 512, 6, 20, 8, 0.1, True)
    assert hp.source_train == "corpora/train.tags.de-en.de"
    assert hp.target_test == "corpora/IWSLT16.TED.tst2014.de-en.en.xml"


def test_script_flags_are_kept_apart():
    explicit, own = parse_args(["--all", "--maxlen", "5"], description="t",
                               add_arguments=lambda p: p.add_argument("--all", action="store_true",
                                                                      default=False))
    assert explicit == {"maxlen": 5} and own.all is True


@pytest.mark.parametrize("argv, message", [
    (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag"),
    (["--maxlen", "ten"], "invalid int value: 'ten'"),
    (["--sinusoid", "maybe"], "expected true or false"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv, description="t")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("settings, message", [
    ({"hidden_units": 100, "num_heads": 8}, "not divisible"),
    ({"maxlen": 0}, "--maxlen must be at least 1"),
    ({"dropout_rate": 1.0}, "[0, 1)"),
    ({"sinusoid": False, "decode_maxlen": 20}, "learned positions"),
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


def test_evaluation_without_training_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match="run train.py first"):
        hyperparams.for_evaluation({"logdir": str(tmp_path / "empty")})


def test_resuming_with_another_shape_is_refused(tmp_path):
    hyperparams.save(Hyperparams(logdir=str(tmp_path), hidden_units=64, num_heads=4))
    assert hyperparams.for_training({"logdir": str(tmp_path), "hidden_units": 64, "num_heads": 4,
                                     "num_epochs": 50}).num_epochs == 50
    with pytest.raises(UserError, match="hidden_units: 64 != 512"):
        hyperparams.for_training({"logdir": str(tmp_path), "num_heads": 4})
