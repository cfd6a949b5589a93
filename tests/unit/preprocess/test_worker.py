import os
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from preprocess.runners import LocalRunner, pipeline_options
from preprocess.worker import warm_count, warm_pool
from tests.unit.preprocess.test_runners import GLIBC

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("argv", [
    [], ["--input", "x", "--direct_num_workers=3"], ["--direct_num_workers", "1"], ["--direct_num_workers=0"],
    ["--direct_running_mode=in_memory"], ["--direct_running_mode", "multi_threading", "--direct_num_workers=4"],
    ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
])
def test_warm_count_is_the_local_runners_worker_processes(argv):
    """Decided from the arguments alone, it must agree with the runner the job then builds."""
    opts, _ = pipeline_options(argv)
    direct = opts.view_as(DirectOptions)
    expected = direct.direct_num_workers if direct.direct_running_mode == "multi_processing" else 0
    assert warm_count(argv) == expected


@pytest.mark.parametrize("argv", [["--runner", "dask"], ["--runner=DirectRunner"], ["--verbose"]])
def test_no_warm_workers_for_other_runners_or_verbose_runs(argv):
    assert warm_count(argv) == 0


def _record_pid(x, out):
    from tests.unit.preprocess.test_runners import new_mappings_after_allocating

    Path(out, f"{x}-{os.getpid()}-{new_mappings_after_allocating(16 << 20)}").touch()
    return x


def test_a_local_pipeline_runs_on_its_warm_workers_and_cold_ones_past_the_pool(tmp_path):
    with warm_pool(1) as pool:
        opts = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
        with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
            _ = p | beam.Create(range(40)) | beam.Reshuffle() | beam.Map(_record_pid, str(tmp_path))
        assert pool.claimed() == 1  # the second worker found no free warm process and started cold
        warm = pool.pids[0]
    done = {int(f.name.split("-")[0]): int(f.name.split("-")[1]) for f in tmp_path.iterdir()}
    assert sorted(done) == list(range(40))
    assert warm in done.values() and len(set(done.values())) == 2  # the warm process and a cold one both worked
    if GLIBC:  # both with glibc's steady thresholds from the start: 16 MiB arrays come from the heap
        assert {int(f.name.split("-")[2]) for f in tmp_path.iterdir()} == {0}
    assert not os.path.exists(f"/proc/{warm}") or _state(warm) == "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_unclaimed_warm_workers_leave_when_the_job_dies():
    program = ("import os, sys\nfrom preprocess.worker import warm_pool\n"
               "with warm_pool(2) as pool:\n    print(*pool.pids, flush=True)\n    os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         check=True).stdout
    pids = [int(p) for p in out.split()]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_state(p) not in ("Z", "gone") for p in pids):
        time.sleep(0.2)
    assert all(_state(p) in ("Z", "gone") for p in pids)
