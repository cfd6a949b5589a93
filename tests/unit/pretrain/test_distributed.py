import os

import pytest

from pretrain.distributed import World, first_host, world_from_env

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def own_environment(monkeypatch):
    """world_from_env writes os.environ: each test gets a copy, so nothing leaks into later tests'
    subprocesses (a leaked WORLD_SIZE would make them 8-rank runs)."""
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in RANK_VARIABLES and not k.startswith("SLURM_")})


def test_srun_variables_become_torch_distributed_ones(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-10],login")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    w = world_from_env()
    assert w == World(rank=5, local_rank=1, size=8)
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] == str(29500 + 242)
    assert first_host("nodeA") == "nodeA" and first_host("n[1,3]") == "n1"


def test_a_process_on_its_own_takes_a_free_port(monkeypatch):
    import socket

    with socket.socket() as taken:  # as if another run held torch's default port
        try:
            taken.bind(("127.0.0.1", 29500))
            taken.listen()
        except OSError:  # held by another process already: taken all the same
            pass
        assert world_from_env() == World(rank=0, local_rank=0, size=1)
        port = int(os.environ["MASTER_PORT"])
        assert port != 29500
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free
    monkeypatch.setenv("MASTER_PORT", "12345")
    monkeypatch.delenv("RANK")
    world_from_env()
    assert os.environ["MASTER_PORT"] == "12345"  # a given port is kept
