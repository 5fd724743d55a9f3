"""systemd's notify protocol: newline-separated ``KEY=value`` datagrams to ``$NOTIFY_SOCKET``.

Small enough to speak directly (no library). The watchdog is fed by the processing loop, not by a
timer thread, so a loop that hangs stops the pings and systemd restarts the service. Outside systemd
(no ``$NOTIFY_SOCKET``) every call is a cheap no-op. Sending never raises: a lost notification must
not stop the inspection.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from loguru import logger

STATUS_MIN_INTERVAL_S = 1.0


class Notifier:
    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        # systemd asks for a ping at least every WATCHDOG_USEC; half of it leaves room for one slow step.
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._clock = clock
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._last_ping = float("-inf")
        self._last_status = ""
        self._last_status_at = float("-inf")
        self._warned = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and int(usec) > 0 else None
        if pid.isdigit() and int(pid) != os.getpid():
            watchdog = None  # the watchdog is meant for another process of the unit
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, target)
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning("cannot notify systemd at {}: {}", self.address, exc)
                return False
        return True

    def ready(self, status: str) -> None:
        """Start-up is complete: the model is loaded, the database migrated, the inbox watched."""
        self._last_status, self._last_status_at = status, self._clock()
        self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> None:
        """Called once per loop iteration; sends at most one ping per half watchdog period."""
        if self.watchdog_interval is None or self.address is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """Shown by ``systemctl status``; sent when it changed, at most once a second."""
        if self.address is None or text == self._last_status:
            return
        now = self._clock()
        if now - self._last_status_at >= STATUS_MIN_INTERVAL_S:
            self._last_status, self._last_status_at = text, now
            self.send(f"STATUS={text}")

    def waiting(self, status: str, seconds: float) -> None:
        """Still starting (waiting for the database): say why, and ask systemd for more time than
        TimeoutStartSec, so that a slow database does not get the service killed at start-up."""
        self._last_status, self._last_status_at = status, self._clock()
        usec = int((seconds + 30) * 1e6)
        self.send(f"EXTEND_TIMEOUT_USEC={usec}", f"STATUS={status}")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def reloaded(self, status: str) -> None:
        self._last_status, self._last_status_at = status, self._clock()
        self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str = "stopping: finishing the current image") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
