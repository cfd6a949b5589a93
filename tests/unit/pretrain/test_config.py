import pytest

from preprocess.dataset import DatasetInfo, SplitInfo
from preprocess.masking import MaskingParams
from pretrain.config import (
    ConfigError,
    apply_overrides,
    check_against,
    load_config,
    micro_batch_sizes,
)


def data_with(**rows: int) -> DatasetInfo:
    """A dataset's face with the given rows per split (nothing else matters to these checks)."""
    return DatasetInfo(path="d", vocab_file="d/vocab.txt", vocab_fingerprint="f", vocab_size=100, lower_case=True,
                       format_version=2,
                       token_dtype="uint16", max_seq_length=128, masking=MaskingParams(), seed=1,
                       splits={k: SplitInfo(k, n, n * 100, (), {}) for k, n in rows.items()}, inputs=(),
                       documents={}, options={})


MANIFEST = data_with(train=100, validation=5)


def test_recipe_loads_and_overrides_are_typed(tmp_path):
    cfg = load_config("configs/tiny-cpu.yaml", ["optim.lr=3e-4", "deepspeed.zero_stage=3", "data.packing=true",
                                                "deepspeed.global_batch_size=48", "data.micro_batch_size=8"])
    assert cfg.optim.lr == 3e-4 and cfg.deepspeed.zero_stage == 3 and cfg.data.packing is True
    assert [cfg.accumulation_steps(world_size=w) for w in (1, 2, 3, 5)] == [6, 3, 2, 2]  # packed: at most


def test_compile_is_refused_with_zero_3():
    with pytest.raises(ConfigError, match="model.compile does not work with deepspeed.zero_stage 3"):
        load_config("configs/tiny-cpu.yaml", ["model.compile=true", "deepspeed.zero_stage=3"])


def test_packing_and_length_bucketing_are_alternatives():
    with pytest.raises(ConfigError, match="data.packing and data.length_bucketing are alternatives"):
        load_config("configs/tiny-cpu.yaml", ["data.packing=true", "data.length_bucketing=4"])


def test_a_bad_value_is_blamed_on_the_override_or_the_file_that_set_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("configs/tiny-cpu.yaml", ["optim.lr=abc"])
    assert "override optim.lr=abc: optim.lr:" in str(e.value) and "tiny-cpu.yaml" not in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(["configs/tiny-cpu.yaml", str(bad)], ["optim.warmup_steps=1"])
    assert f"config configs/tiny-cpu.yaml + {bad}: optim.lr:" in str(e.value) and "override" not in str(e.value)
    with pytest.raises(ConfigError, match=r"configuration:\n  optim.warmup_steps \(9\) must be below optim.total"):
        load_config("configs/tiny-cpu.yaml", ["optim.warmup_steps=9", "optim.total_steps=9"])


def test_all_invalid_fields_are_reported_with_their_path():
    with pytest.raises(ConfigError) as e:
        load_config("configs/tiny-cpu.yaml", ["optim.lr=0", "deepspeed.zero_stage=4", "model.sise=base"])
    msg = str(e.value)
    assert "optim.lr" in msg and "deepspeed.zero_stage" in msg and "model.sise" in msg


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="No such file"):
        load_config("configs/nope.yaml")
    with pytest.raises(ConfigError, match="expected section.field=value"):
        apply_overrides({}, ["optim.lr"])


def test_checks_against_data_and_world():
    cfg = load_config("configs/tiny-cpu.yaml")
    check_against(cfg, MANIFEST, world_size=2)
    with pytest.raises(ConfigError, match="not a multiple.*; no micro-batch size fits 3 ranks"):
        check_against(cfg, MANIFEST, world_size=3)  # global batch 16


def test_a_run_moved_to_another_world_size_is_told_the_micro_batches_that_fit():
    from pretrain.config import valid_micro_batches

    assert valid_micro_batches(256, 8, 64) == [32]  # 256 / 8 ranks = 32 a rank: nothing above 32
    assert valid_micro_batches(256, 3, 64) == []
    assert valid_micro_batches(48, 3, 5) == [4, 8]
    assert valid_micro_batches(12, 1, 8) == [6, 12]
    cfg = load_config("configs/tiny-cpu.yaml", ["deepspeed.global_batch_size=48", "data.micro_batch_size=5"])
    with pytest.raises(ConfigError, match="nearest valid data.micro_batch_size at 3 ranks: 4 or 8"):
        check_against(cfg, MANIFEST, world_size=3)
    with pytest.raises(ConfigError, match="has no rows"):
        check_against(cfg, data_with(train=0), world_size=1)
    off = load_config("configs/tiny-cpu.yaml", ["deepspeed.zero_stage=0", "deepspeed.offload_optimizer=true"])
    with pytest.raises(ConfigError, match="offload_optimizer needs zero_stage"):
        check_against(off, MANIFEST, world_size=1)


@pytest.mark.parametrize("recipe,micro,accumulation", [("configs/bert-large-phase1.yaml", 128, 1),
                                                        ("configs/bert-large-phase2.yaml", 32, 2)])
def test_bert_large_recipes_fit_64_nodes_of_8_gpus(recipe, micro, accumulation):
    cfg = load_config(recipe)
    assert cfg.model.size == "large" and cfg.optim.name == "lamb" and cfg.deepspeed.precision == "bf16"
    check_against(cfg, data_with(train=10**8, validation=10**5), world_size=512)
    assert cfg.data.micro_batch_size == micro and cfg.accumulation_steps(512) == accumulation


def test_deepspeed_overlays_merge_over_a_recipe():
    for stage in (1, 2, 3):
        cfg = load_config(["configs/bert-large-phase1.yaml", f"configs/deepspeed/zero{stage}.yaml"])
        assert cfg.deepspeed.zero_stage == stage and cfg.deepspeed.global_batch_size == 65536
    off = load_config(["configs/bert-large-phase1.yaml", "configs/deepspeed/zero3-offload.yaml"])
    assert off.deepspeed.offload_optimizer and off.optim.lr == 6e-3


@pytest.mark.parametrize("override,error", [("deepspeed.precision=fp16", "fp16 needs a GPU"),
                                            ("logging.count_host_syncs=true", "count_host_syncs counts what CUDA"),
                                            ("data.micro_batch_size=auto", "auto measures the GPU's memory")])
def test_gpu_only_settings_on_cpu_are_refused_before_work(override, error):
    cfg = load_config("configs/tiny-cpu.yaml", [override])
    with pytest.raises(ConfigError, match=error):
        check_against(cfg, MANIFEST, world_size=1, on_gpu=False)
    check_against(cfg, MANIFEST, world_size=1, on_gpu=True)


def test_micro_batch_size_is_a_number_or_auto():
    assert load_config("configs/tiny-cpu.yaml", ["data.micro_batch_size=auto"]).data.micro_batch_size == "auto"
    for bad in ("data.micro_batch_size=0", "data.micro_batch_size=most", "data.auto_memory_fraction=1.5"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config("configs/tiny-cpu.yaml", [bad])
    cfg = load_config("configs/tiny-cpu.yaml", ["data.micro_batch_size=auto", "deepspeed.global_batch_size=15"])
    with pytest.raises(ConfigError, match="global_batch_size 15 does not divide into 2 ranks"):
        check_against(cfg, MANIFEST, world_size=2, on_gpu=True)
    check_against(cfg, MANIFEST, world_size=3, on_gpu=True)  # any size that divides 5 will do


def test_sizes_are_those_the_batch_arithmetic_allows():
    assert micro_batch_sizes(48, 2, packing=False) == [1, 2, 3, 4, 6, 8, 12, 24]
    assert micro_batch_sizes(36, 3, packing=False) == [1, 2, 3, 4, 6, 12]
    assert micro_batch_sizes(10, 4, packing=True) == [1, 2, 3]  # packed: any size up to the per-rank batch
