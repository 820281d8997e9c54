"""Crash tests: a `pipeline` process killed by SIGKILL right after it commits a given marker,
or right after its N-th object put ("put:N": between a part's data files and its marker).

The product has no crash hook: this wraps StageRun.mark_done (or Location's puts) inside the
child process only, so the kill lands at an exact point, as a real kill would, and the test
checks what a rerun redoes."""

import signal
import sys

_CHILD = """
import os, signal, sys
from manifests import storage
from pipeline.stages import base
stage, count = sys.argv[1].rsplit(":", 1)
seen, original = [0], base.StageRun.mark_done
def mark_done(self, part, stats):
    original(self, part, stats)
    if self.name == stage and part != "plan":
        seen[0] += 1
        if seen[0] >= int(count):
            os.kill(os.getpid(), signal.SIGKILL)
def wrap_put(put):
    def counted(self, *args):
        put(self, *args)
        seen[0] += 1
        if seen[0] >= int(count):
            os.kill(os.getpid(), signal.SIGKILL)
    return counted
if stage == "put":
    storage.Location.write_bytes = wrap_put(storage.Location.write_bytes)
    storage.Location.upload = wrap_put(storage.Location.upload)
else:
    base.StageRun.mark_done = mark_done
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""

KILLED = -signal.SIGKILL  # subprocess's returncode of a process ended by SIGKILL


def killed_after(marker: str, argv: list[str]) -> list[str]:
    """The command line of `pipeline ARGV...` that SIGKILLs itself after `marker` ("stage:N":
    the N-th part of that stage this process commits). Run it with executor local, so every
    part is committed in that process."""
    return [sys.executable, "-c", _CHILD, marker, *argv]
