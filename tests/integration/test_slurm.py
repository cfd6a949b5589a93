"""The Slurm scripts on a real Slurm: munge, slurmctld and two slurmd (nodeA, nodeB) on this host.

Skipped, saying why, where slurm-wlm and munge are not installed (.ci/run installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pretrain.run_dir import RunDir

# Each pytest-xdist worker that runs tests of this module starts a test cluster of its own (its own
# ports, socket, state and job ids: two can run side by side). A limit per test that holds the
# cluster's start (the first test's) and a job's wait.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]
ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "srun")

CONF = """\
ClusterName=pytest
FirstJobId={first_job}
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool/%n
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd-%n.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=3600
NodeName=nodeA NodeHostname=localhost NodeAddr=127.0.0.1 Port={port_a} CPUs=2 RealMemory=4000 State=UNKNOWN
NodeName=nodeB NodeHostname=localhost NodeAddr=127.0.0.1 Port={port_b} CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=nodeA,nodeB Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# When this session's test cluster started: a job's log is looked for among files written since, so
# that a log an earlier cluster left in logs/ under the same job id is never read as this one's.
STARTED = {"at": 0.0}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [b for b in NEEDED if not shutil.which(b)]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs its daemons as root")
    base = tmp_path_factory.mktemp("slurm")
    for d in ("munge", "state", "spool/nodeA", "spool/nodeB", "log"):
        (base / d).mkdir(parents=True)
    (base / "munge" / "munge.key").write_bytes(os.urandom(1024))
    (base / "munge" / "munge.key").chmod(0o600)
    # its own ports, socket, state and spool: nothing an earlier or a concurrent cluster left is shared
    ctld, slurmd_port, a, b = free_ports(4)
    conf = base / "slurm.conf"
    # job ids apart for each worker's cluster: a job's log (logs/NAME-ID.out) and MASTER_PORT (20000 + id)
    # come from its id
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    conf.write_text(CONF.format(base=base, ctld_port=ctld, slurmd_port=slurmd_port, port_a=a, port_b=b,
                                first_job=1000 * (worker + 1)))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    m = base / "munge"
    STARTED["at"] = time.time()
    try:  # the daemons are stopped on every way out: a failed start, a failed or timed-out test, Ctrl-C
        subprocess.run(["munged", "--force", f"--key-file={m}/munge.key", f"--socket={m}/munge.socket",
                        f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/seed"],
                       check=True)
        subprocess.run(["slurmctld", "-f", str(conf)], env=env, check=True)
        time.sleep(1)
        for node in ("nodeA", "nodeB"):
            subprocess.run(["slurmd", "-N", node, "-f", str(conf)], env=env, check=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%D %t"], env=env, capture_output=True, text=True).stdout
            if out.strip() == "2 idle":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the test cluster did not come up: sinfo says {out!r}; see {base / 'log'}")
        yield env
    finally:
        subprocess.run(["scancel", "--user=root"], env=env, capture_output=True, timeout=30)
        stop_daemons([base / "slurmd-nodeA.pid", base / "slurmd-nodeB.pid", base / "slurmctld.pid",
                      m / "munged.pid"])


def stop_daemons(pidfiles: list[Path], grace: float = 10) -> None:
    """SIGTERM to each daemon whose pid file exists, then SIGKILL to any still running after ``grace`` s."""
    pids = []
    for pidfile in pidfiles:
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError):  # never written, or already gone
            pass
    deadline = time.time() + grace
    for pid in pids:
        while time.time() < deadline and running(pid):
            time.sleep(0.1)
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def sbatch(env, *args, **extra_env) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *args], cwd=ROOT, env={**env, **extra_env},
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip().split(";")[0]


def job(env, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def wait_for(env, job_id: str, states=("COMPLETED",), timeout=360, until=None) -> dict[str, str]:
    """The job's fields once it is in one of ``states`` (or ``until()`` is true), releasing a requeued
    job that Slurm holds; a failed job or the timeout is an error with its log."""
    deadline = time.time() + timeout
    held_since = None
    while time.time() < deadline:
        info = job(env, job_id)
        if info.get("JobState") in states or (until is not None and until()):
            return info
        if info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime":
            # Slurm holds a requeued job ~2 minutes before it is eligible again (until the old
            # instance's credential is gone); release it sooner, but not at once: a job restarted
            # within a second of its requeue fails with "Job credential revoked".
            held_since = held_since or time.time()
            if time.time() - held_since > 5:
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env)
        else:
            held_since = None
        if info.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            raise AssertionError(f"job {job_id} {info.get('JobState')}:\n{log_of(job_id)}")
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job(env, job_id).get('JobState')} after {timeout} s:\n{log_of(job_id)}")


def log_of(job_id: str, name: str = "*") -> str:
    """The job's log: the newest of that id written since this cluster started."""
    files = sorted((p for p in (ROOT / "logs").glob(f"{name}-{job_id}.out") if p.stat().st_mtime >= STARTED["at"]),
                   key=lambda p: p.stat().st_mtime)
    return files[-1].read_text() if files else "(no log)"


def wait_for_steps(run_dir: Path, n: int, timeout=300) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"{metrics}: fewer than {n} records after {timeout} s")


STEPS = 100  # interrupted after step 30 (3 log records) and again later; the stop signal is agreed every 10 steps


def pretrain_args(dataset, steps=STEPS):
    return (f"data.path={dataset}", f"optim.total_steps={steps}", "optim.warmup_steps=10", "logging.every_steps=10",
            "checkpoint.every_steps=1000", "logging.wandb=disabled", "eval.every_steps=0", "data.num_workers=0")


def submit_pretrain(slurm, dataset, run_dir: Path, log: Path) -> str:
    """The job, its output in ``log`` (this job's alone: logs/ may hold an earlier cluster's job of the same id)."""
    return sbatch(slurm, "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", f"--output={log}",
                  "slurm/pretrain.sbatch", *pretrain_args(dataset), CONFIG="configs/tiny-cpu.yaml", RUN_DIR=str(run_dir),
                  PYTHON=sys.executable, PYTHONPATH=str(ROOT))


def test_a_job_requeues_itself_at_its_time_limit_then_preempted_resumes_on_fewer_nodes_and_finishes(
        slurm, dataset, tmp_path):
    """One job, interrupted twice: the time limit's signal (it checkpoints and requeues itself), then a
    preemption that brings it back on half its nodes (ZeRO-2, 2 ranks -> 1)."""
    run, out = tmp_path / "run", tmp_path / "job.out"
    job_id = submit_pretrain(slurm, dataset, run, out)
    wait_for_steps(run, 3)
    subprocess.run(["scancel", "--signal=USR1", job_id], env=slurm, check=True)  # what --signal=USR1@300 sends
    # back on its 2 nodes, resumed, and a step past its checkpoint
    wait_for(slurm, job_id, states=(), until=lambda: "resumed from step" in out.read_text()
             and "(restart 1): 2 tasks on nodeA,nodeB" in out.read_text())
    first = int(out.read_text().split("signal 10: checkpointed at step ")[1].split(",")[0])
    wait_for_steps(run, first // 10 + 1)
    # what preemption does (requeue), held so that the pending job can be shrunk before it restarts: the
    # cluster has room for half of it now, and it comes back on one node
    subprocess.run(["scontrol", "requeuehold", job_id], env=slurm, check=True)
    deadline = time.time() + 120
    while job(slurm, job_id).get("JobState") != "PENDING" and time.time() < deadline:  # the old run ends
        time.sleep(0.5)
    # (the task count too: Slurm keeps a job's nodes >= tasks / tasks-per-node)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "NumNodes=1", "NumTasks=1"], env=slurm, check=True)
    subprocess.run(["scontrol", "release", job_id], env=slurm, check=True)
    info = wait_for(slurm, job_id)
    assert info["Restarts"] == "2"
    log = out.read_text()
    assert "2 tasks on nodeA,nodeB" in log and "(restart 2): 1 tasks on node" in log
    assert "signal 10: checkpointed at step" in log and "requeueing job" in log
    assert f"resumed from step {first}" in log
    stopped = int(log.rsplit("checkpointed at step ", 1)[1].split(",")[0])
    assert stopped > first
    assert (f"step_{stopped:08d} was written by 2 ranks at ZeRO-2; this run is 1 rank at ZeRO-2: converting it to "
            "DeepSpeed's universal format") in log
    assert f"resumed from step {stopped}" in log and f"finished at step {STEPS}" in log
    assert RunDir(run).finished()["step"] == STEPS


def test_preprocessing_batch_job(slurm, corpus_dir, vocab_file, tmp_path):
    out = tmp_path / "data"
    (ROOT / "logs").mkdir(exist_ok=True)
    job_id = sbatch(slurm, "--cpus-per-task=2", "slurm/preprocess.sbatch", "--max-seq-length", "64",
                    "--num-shards", "2", INPUT=str(corpus_dir / "*.txt"), OUTPUT=str(out), VOCAB=vocab_file,
                    PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    wait_for(slurm, job_id)
    assert "with 2 worker processes" in log_of(job_id)
    from preprocess.reader import PretrainingDataset

    assert len(PretrainingDataset(str(out), verify="checksum")) > 0


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def submit_dask_preprocessing(slurm, corpus_dir, vocab_file, out: Path) -> str:
    """Two nodes; the arguments of the `dataset` fixture, which the local runner made."""
    (ROOT / "logs").mkdir(exist_ok=True)
    return sbatch(slurm, "--nodes=2", "--cpus-per-task=2", "slurm/preprocess.sbatch", "--max-seq-length", "64",
                  "--dupe-factor", "2", "--num-shards", "4", "--validation-fraction", "0.05",
                  INPUT=str(corpus_dir / "*.txt"), OUTPUT=str(out), VOCAB=vocab_file, PYTHON=sys.executable,
                  PYTHONPATH=str(ROOT))


def dask_processes_of(out: Path) -> str:
    return subprocess.run(["pgrep", "-af", str(out / ".dask-")], capture_output=True, text=True).stdout


def test_preprocessing_across_two_nodes_on_dask_matches_the_local_runner(slurm, corpus_dir, vocab_file, dataset,
                                                                         tmp_path):
    out = tmp_path / "data"
    job_id = submit_dask_preprocessing(slurm, corpus_dir, vocab_file, out)
    wait_for(slurm, job_id)
    log = log_of(job_id, "bert-preprocess")
    assert "Dask cluster on 2 nodes, 2 worker processes x 1 threads per node" in log
    assert "Dask workers on nodeA" in log and "Dask workers on nodeB" in log
    assert "Dask runner: 4 worker threads" in log and "background work" not in log  # the script's workers: quiet
    assert files_of(out) == files_of(dataset)  # byte-identical, and nothing left behind (.parts/, .dask-*)
    assert not any(w in log for w in ("Killed", "WARNING", "ERROR", "Traceback")), log  # the job's lines only
    assert f"Dask's logs in logs/bert-preprocess-{job_id}-dask.log" in log
    assert dask_processes_of(out) == ""


def test_the_dask_cluster_is_shut_down_when_the_job_is_signalled(slurm, corpus_dir, vocab_file, tmp_path):
    out = tmp_path / "data"
    job_id = submit_dask_preprocessing(slurm, corpus_dir, vocab_file, out)
    deadline = time.time() + 120
    while "Dask workers on nodeB" not in log_of(job_id, "bert-preprocess") and time.time() < deadline:
        time.sleep(0.2)
    # What the time limit sends the batch script (it sends the steps the same, which only hastens their end).
    subprocess.run(["scancel", "--signal=TERM", "--batch", job_id], env=slurm, check=True)
    info = wait_for(slurm, job_id, states=("FAILED", "CANCELLED", "COMPLETED"), timeout=120)
    assert info["JobState"] != "COMPLETED"
    assert "stopped by a signal; shutting the Dask cluster down" in log_of(job_id, "bert-preprocess")
    assert dask_processes_of(out) == "" and not list(out.glob(".dask-*"))


def test_phase_1_then_phase_2_chain(slurm, dataset, tmp_path):
    (ROOT / "logs").mkdir(exist_ok=True)
    args = " ".join(pretrain_args(dataset, steps=20))
    env = {**slurm, "NODES": "2", "GPUS_PER_NODE": "0", "CPUS_PER_TASK": "1", "RUN_ROOT": str(tmp_path),
           "PHASE1_CONFIG": "configs/tiny-cpu.yaml", "PHASE2_CONFIG": "configs/tiny-cpu.yaml",
           "PHASE1_ARGS": args, "PHASE2_ARGS": args, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["slurm/bert-large.sh"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    phase1, phase2 = proc.stdout.split()
    assert job(slurm, phase2)["Dependency"].startswith(f"afterok:{phase1}")
    wait_for(slurm, phase1)
    wait_for(slurm, phase2)
    assert (RunDir(tmp_path / "phase1").export / "model.safetensors").exists()
    assert (RunDir(tmp_path / "phase2").export / "model.safetensors").exists()
    log2 = log_of(phase2, "bert-phase2")
    assert "resumed" not in log2 and "finished at step 20" in log2


def test_daemons_that_ignore_sigterm_are_killed(tmp_path):
    """The fixture's way out: a daemon deaf to SIGTERM is still gone after the grace period."""
    deaf = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('up', flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
    assert deaf.stdout.readline().strip() == b"up"
    (tmp_path / "deaf.pid").write_text(str(deaf.pid))
    started = time.time()
    stop_daemons([tmp_path / "deaf.pid", tmp_path / "never-written.pid"], grace=1)
    assert deaf.wait(timeout=10) == -signal.SIGKILL and time.time() - started < 5
