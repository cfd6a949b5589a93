import json

from pretrain.metrics import MetricsLogger, wandb_mode
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
