"""Imported once by the fork server of :mod:`tests.launch`: what a training process imports before its
first step, and that starts no thread (forking a process with threads is unsafe)."""

import deepspeed  # noqa: F401
import torch  # noqa: F401
import torch._dynamo  # noqa: F401
import torch._inductor.compile_fx  # noqa: F401  (DeepSpeed's optimizer check: torch.compile's set-up)
from deepspeed.runtime.zero.muon import muon_optimizer  # noqa: F401  (imported by every ZeRO engine)
