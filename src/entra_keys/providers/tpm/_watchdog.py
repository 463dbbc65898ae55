"""Ends a simulator command that waits too long: the TSS's one-call API waits without limit,
and a stopped swtpm would hang the caller. (/dev/tpmrm0 is bounded by the kernel driver.)"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time

from .tcti import Tcti

__all__ = ["Watchdog"]


class Watchdog:
    """A thread that shuts down the socket a simulator command waits on past the timeout.

    Limits: it runs for swtpm and mssim TCTIs only (``for_tcti``). It does not know the TCTI's
    socket: it walks /proc/self/fd (Linux only) and shuts down every socket of this process
    whose peer is the TCTI's ``path=``, or whose TCP peer port is its port or the one after it
    (2321/2322 when none is named), whatever the host: another connection of this process to
    such a peer is cut too. It polls every quarter of the timeout (at most every 0.5 s), so a
    command fails up to that much after the timeout. Once it fired, the connection is dropped.
    """

    def __init__(self, tcti: Tcti, timeout: float) -> None:
        self.timeout = timeout
        #: When the command it watches started (``time.monotonic()``), None between commands.
        self.started: float | None = None
        #: True once it shut a socket down: the command it watched failed for lack of answer.
        self.fired = False
        self._path = tcti.socket_path
        self._ports = () if tcti.port is None else (tcti.port, tcti.port + 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="entra-keys-tpm-watchdog")
        self._thread.daemon = True
        self._thread.start()

    @classmethod
    def for_tcti(cls, tcti: Tcti, timeout: float) -> Watchdog | None:
        """A watchdog for a simulator's TCTI with a timeout; None for any other."""
        return cls(tcti, timeout) if tcti.simulator and timeout > 0 else None

    def stop(self) -> None:
        """End the thread (the connection closes)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(min(self.timeout / 4, 0.5)):
            started = self.started
            if started is not None and time.monotonic() - started > self.timeout:
                self.fired = True
                self._shutdown_sockets()

    def _shutdown_sockets(self) -> None:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if not stat.S_ISSOCK(os.fstat(int(fd)).st_mode):
                    continue
                sock = socket.socket(fileno=os.dup(int(fd)))
            except OSError:
                continue
            with sock:
                try:
                    peer = sock.getpeername()
                except OSError:
                    continue
                if self._ours(peer):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def _ours(self, peer: object) -> bool:
        """True for the simulator's unix socket, or a TCP peer on its ports."""
        if isinstance(peer, str):
            return peer == self._path
        return isinstance(peer, tuple) and peer[1] in self._ports
