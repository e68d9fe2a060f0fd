"""A real ipfixweb stack for the contract tests: broker, worker and api from a build's bin
directory, on free loopback ports, with a fresh data directory (removed afterwards unless kept).
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, bin_dir, keep=False, prefix="ipfixweb-contract-"):
        self.bin_dir = bin_dir
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.input = os.path.join(self.dir, "input")
        self.output = os.path.join(self.dir, "output")
        os.makedirs(self.input)
        os.makedirs(self.output)
        self.procs = {}
        self.http_port = free_port()
        self.front = free_port()
        self.back = free_port()

    def start(self, name, args):
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        p = subprocess.Popen([os.path.join(self.bin_dir, args[0])] + args[1:], stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    def start_broker(self):
        self.start("broker", ["ipfixweb-broker", "--data-dir", self.dir,
                              "--frontend", f"tcp://127.0.0.1:{self.front}",
                              "--backend", f"tcp://127.0.0.1:{self.back}",
                              "--task-log-dir", "none", "--heartbeat", "0.2"])

    def start_worker(self, slots=2):
        self.start("worker", ["ipfixweb-worker", "--data-dir", self.dir,
                              "--broker", f"tcp://127.0.0.1:{self.back}",
                              "--id", "contract-worker", "--slots", str(slots),
                              "--heartbeat", "0.2"])

    def start_api(self, extra=()):
        self.start("api", ["ipfixweb-api", "--data-dir", self.dir,
                           "--listen", f"127.0.0.1:{self.http_port}",
                           "--broker", f"tcp://127.0.0.1:{self.front}", *extra])

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def wait_http(self, path="/livez", headers=None, until=lambda status, body: status == 200,
                  timeout=30):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                status, _, body = self.request("GET", path, headers=headers)
                last = (status, body[:200])
                if until(status, body):
                    return
            except OSError as e:
                last = str(e)
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}): {self.log(name)[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{path} did not answer as expected: {last!r}")

    def request(self, method, path, body=None, headers=None, timeout=20):
        """(status, lower-cased headers, body bytes) of one request on a new connection."""
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=dict(headers or {}))
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def down(self, failed=False):
        for name in list(self.procs):
            self.stop(name)
        if failed:
            for name in ("api", "broker", "worker"):
                tail = self.log(name)[-3000:]
                if tail:
                    print(f"--- {name} log (end) ---\n{tail}", flush=True)
        if self.keep or failed:
            print(f"data directory kept: {self.dir}", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

