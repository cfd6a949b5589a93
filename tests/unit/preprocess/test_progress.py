import io

from preprocess import progress
from preprocess.progress import PROGRESS_DIR_VARIABLE, JobMonitor, Progress, read_counters


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_one_plain_line_every_so_often():
    out, clock = io.StringIO(), Clock()
    p = Progress(100, "train", "steps", stream=out, every=30, clock=clock)
    for step in range(1, 101):
        clock.now += 1.0
        p.update(step, eta="1m")
    lines = out.getvalue().splitlines()
    assert lines == ["train: 30/100 steps, eta 1m", "train: 60/100 steps, eta 1m", "train: 90/100 steps, eta 1m"]
    p.write("a record")
    p.update(100, force=True, eta="0s")
    assert out.getvalue().splitlines()[-2:] == ["a record", "train: 100/100 steps, eta 0s"]


def test_workers_report_through_files_that_the_monitor_sums(tmp_path, monkeypatch):
    monkeypatch.setenv(PROGRESS_DIR_VARIABLE, str(tmp_path))
    monkeypatch.setattr(progress, "_counters", {})
    progress.report(files=1, documents=10, text_bytes=2_000_000)
    progress.report(files=1, documents=5)
    progress.flush()
    (tmp_path / "12345.json").write_text('{"files": 2, "pairs": 40, "shards": 1}')  # another worker process
    assert read_counters(str(tmp_path)) == {"files": 4, "documents": 15, "text_bytes": 2_000_000, "pairs": 40,
                                            "shards": 1}
    out = io.StringIO()
    monitor = JobMonitor(str(tmp_path), files=4, shards=2, stream=out)
    monitor.start()
    monitor.stop()
    assert "preprocess: 4/4 files, text 2.0 MB" in out.getvalue() and "pairs 40, shards 1/2" in out.getvalue()


def test_reporting_is_a_no_op_outside_a_local_job(monkeypatch):
    monkeypatch.delenv(PROGRESS_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(progress, "_counters", {})
    progress.report(files=1)
    assert progress._counters == {}


def test_threads_of_one_process_report_together_and_a_gone_directory_is_harmless(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv(PROGRESS_DIR_VARIABLE, str(tmp_path / "job1"))
    monkeypatch.setattr(progress, "_counters", {})
    (tmp_path / "job1").mkdir()

    def work():
        for _ in range(2000):
            progress.report(pairs=1)
            progress.flush()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_counters(str(tmp_path / "job1"))["pairs"] == 8000
    (tmp_path / "job1" / "x").write_text("")
    import shutil

    shutil.rmtree(tmp_path / "job1")  # the job ended; a later job in the same process reports elsewhere
    monkeypatch.setenv(PROGRESS_DIR_VARIABLE, str(tmp_path / "job2"))
    (tmp_path / "job2").mkdir()
    progress.report(pairs=3)
    progress.flush()
    assert read_counters(str(tmp_path / "job2"))["pairs"] == 3
