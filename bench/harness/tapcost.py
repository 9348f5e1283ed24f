"""Issue 13: a tapper that never reads does not slow the data path. Instructions per request of the
meshwork pair under callgrind (as `callgrind.py` measures them) with no tap, with a tap on each
sidecar that reads every event, and with a tap on each sidecar that never reads: its socket buffer
fills, the sidecar's stream stops being written and its bounded queue overwrites (counted as lost).
Publishing never waits for a reader, so the stalled case must cost no more than the reading one;
both cost more than no tap (an event is built and queued per request while anyone taps).
"""

import socket
import threading
import time

import callgrind
import meshwork
from paths import MESH_STATE
from procs import stop

MODES = ("none", "reading", "stalled")


class Tap:
    """One `GET /tap` on a sidecar's admin listener; `read` drains it on a thread, else nothing does."""

    def __init__(self, admin: str, read: bool):
        host, port = admin.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer: the stalled reader's window closes after a few events.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        self.sock.sendall(f"GET /tap HTTP/1.1\r\nHost: {admin}\r\n\r\n".encode())
        self.received = 0
        if read:
            threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.received += len(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def _attach(mode: str):
    if mode == "none":
        return None

    def setup(state):
        taps = [Tap(r["admin"], read=mode == "reading") for r in meshwork.read_ready(state).values()]
        time.sleep(1.0)  # the subscriptions are open before the first request
        return taps

    return setup


def run(n: int = 2000, hop: str = "h2") -> list[dict]:
    callgrind.CALLGRIND.mkdir(parents=True, exist_ok=True)
    out = []
    for mode in MODES:
        state = MESH_STATE / f"tapcost-{hop}-{mode}"
        control = meshwork.start_control(state)
        try:
            runs = [callgrind._one_run(k, hop, state, setup=_attach(mode), label=f"-tap-{mode}") for k in (0, n)]
        finally:
            stop([control])
        total = lambda r: sum(r["instructions"].values())  # noqa: E731
        out.append({"mode": mode, "hop": hop, "requests": n,
                    "per_request": total(runs[1]) / n,
                    "marginal_per_request": (total(runs[1]) - total(runs[0])) / n,
                    "failed_before_route": runs[1]["failed_before_route"]})
    return out
