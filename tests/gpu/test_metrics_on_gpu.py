"""The step's device-side instruments on a GPU: the optimizer-step timer and the host-sync counter
(pretrain.metrics). Skipped without CUDA (``bench/gpu_check.sh`` runs these)."""

import time
import warnings

import pytest
import torch

from pretrain.metrics import DeviceTimer, HostSyncs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_host_syncs_counts_each_call_that_makes_the_host_wait_and_only_those():
    x = torch.randn(4096, device="cuda")
    syncs = HostSyncs()
    with syncs.counting():
        y = (x * 2 + 1).sum()  # queued, nothing read
        z = torch.zeros((), device="cuda") + y
    assert syncs.read() == 0
    with syncs.counting():
        for _ in range(3):
            float(z)
    assert syncs.read() == 3
    with syncs.counting():
        x[x > 0]  # boolean-mask indexing: the host waits for the count
    assert syncs.read() >= 1
    with pytest.warns(UserWarning, match="passed on"), syncs.counting():
        warnings.warn("passed on", UserWarning, stacklevel=1)
    assert syncs.read() == 0 and torch.cuda.get_sync_debug_mode() == 0  # left as it was


def test_device_timer_times_the_device_without_making_the_host_wait():
    a = torch.randn(4096, 4096, device="cuda")
    timer, syncs = DeviceTimer("cuda"), HostSyncs()
    torch.cuda.synchronize()
    t = time.perf_counter()
    with syncs.counting():
        for _ in range(5):
            with timer.timing():
                for _ in range(10):
                    a = torch.tanh(a @ a)
            with timer.timing(on=False):
                a = a @ a
    torch.cuda.synchronize()
    wall = time.perf_counter() - t
    assert syncs.read() == 0
    timed = timer.read()
    assert 0.5 * wall * 50 / 55 < timed <= wall  # 50 of the 55 products timed
