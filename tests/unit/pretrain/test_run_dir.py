import subprocess
import sys
from pathlib import Path

from pretrain.model_config import BertConfig
from pretrain.run_dir import DataRef, RunDir
from pretrain.status import main as status_main

ROOT = Path(__file__).resolve().parents[3]


def test_records_round_trip(tmp_path):
    run = RunDir(tmp_path / "run").create()
    assert run.data_ref() is None and run.finished() is None
    ref = DataRef("data/seq128", "data/seq128/vocab.txt", False, "ab" * 16)
    run.write_data_ref(ref)
    assert run.data_ref() == ref
    config = BertConfig.named("mini", vocab_size=1000)
    run.write_model_config(config)
    assert run.model_config() == config
    run.mark_finished({"step": 7, "samples": 70})
    assert run.finished() == {"step": 7, "samples": 70}
    assert all(getattr(run, name).parent == run.root for name in RunDir.PATHS)


def test_status_exit_code_says_whether_the_run_finished(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    assert status_main([str(run.root)]) == 2  # not a run directory
    run.create().write_config({"run_dir": str(run.root)})
    (run.checkpoints / "step_00000005").mkdir(parents=True)
    (run.checkpoints / "step_00000005" / "COMPLETE").write_text("{}")
    assert status_main([str(run.root)]) == 1
    assert "not finished; newest checkpoint step_00000005" in capsys.readouterr().out
    run.mark_finished({"step": 9, "samples": 90})
    assert status_main([str(run.root)]) == 0
    assert "finished at step 9" in capsys.readouterr().out


def test_batch_scripts_get_paths_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pretrain", "path", str(tmp_path), "export"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(RunDir(tmp_path).export)
    scripts = "".join(p.read_text() for p in (ROOT / "slurm").iterdir())
    assert "FINISHED" not in scripts and "/export" not in scripts


def test_a_resume_moves_the_records_of_the_steps_it_goes_back_over(tmp_path):
    import json

    from pretrain.run_dir import RunDir

    run = RunDir(tmp_path).create()
    run.metrics.write_text("".join(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in (1, 2, 3, 4))
                           + '{"step": 5, "lo')  # the last record cut short
    assert run.supersede_metrics(4) is None  # no step after 4; the cut record is moved out all the same
    assert run.metrics_superseded.read_text() == '{"step": 5, "lo\n'
    run.metrics_superseded.unlink()
    assert run.supersede_metrics(2) == 4
    assert [json.loads(x)["step"] for x in run.metrics.read_text().splitlines()] == [1, 2]
    assert [json.loads(x)["step"] for x in run.metrics_superseded.read_text().splitlines()] == [3, 4]
    assert run.supersede_metrics(2) is None  # nothing left to move
