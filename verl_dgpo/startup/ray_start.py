"""A time limit on Ray's start-up inside verl's ``run_ppo``, with a message instead of a silent hang.

verl's ``run_ppo`` calls ``ray.init`` itself (a new local cluster, or the one at ``RAY_ADDRESS`` /
``ray_kwargs.ray_init.address``), which can wait without end for an address that does not answer. Rather
than re-building verl's ``ray.init`` arguments, :func:`bounded_ray_start` arms one alarm around the call:
when it rings and Ray is still not initialised, the start-up is abandoned with :class:`RayStartTimeout`;
when Ray is up by then (training under way), the alarm does nothing. The local CPU preset starts Ray
itself, with its own limit (``local_cpu.ray_start_timeout_s``).
"""

from __future__ import annotations

import signal
import threading
from typing import Callable


class RayStartTimeout(RuntimeError):
    """Ray did not start (or did not reach the cluster) within the limit; the message says what to check."""


def describe_target(address: str | None) -> str:
    return f"reach the Ray cluster at {address}" if address else "start a local Ray cluster"


def bounded_ray_start(call: Callable[[], None], timeout_s: float, *, is_started: Callable[[], bool],
                      address: str | None = None, key: str = "preflight.ray_start_timeout_s") -> None:
    """Run ``call`` (verl's ``run_ppo``); if ``is_started()`` is still false after ``timeout_s``, stop it.

    The alarm is a ``SIGALRM``: in the main thread only (elsewhere ``call`` runs without a limit), and
    ``timeout_s <= 0`` turns it off.
    """
    if timeout_s <= 0 or threading.current_thread() is not threading.main_thread():
        call()
        return

    def on_alarm(signum, frame):
        if not is_started():
            raise RayStartTimeout(
                f"Ray did not {describe_target(address)} within {timeout_s:g} s ({key}). Check that the address "
                f"answers (`ray status`), that its nodes have joined, and Ray's logs in /tmp/ray/session_latest/logs; "
                f"raise {key} if start-up is just slow here."
            )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
