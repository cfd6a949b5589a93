import pytest

from preprocess.config import ConfigError, parse_args


def test_our_options_and_beam_options_are_separated():
    cfg, beam = parse_args(["--input", "a/*.txt", "--input", "b.jsonl", "--output", "o", "--vocab", "v.txt",
                            "--no-lower-case", "--whole-word-mask", "--runner", "FlinkRunner", "--flink_master=x:1"])
    assert cfg.inputs == ("a/*.txt", "b.jsonl") and not cfg.lower_case and cfg.whole_word_mask
    assert beam == ["--runner", "FlinkRunner", "--flink_master=x:1"]
    assert cfg.pairing.max_num_tokens == 125 and cfg.masking.max_predictions_per_seq == 20


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--max-seq-length", "4",
                    "--dupe-factor", "0", "--validation-fraction", "1.5", "--short-seq-prob", "2"])
    msg = str(e.value)
    for name in ("--max-seq-length 4", "--dupe-factor 0", "--validation-fraction 1.5", "--short-seq-prob 2.0"):
        assert name in msg


def test_validation_gets_its_share_of_shards():
    cfg, _ = parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--num-shards", "64",
                         "--validation-fraction", "0.01"])
    assert cfg.validation_shards == 1
    cfg, _ = parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--num-shards", "400",
                         "--validation-fraction", "0.05"])
    assert cfg.validation_shards == 20
