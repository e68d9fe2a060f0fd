"""Shared by scripts/chaos, scripts/soak and tests/browser/test_ui.py: the stack as processes on loopback ports (broker,
workers each behind a TCP proxy that can cut it off, api), a small HTTP client and pcap helpers.
Python standard library only."""
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TERMINAL = ("succeeded", "failed", "cancelled")


PROG = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "ipfixweb"


def log(msg):
    print(f"{PROG}: {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- captures ------------------------------------------------------------------------------

def pcap_byte_order(head):
    """The struct byte order of a pcap file by its global header's magic (either resolution)."""
    return "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"


def read_pcap(path):
    """(global header, [(ts_sec, ts_frac, data, orig_len)]) of a pcap file of either byte order."""
    with open(path, "rb") as f:
        raw = f.read()
    head, off, recs = raw[:24], 24, []
    order = pcap_byte_order(head)
    while off + 16 <= len(raw):
        sec, usec, incl, orig = struct.unpack_from(order + "IIII", raw, off)
        recs.append((sec, usec, raw[off + 16:off + 16 + incl], orig))
        off += 16 + incl
    return head, recs


def write_pcap(path, head, recs):
    """Writes records as read_pcap gives them, in the byte order `head` says."""
    order = pcap_byte_order(head)
    with open(path, "wb") as f:
        f.write(head)
        for sec, usec, data, orig in recs:
            f.write(struct.pack(order + "IIII", sec, usec, len(data), orig))
            f.write(data)


def shifted_copies(recs, copies, start_shift=0):
    """The records `copies` times, each copy later than the one before (distinct flows)."""
    span = recs[-1][0] - recs[0][0] + 400  # past the idle timeout: copies are new flows
    out = []
    for c in range(copies):
        d = start_shift + c * span
        out.extend((s + d, u, data, orig) for s, u, data, orig in recs)
    return out


class Proxy:
    """A TCP proxy between one worker and the broker's backend. `partition()` stops every byte
    in both directions (connections stay open, new ones are accepted and get nowhere) until
    `heal()`: what a cut link looks like to both ends."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def partition(self):
        self.flowing.clear()

    def heal(self):
        self.flowing.set()

    def close(self):
        self.closed = True
        self.flowing.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(down,), daemon=True).start()

    def _connect(self, down):
        self.flowing.wait()
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            up.settimeout(None)
        except OSError:
            down.close()  # the broker is down: the worker's socket retries by itself
            return
        for a, b in ((down, up), (up, down)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Stack:
    """broker, workers w1..wN (each behind its Proxy) and api; logs in WORK/logs, data in
    WORK/data. `broker_args`, `worker_args` and `api_args` are added to their command lines."""

    def __init__(self, bin_dir, work, workers, slots, heartbeat=0.5, liveness=3):
        self.bin, self.work, self.slots = bin_dir, work, slots
        self.data = os.path.join(work, "data")
        self.logs = os.path.join(work, "logs")
        self.http = free_port()
        self.front, self.back = free_port(), free_port()
        self.procs = {}  # name -> Popen
        self.proxies = {f"w{i}": None for i in range(1, workers + 1)}
        self.lock = threading.Lock()
        self.env = dict(os.environ, IPFIXWEB_DATA_DIR=self.data)
        self.heartbeat, self.liveness = heartbeat, liveness
        self.broker_args, self.worker_args, self.api_args = [], [], []

    def _spawn(self, name, argv):
        out = open(os.path.join(self.logs, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                             start_new_session=True)
        out.close()
        with self.lock:
            self.procs[name] = p
        return p

    def start_broker(self):
        self._spawn("broker", [
            os.path.join(self.bin, "ipfixweb-broker"), "--frontend", f"tcp://127.0.0.1:{self.front}",
            "--backend", f"tcp://127.0.0.1:{self.back}", "--heartbeat", str(self.heartbeat),
            "--liveness", str(self.liveness)] + self.broker_args)

    def start_worker(self, wid):
        if self.proxies[wid] is None:
            self.proxies[wid] = Proxy(self.back)
        self._spawn(wid, [
            os.path.join(self.bin, "ipfixweb-worker"), "--broker",
            f"tcp://127.0.0.1:{self.proxies[wid].port}", "--id", wid, "--slots", str(self.slots),
            "--heartbeat", str(self.heartbeat), "--liveness", str(self.liveness)] + self.worker_args)

    def start_api(self):
        self._spawn("api", [
            os.path.join(self.bin, "ipfixweb-api"), "--listen", f"127.0.0.1:{self.http}",
            "--broker", f"tcp://127.0.0.1:{self.front}"] + self.api_args)

    def wait_up(self, timeout=30):
        """True once the api reports every worker registered."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            st, _, raw = request(self.http, "GET", "/api/v1/status")
            if st == 200:
                if len(json.loads(raw).get("workers", [])) == len(self.proxies):
                    return True
            time.sleep(0.2)
        return False

    def pid(self, name):
        with self.lock:
            p = self.procs.get(name)
        return p.pid if p is not None and p.poll() is None else None

    def start(self):
        self.start_broker()
        for wid in self.proxies:
            self.start_worker(wid)
        self.start_api()

    def kill(self, name, sig=signal.SIGKILL):
        with self.lock:
            p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return False
        p.send_signal(sig)
        if sig == signal.SIGKILL:
            p.wait()
        return True

    def stop(self):
        with self.lock:
            procs = list(self.procs.items())
        for _, p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 20
        for _, p in procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for px in self.proxies.values():
            if px:
                px.heal()
                px.close()

    def crashed(self):
        """Processes that died by themselves (not killed by the campaign): name -> status."""
        with self.lock:
            return {n: p.returncode for n, p in self.procs.items()
                    if p.poll() is not None and p.returncode not in (0, -9, -15)}


# ---- HTTP ----------------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=15):
    """(status, headers dict lower-cased, body bytes); status 0 when the api did not answer."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except (OSError, http.client.HTTPException):
        return 0, {}, b""
    finally:
        c.close()
