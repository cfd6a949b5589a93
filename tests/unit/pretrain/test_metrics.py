import json

from pretrain.metrics import MetricsLogger, format_seconds, wandb_mode
from pretrain.run_dir import RunDir


def test_wandb_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    assert wandb_mode("disabled") == "disabled" and wandb_mode("offline") == "offline"


def test_only_rank_0_writes(tmp_path, capsys):
    MetricsLogger(RunDir(tmp_path), rank=1, total_steps=10).log(1, {"loss": 1.0})
    assert not RunDir(tmp_path).metrics.exists()
    m = MetricsLogger(RunDir(tmp_path), rank=0, total_steps=10)
    m.log(5, {"loss": 2.5, "lr": 0.001})
    m.close()
    assert json.loads(RunDir(tmp_path).metrics.read_text()) == {"step": 5, "loss": 2.5, "lr": 0.001}
    assert "step 5/10 loss 2.5" in capsys.readouterr().err


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_with_pace(tmp_path, seconds_of_step) -> list[tuple[int, float, float]]:
    """(step, ETA shown, true time left) at every 10th step of a 1000-step run on a fake clock."""
    clock = FakeClock()
    logger = MetricsLogger(RunDir(tmp_path), rank=0, total_steps=1000, clock=clock)
    durations = [seconds_of_step(s) for s in range(1, 1001)]
    out = []
    for step in range(1, 1001):
        clock.now += durations[step - 1]
        logger.tick(step)
        if step % 10 == 0:
            out.append((step, logger.eta.seconds_left(), sum(durations[step:])))
    return out


def test_eta_leaves_out_the_first_step_and_follows_the_recent_pace(tmp_path, capsys):
    steady = run_with_pace(tmp_path, lambda s: 120.0 if s == 1 else 1.0)  # compilation, then 1 s a step
    assert steady[0] == (10, 990.0, 990.0)  # right from its first print, not 120x too long
    changing = run_with_pace(tmp_path, lambda s: 120.0 if s == 1 else (1.0 if s <= 500 else 1.8))
    for step, shown, real in changing:
        assert real / 2 <= shown <= real * 2 or real == 0, (step, shown, real)  # within 2x throughout
    logger = MetricsLogger(RunDir(tmp_path), rank=0, total_steps=2, clock=FakeClock())
    logger.tick(1)
    logger.tick(2)
    logger.log(2, {"loss": 1.0})
    assert "eta 0s" in capsys.readouterr().err
    assert format_seconds(42.4) == "42s" and format_seconds(425) == "7m05s" and format_seconds(10_920) == "3h02m"


def test_no_eta_before_a_steady_step(tmp_path, capsys):
    logger = MetricsLogger(RunDir(tmp_path), rank=0, total_steps=10, clock=FakeClock())
    logger.tick(1)
    logger.log(1, {"loss": 1.0})
    assert "eta" not in capsys.readouterr().err


class RecordingSink:
    """Stands where WandbSink stands; records what would reach wandb."""

    def __init__(self):
        self.steps = []

    def log(self, step, metrics):
        self.steps.append(step)

    def close(self):
        pass


def test_after_a_resume_went_back_wandb_gets_only_steps_it_has_not_seen(tmp_path):
    sink = RecordingSink()
    m = MetricsLogger(RunDir(tmp_path), rank=0, total_steps=10, wandb=sink, wandb_after=4)
    for step in (3, 4, 5, 6):
        m.log(step, {"loss": 1.0})
    m.close()
    assert sink.steps == [5, 6]  # wandb's steps stay increasing
    assert [json.loads(x)["step"] for x in RunDir(tmp_path).metrics.read_text().splitlines()] == [3, 4, 5, 6]


def test_interval_reports_packing_efficiency_and_sequences_per_row():
    from pretrain.metrics import Interval

    interval = Interval()
    interval.add({"real_tokens": 900, "attention_pairs": 0, "predictions": 0, "capacity": 1024, "rows_used": 2,
                  "sequences": 5}, waited=0.0)
    rates = interval.rates(global_batch=5, flops=lambda *counts: 0.0, world=1, peak_tflops=0.0)
    assert rates["packing_efficiency"] == 900 / 1024 and rates["sequences_per_row"] == 2.5


def test_interval_reports_the_optimizer_step_and_host_syncs_per_step_and_rank():
    from pretrain.metrics import Interval

    interval = Interval()
    for _ in range(4):
        interval.add(dict.fromkeys(("real_tokens", "attention_pairs", "predictions", "capacity", "rows_used",
                                    "sequences"), 1), waited=0.0)
    interval.optimizer_seconds = 0.8  # summed over 2 ranks
    rates = interval.rates(global_batch=2, flops=lambda *counts: 0.0, world=2, peak_tflops=0.0)
    assert rates["optimizer_ms"] == 100.0 and "host_syncs_per_step" not in rates  # not counted: not reported
    interval.host_syncs = 24
    assert interval.rates(global_batch=2, flops=lambda *counts: 0.0, world=2, peak_tflops=0.0)[
        "host_syncs_per_step"] == 3.0


def test_device_timer_sums_the_timed_regions_until_read():
    import time

    from pretrain.metrics import DeviceTimer

    timer = DeviceTimer("cpu")
    with timer.timing():
        time.sleep(0.05)
    with timer.timing(on=False):
        time.sleep(0.2)
    with timer.timing():
        time.sleep(0.05)
    assert 0.1 <= timer.read() < 0.2  # the region timed off is not counted
    assert timer.read() == 0.0  # a read starts over
    with timer.timing():
        time.sleep(0.01)
    timer.reset()
    assert timer.read() == 0.0


def test_a_roll_back_rewinds_metrics_jsonl_and_wandb_sees_each_step_once(tmp_path, capsys):
    sink = RecordingSink()
    run = RunDir(tmp_path)
    m = MetricsLogger(run, rank=0, total_steps=10, wandb=sink, clock=FakeClock())
    for step in (1, 2, 3, 4):
        m.tick(step)
        m.log(step, {"loss": float(step)})
    m.rewind(2)  # back to step 2's checkpoint: 3 and 4 are trained again
    assert m.eta.seconds_left() is None  # the pace is measured afresh
    for step in (3, 4, 5):
        m.log(step, {"loss": 10.0 + step})
    m.close()
    assert [json.loads(x)["loss"] for x in run.metrics.read_text().splitlines()] == [1.0, 2.0, 13.0, 14.0, 15.0]
    assert [json.loads(x)["step"] for x in run.metrics_superseded.read_text().splitlines()] == [3, 4]
    assert sink.steps == [1, 2, 3, 4, 5]  # increasing, each once
