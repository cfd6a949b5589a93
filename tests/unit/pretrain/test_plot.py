import json

import pytest

from pretrain.plot import plot
from pretrain.run_dir import RunDir


def test_plot_writes_a_png_from_metrics_jsonl(tmp_path):
    rows = [{"step": s, "loss": 9 - s / 10, "mlm_loss": 8 - s / 10, "nsp_loss": 0.7, "mlm_accuracy": s / 100,
             "nsp_accuracy": 0.5, "lr": 1e-3} for s in range(1, 30)]
    rows += [{"step": 10, "eval_mlm_loss": 8.0, "eval_mlm_accuracy": 0.1, "eval_nsp_accuracy": 0.5}]
    RunDir(tmp_path).metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = plot(str(tmp_path))
    assert path == RunDir(tmp_path).curves and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_plot_of_a_run_without_metrics_says_so(tmp_path):
    RunDir(tmp_path).metrics.write_text("")
    with pytest.raises(ValueError, match="no training records"):
        plot(str(tmp_path))
