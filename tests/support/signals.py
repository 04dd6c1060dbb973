"""Whether a process was sent a signal, answered at once instead of after a wait.

A signal another process sent is queued on its target before that sender's kill()
returns. So once the sender is done, a signal sent to `proc` has killed it, is still
pending, or is being acted on (the process is exiting): each can be read at once,
and a test need not sleep to give the signal time to land.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

PF_EXITING = 0x4  # include/linux/sched.h: the process is on its way out


def untouched(proc: subprocess.Popen) -> bool:
    """`proc` runs, has no signal pending and is not exiting."""
    if proc.poll() is not None:
        return False
    status = Path(f"/proc/{proc.pid}/status").read_text()
    pending = [
        int(line.split()[1], 16)
        for line in status.splitlines()
        if line.startswith(("SigPnd:", "ShdPnd:"))
    ]
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    flags = int(stat.rsplit(")", 1)[1].split()[6])  # the 9th field; comm may hold spaces
    return not any(pending) and not flags & PF_EXITING and proc.poll() is None
