import pytest

from preprocess.config import ConfigError, PreprocessConfig, build_parser, flag_of, parse_args


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
    assert cfg.shard_sizing("validation", 2).count == 1 and cfg.shard_sizing("train", 2).count == 64
    cfg, _ = parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--num-shards", "400",
                         "--validation-fraction", "0.05"])
    assert cfg.shard_sizing("validation", 2).count == 20


def test_shards_are_sized_in_bytes_unless_counted():
    cfg, _ = parse_args(["--input", "a", "--output", "o", "--vocab", "v"])
    assert cfg.shard_sizing("train", 2).count is None and cfg.shard_size == 256 << 20
    cfg, _ = parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--shard-size", "1GiB"])
    assert cfg.shard_sizing("validation", 4).size == 1 << 30
    with pytest.raises(ConfigError, match="--shard-size 12x"):
        parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--shard-size", "12x"])
    with pytest.raises(ConfigError, match="--shard-size 1KB: Input should be greater than or equal to 1048576"):
        parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--shard-size", "1KB"])


def test_a_misspelt_option_fails_before_work_with_the_closest_name():
    with pytest.raises(ConfigError) as e:
        parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--max-seq-lenght", "256",
                    "--direct_num_workers", "2", "--runer", "DirectRunner"])
    msg = str(e.value)
    assert "--max-seq-lenght: not an option of this job or of Apache Beam; did you mean --max-seq-length?" in msg
    assert "--runer" in msg and "did you mean --runner?" in msg
    assert "--direct_num_workers" not in msg  # Beam's own options pass


def test_options_of_every_installed_runner_are_accepted():
    _, beam = parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--runner", "DataflowRunner",
                          "--project", "p", "--region", "r", "--temp_location", "gs://b/t", "--flink_master=h:1",
                          "--spark_master_url", "spark://h:7077", "--environment_type", "LOOPBACK",
                          "--max_num_workers", "10", "--direct_running_mode=in_memory"])
    assert "--project" in beam and "--flink_master=h:1" in beam


def test_help_shows_every_default_from_the_one_definition(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, field in PreprocessConfig.model_fields.items():
        assert flag_of(name) in text
        if not field.is_required() and field.default is not None:
            assert f"(default: {field.default})" in text, name


def test_the_manifest_config_section_keeps_its_keys():
    cfg, _ = parse_args(["--input", "a", "--output", "o", "--vocab", "v", "--max-line-bytes", "2048"])
    d = cfg.to_dict()
    assert set(d) == {"inputs", "output", "vocab", "lower_case", "max_seq_length", "dupe_factor", "num_shards", "seed",
                      "shard_size",
                      "validation_fraction", "whole_word_mask", "masked_lm_prob", "max_predictions_per_seq",
                      "short_seq_prob", "input_format", "text_field", "language", "read"}
    assert d["read"] == {"input_format": "auto", "text_field": "text", "max_line_bytes": 2048,
                         "max_document_bytes": 16 << 20, "max_json_line_bytes": 256 << 20}
