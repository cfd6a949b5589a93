from pretrain.distributed import World, first_host, world_from_env


def test_srun_variables_become_torch_distributed_ones(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-10],login")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    w = world_from_env()
    assert w == World(rank=5, local_rank=1, size=8)
    import os

    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] == str(29500 + 242)
    assert first_host("nodeA") == "nodeA" and first_host("n[1,3]") == "n1"
