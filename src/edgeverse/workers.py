"""Worker-process helpers shared by the process pools of sweeps and reproductions."""

from __future__ import annotations

import os
import threading
import time

#: Seconds between a worker's checks that the process that started it is still alive.
PARENT_POLL_S = 1.0


def _watch(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:  # the parent died (even by SIGKILL): the worker was re-parented
            os._exit(1)
        time.sleep(PARENT_POLL_S)


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: the worker exits (within :data:`PARENT_POLL_S`) once its parent process is gone,
    and leaves Ctrl-C to the parent (which stops the pool and reports the interruption in one line).

    A process pool's workers otherwise outlive a parent killed with SIGKILL, blocked on their task queue
    and holding the result store open, and print their own KeyboardInterrupt tracebacks on Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(int(parent_pid),), daemon=True, name="edgeverse-parent-watch").start()
