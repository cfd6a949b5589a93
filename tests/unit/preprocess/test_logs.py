"""The job's console: its own lines, not its libraries' routine ones."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# A runner's control stream to a worker, cut by the runner while the worker still listens: the
# worker's gRPC receives a GOAWAY, which gRPC's C core reports at INFO on stderr by default.
CONTROL_STREAM_CUT = """
import os, sys, threading, time
if sys.argv[1] == "job":
    from preprocess import logs
    logs.setup()
from concurrent import futures
import grpc
echo = grpc.stream_stream_rpc_method_handler(lambda requests, context: iter(requests))
server = grpc.server(futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("control", {"Control": echo}),))
port = server.add_insecure_port("localhost:0")
server.start()
channel = grpc.insecure_channel(f"localhost:{port}")
def requests():
    while True:
        yield b"x"
        time.sleep(0.05)
responses = channel.stream_stream("/control/Control")(requests())
def listen():
    try:
        for _ in responses:
            pass
    except grpc.RpcError:
        pass
threading.Thread(target=listen, daemon=True).start()
time.sleep(0.3)
server.stop(None)
time.sleep(0.5)
os._exit(0)  # as a worker leaves
"""


def stderr_of(mode: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    out = subprocess.run([sys.executable, "-c", CONTROL_STREAM_CUT, mode], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    return out.stderr


def test_grpcs_routine_connection_events_stay_off_the_jobs_console():
    reported = lambda mode: "goaway" in stderr_of(mode).lower()  # noqa: E731
    if not any(reported("plain") for _ in range(3)):  # the report races the socket's close
        pytest.skip("this gRPC does not report a cut stream at its default verbosity")
    assert not any(reported("job") for _ in range(3))
