"""Every command line: --help shows each option's default, in plain text."""

import pytest

from preprocess import config, example, report, vocab
from pretrain import __main__ as pretrain_main
from pretrain import demo, export, plot, status

COMMANDS = {
    "python -m preprocess": lambda a: config.parse_args(a),
    "python -m preprocess inspect": report.main,
    "python -m preprocess.example": example.main,
    "bert-train-vocab": vocab.main,
    "python -m pretrain": pretrain_main.main,
    "python -m pretrain export": export.main,
    "python -m pretrain plot": plot.main,
    "python -m pretrain status": status.main,
    "python -m pretrain path": status.path_main,
    "python -m pretrain.demo": demo.main,
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_defaults_in_plain_text(command, capsys):
    with pytest.raises(SystemExit) as e:
        COMMANDS[command](["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: {command}")
    assert "``" not in text and ":class:" not in text and ":mod:" not in text
    assert "(default: None)" not in text
    with_defaults = {"python -m preprocess": "--max-seq-length MAX_SEQ_LENGTH tokens per sequence, [CLS] and both "
                     "[SEP] included (default: 128)",
                     "python -m preprocess inspect": "--samples SAMPLES rows to decode and show (default: 3)",
                     "python -m preprocess.example": "(default: 8000)", "bert-train-vocab": "(default: 30522)",
                     "python -m pretrain.demo": "--steps STEPS training steps (default: 2500)"}
    if command in with_defaults:
        assert with_defaults[command] in text
