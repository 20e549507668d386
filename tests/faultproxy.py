"""faultproxy.py -- a small fault-injecting TCP proxy for loopback tests.

    p = FaultProxy(("127.0.0.1", target_port))      # listens on 127.0.0.1:p.port
    p.set(latency=0.2)          # each chunk is delivered 0.2 s after it was read (per direction)
    p.set(bandwidth=1_000_000)  # bytes per second per direction, shared by all connections
    p.set(reset_after=5000)     # a connection is reset (RST) once 5000 bytes went through it
                                # (both directions together)
    p.set(blackhole=True)       # accept, read and discard, never connect to the target
    p.set()                     # no fault: a plain relay
    p.stats()                   # {"connections", "bytes_up", "bytes_down", "resets",
                                #  "blackholed", "open"}
    p.close()                   # stop listening and end every connection

The settings apply to connections accepted after set(); connections already open keep theirs
(so that the "next run without faults" is a clean one once the old ones are closed:
set() with drop_existing=True ends them).
Standard library only; threads, no asyncio. Run as a script for manual use:
    python3 tests/faultproxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT [--latency S]
        [--bandwidth BPS] [--reset-after N] [--blackhole]
"""

import argparse
import collections
import socket
import struct
import threading
import time

_CHUNK = 16384


class _Settings:
    __slots__ = ("latency", "bandwidth", "reset_after", "blackhole")

    def __init__(self, latency=0.0, bandwidth=0, reset_after=0, blackhole=False):
        self.latency = float(latency or 0)
        self.bandwidth = int(bandwidth or 0)
        self.reset_after = int(reset_after or 0)
        self.blackhole = bool(blackhole)


def _rst_close(sock):
    """Close with an RST instead of a FIN (SO_LINGER 0)."""
    try:
        sock.shutdown(socket.SHUT_RD)   # wakes a thread blocked in recv(); sends nothing
    except OSError:
        pass
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Conn:
    def __init__(self, proxy, client, settings):
        self.proxy = proxy
        self.client = client
        self.s = settings
        self.server = None
        self.lock = threading.Lock()
        self.moved = 0
        self.closed = False
        self.writers_done = 0
        self.threads = []

    def start(self):
        t = threading.Thread(target=self._run, daemon=True)
        t.start()
        self.threads.append(t)

    def _run(self):
        if self.s.blackhole:
            self.proxy._count("blackholed")
            try:
                while not self.closed:
                    if not self.client.recv(_CHUNK):
                        break
            except OSError:
                pass
            self.close()
            return
        try:
            self.server = socket.create_connection(self.proxy.target, timeout=10)
            self.server.settimeout(None)
        except OSError:
            self.close(reset=True)
            return
        for src, dst, key in ((self.client, self.server, "bytes_up"),
                              (self.server, self.client, "bytes_down")):
            q = collections.deque()
            cv = threading.Condition()
            r = threading.Thread(target=self._reader, args=(src, q, cv, key), daemon=True)
            w = threading.Thread(target=self._writer, args=(dst, q, cv, key), daemon=True)
            r.start()
            w.start()
            self.threads += [r, w]

    def _reader(self, src, q, cv, key):
        while not self.closed:
            try:
                data = src.recv(_CHUNK)
            except OSError:
                data = b""
            if self.s.reset_after and data:
                with self.lock:
                    room = self.s.reset_after - self.moved
                    if len(data) >= room:
                        data = data[:max(room, 0)]
                        self.moved = self.s.reset_after
                        cut = True
                    else:
                        self.moved += len(data)
                        cut = False
                if cut:
                    with cv:
                        if data:
                            q.append((time.monotonic() + self.s.latency, data))
                        q.append((time.monotonic() + self.s.latency, "reset"))
                        cv.notify()
                    return
            with cv:
                q.append((time.monotonic() + self.s.latency, data))
                cv.notify()
            if data:
                self.proxy._count(key, len(data))
            else:
                return

    def _writer(self, dst, q, cv, key):
        while True:
            with cv:
                while not q and not self.closed:
                    cv.wait(0.2)
                if self.closed:
                    return
                due, data = q.popleft()
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if data == "reset":
                # let the bytes before the cut reach the peer, then reset both sides
                time.sleep(0.05)
                if self.close(reset=True):
                    self.proxy._count("resets")
                return
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                with self.lock:
                    self.writers_done += 1
                    both = self.writers_done == 2
                if both:
                    self.close()
                return
            try:
                if self.s.bandwidth:
                    step = max(1, min(len(data), self.s.bandwidth // 50))
                    for i in range(0, len(data), step):
                        part = data[i:i + step]
                        self.proxy._throttle(key, len(part), self.s.bandwidth)
                        dst.sendall(part)
                else:
                    dst.sendall(data)
            except OSError:
                self.close()
                return

    def close(self, reset=False):
        """End the connection (RST with reset=True); False if it was already closed."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
        for s in (self.client, self.server):
            if s is None:
                continue
            if reset:
                _rst_close(s)
            else:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass
        self.proxy._forget(self)
        return True


class FaultProxy:
    def __init__(self, target, listen=("127.0.0.1", 0)):
        self.target = tuple(target)
        self._settings = _Settings()
        self._lock = threading.Lock()
        self._conns = set()
        self._stats = collections.Counter()
        self._bw_next = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def set(self, latency=0.0, bandwidth=0, reset_after=0, blackhole=False, drop_existing=True):
        with self._lock:
            self._settings = _Settings(latency, bandwidth, reset_after, blackhole)
            old = list(self._conns) if drop_existing else []
        for c in old:
            c.close()

    def _accept(self):
        while not self._closing:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                c = _Conn(self, client, self._settings)
                self._conns.add(c)
                self._stats["connections"] += 1
            c.start()

    def _throttle(self, key, n, bandwidth):
        """Wait for n bytes' share of the direction's bandwidth (a shared schedule)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._bw_next.get(key, 0.0))
            self._bw_next[key] = start + n / bandwidth
        delay = start + n / bandwidth - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _count(self, key, n=1):
        with self._lock:
            self._stats[key] += n

    def _forget(self, conn):
        with self._lock:
            self._conns.discard(conn)

    def stats(self):
        with self._lock:
            out = dict(self._stats)
            out["open"] = len(self._conns)
        for k in ("connections", "bytes_up", "bytes_down", "resets", "blackholed"):
            out.setdefault(k, 0)
        return out

    def close(self):
        self._closing = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()


def main():
    ap = argparse.ArgumentParser(description="fault-injecting TCP proxy (loopback tests)")
    ap.add_argument("listen_port", type=int)
    ap.add_argument("target")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--bandwidth", type=int, default=0)
    ap.add_argument("--reset-after", type=int, default=0)
    ap.add_argument("--blackhole", action="store_true")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    p = FaultProxy((host, int(port)), listen=("127.0.0.1", a.listen_port))
    p.set(a.latency, a.bandwidth, a.reset_after, a.blackhole)
    print(f"listening on 127.0.0.1:{p.port} -> {a.target}", flush=True)
    try:
        while True:
            time.sleep(5)
            print(p.stats(), flush=True)
    except KeyboardInterrupt:
        p.close()


if __name__ == "__main__":
    main()
