import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess.reader import PretrainingDataset
from pretrain.config import ConfigError, load_config, micro_batch_sizes
from pretrain.data import Collator, Layout
from pretrain.distributed import World
from pretrain.fit import largest_fitting, resolve, worst_case_rows
from pretrain.model_config import BertConfig
from pretrain.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[3]


class Trials:
    """A step's peak as a function of its rows, counting the trials."""

    def __init__(self, peak):
        self.peak, self.asked = peak, []

    def __call__(self, m: int) -> float:
        self.asked.append(m)
        return self.peak(m)


@pytest.mark.parametrize("budget", [100, 170, 1000, 4000, 10_000])
def test_a_linear_peak_gives_the_largest_allowed_size_under_the_budget_in_few_trials(budget):
    """Each trial at most GROWTH times the largest that fits: 1, 2, 16, 128, 512 at the most."""
    allowed = micro_batch_sizes(4096, 8, packing=False)  # 1, 2, 4, ..., 512
    trials = Trials(lambda m: 50 + 7.5 * m)
    m, peaks = largest_fitting(trials, budget, allowed)
    assert m == max(a for a in allowed if 50 + 7.5 * a <= budget)
    assert peaks == {a: 50 + 7.5 * a for a in trials.asked} and len(trials.asked) <= 5
    assert set(trials.asked) <= set(allowed)


@pytest.mark.parametrize("budget", [300, 2000, 9000])
def test_a_peak_growing_faster_than_the_rows_still_ends_on_a_size_that_fits(budget):
    allowed = list(range(1, 201))
    peak = lambda m: 40 + 2 * m + 0.2 * m * m  # noqa: E731 (convex: the line through two trials overshoots)
    m, peaks = largest_fitting(Trials(peak), budget, allowed)
    assert peak(m) <= budget and (m == 200 or peak(m + 1) > budget)  # found exactly, within the trial limit
    assert len(peaks) <= 10


def test_when_not_even_the_smallest_fits_the_error_says_what_to_do():
    with pytest.raises(ConfigError, match="even 1 row.*ZeRO-3, model.activation_checkpointing"):
        largest_fitting(lambda m: 5 * 2**30 + m, 4 * 2**30, [1, 2, 4])


@pytest.mark.parametrize("packed", [True, False])
def test_worst_case_rows_fill_every_row_and_every_prediction_slot(dataset, packed):
    info = PretrainingDataset(str(dataset)).info
    s, p = info.max_seq_length, info.max_predictions_per_seq
    layout = Layout(0, p, 4 if packed else 0, s if packed else 0, 3)
    plan, rows = worst_case_rows(4, info, layout)
    inputs = Collator(layout)((plan, rows))["inputs"]
    assert inputs["input_ids"].shape == (4, s)
    real = (inputs["input_ids"] != 0).sum(1).tolist()
    assert real == ([s] * 4 if packed else [s, s, s, s - 1])  # the padded rows' path, as training takes it
    assert (inputs["masked_lm_labels"] != -100).sum(1).tolist() == [p] * 4
    if packed:
        assert (inputs["next_sentence_label"] != -100).sum(1).tolist() == [3] * 4
    assert inputs["cu_seqlens"] is not None and int(inputs["masked_lm_positions"].max()) < s


def test_a_resumed_run_reuses_the_recorded_size_or_the_largest_valid_below_it(dataset, tmp_path):
    """Resolving reads the run directory's record first (no GPU needed then): at the recorded world
    size the same size; at another, the largest size the batch arithmetic allows there, not above it."""
    run = RunDir(tmp_path).create()
    run.micro_batch_file.write_text(json.dumps({"micro_batch_size": 8, "device": "a GPU"}))
    info = PretrainingDataset(str(dataset)).info
    cfg = load_config("configs/tiny-cpu.yaml", [f"data.path={dataset}", "data.micro_batch_size=auto",
                                                "deepspeed.global_batch_size=36"])
    config = BertConfig.for_dataset("tiny", info)
    assert resolve(cfg, config, info, World(0, 0, 1), run).data.micro_batch_size == 6  # 36 % 8 != 0
    assert resolve(cfg, config, info, World(0, 0, 3), run).data.micro_batch_size == 6  # 12 a rank
    cfg = cfg.model_copy(update={"deepspeed": cfg.deepspeed.model_copy(update={"global_batch_size": 64})})
    assert resolve(cfg, config, info, World(0, 0, 2), run).data.micro_batch_size == 8


PROBE = """
import sys, weakref
from preprocess.reader import PretrainingDataset
from pretrain.config import load_config
from pretrain.distributed import World, init_distributed, world_from_env
from pretrain.fit import Probe
from pretrain.model_config import BertConfig

data = sys.argv[1]
info = PretrainingDataset(data).info
init_distributed(world_from_env(), 5)
for overrides in (["deepspeed.zero_stage=1", "optim.name=lamb"], ["deepspeed.zero_stage=2", "data.packing=true"]):
    cfg = load_config("configs/tiny-cpu.yaml", [f"data.path={data}", "data.micro_batch_size=auto", *overrides])
    probe = Probe(cfg, BertConfig.for_dataset("tiny", info), info, World(0, 0, 1))
    for m in (1, 4, 3):
        probe.step(m)
    engine = weakref.ref(probe.engine)
    probe.close()
    print(overrides, "engine released:", engine() is None)
"""


def test_the_probe_steps_worst_case_micro_batches_through_a_real_engine_and_lets_it_go(dataset):
    """What pretrain.fit measures on a GPU, run on CPU: a throwaway engine like the run's (ZeRO-1 with
    LAMB, then ZeRO-2 packed, one after the other in one process, as a probe and the run's engine are)
    takes training steps of any size on worst-case rows, and once closed nothing holds it (its GPU
    memory would go back before the next engine is built)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # one rank, whatever this process was told
    proc = subprocess.run([sys.executable, "-c", PROBE, str(dataset)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("engine released: True") == 2, proc.stdout
