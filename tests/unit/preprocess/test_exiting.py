import subprocess
import sys

PROGRAM = """
import atexit, logging, sys
from preprocess.exiting import exit_now
log = logging.getLogger("job")
log.addHandler(logging.FileHandler(sys.argv[1]))
log.warning("logged before the exit")
atexit.register(lambda: open(sys.argv[2], "w").write("handler ran"))
print("summary on a pipe, still in its buffer", end="")
sys.stderr.write("error text, unflushed")
exit_now(3)
raise AssertionError("exit_now returned")
"""


def test_exit_now_keeps_the_exit_code_handlers_logs_and_buffered_output(tmp_path):
    log, marker = tmp_path / "job.log", tmp_path / "marker"
    proc = subprocess.run([sys.executable, "-c", PROGRAM, str(log), str(marker)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "summary on a pipe, still in its buffer"
    assert proc.stderr == "error text, unflushed"
    assert marker.read_text() == "handler ran"
    assert log.read_text() == "logged before the exit\n"
