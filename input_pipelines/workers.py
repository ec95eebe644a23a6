"""Input worker processes that end with the process that started them.

grain's mp_prefetch workers (spawned processes, about 300 MB each) outlived a training process
killed with SIGKILL or by the OOM killer: reparented to PID 1 they waited on their full output
queues for good, and each crash left its set behind. `exit_with_parent` (mp_prefetch's
worker_init_fn) starts a watchdog thread in each worker that ends the worker within a fraction of a
second of its parent's death.

Why not prctl(PR_SET_PDEATHSIG): Linux sends that signal when the *thread* that forked the child
exits, not the process, and grain starts its workers from short-lived prefetch threads
(grain-thread-prefetch-*): they exit on set_state() while the same worker processes carry on, so
the signal would kill healthy workers. The watchdog instead blocks on multiprocessing's parent
sentinel (a pipe from the parent that reads EOF once the parent is gone; a process handle on
Windows) and confirms the death by os.getppid() changing (reparenting), polled every `poll_s`
seconds as well, so it works wherever multiprocessing does.

multiprocessing's resource_tracker process (also a child of the training process) needs nothing:
it exits by itself, unlinking the shared memory left behind, once the last process holding its
pipe (the parent and the workers) is gone.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time

POLL_S = 0.5  # the longest a worker outlives its parent where the sentinel gives no signal


def exit_with_parent(worker_index: int = 0, worker_count: int = 1) -> None:
    """grain worker_init_fn (worker_index, worker_count): exit this worker when its parent dies.

    A no-op outside a multiprocessing child process."""
    del worker_index, worker_count
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    if os.getppid() != parent.pid:  # died while this worker was starting
        _exit(parent.pid)
    threading.Thread(target=_watch, args=(parent.pid, parent.sentinel, POLL_S), daemon=True,
                     name="exit-with-parent").start()


def _watch(parent_pid: int, sentinel, poll_s: float) -> None:
    while True:
        if sentinel is not None:
            try:
                ready = multiprocessing.connection.wait([sentinel], timeout=poll_s)
            except (OSError, ValueError):  # the sentinel was closed under us: poll only
                ready, sentinel = [], None
            if ready:
                # EOF comes while the parent exits, just before its children are reparented;
                # poll closely from here (also where the parent merely closed its end).
                sentinel, poll_s = None, min(poll_s, 0.02)
        else:
            time.sleep(poll_s)
        if os.getppid() != parent_pid:
            _exit(parent_pid)


def _exit(parent_pid: int) -> None:
    try:
        os.write(2, f"input worker {os.getpid()}: parent process {parent_pid} is gone; "
                    f"exiting\n".encode())
    except OSError:
        pass
    os._exit(1)
