#!/usr/bin/python3
"""The web page (docs/ui.md) in a real headless Chromium against a real stack.

Starts broker, one worker (one slot) and the api (with a bearer token) on free loopback ports
with a fresh data directory, then drives the page through Selenium (chromedriver):

  - the /ui routes: 308 from /, Content-Type, CSP, nosniff, ETag and 304;
  - sse.js on its own against a fake event stream cut in awkward places;
  - the token dialog after the first 401; the tasks list;
  - an upload of tests/data/sample.pcap through the page (tus), the api's 422 `errors` shown
    under the fields they name, the submission, the task reaching `succeeded` live;
  - a resumed upload: half a file sent beforehand, its upload URL in localStorage as a reload
    would find it; the page goes on from the server's offset and the capture's SHA-256 is the
    file's; an upload whose connection breaks (the api killed mid-way) goes on;
  - the task view: summary cards, both charts drawn (canvas pixels read back), the flow table
    filtered (every row checked against the filter), a filter error with its position, sorting,
    the NDJSON download (parsed), the packets of one flow (an extract task, its pcap downloaded);
  - a task split across workers from the form ("Split across workers": 2): it succeeds, its page
    names its parts, a part's page links back to it (and loads no flows: they were merged); the
    live tasks list shows a split task and none of its parts;
  - the tasks list updated live (server-sent events when the api has /api/v1/events, else
    polling), a long task followed live and cancelled from the list, the service view, the
    views at 375 px, the keyboard path, an api without tokens (plain-link downloads);
  - no error in the browser console;
  - screenshots at 1280x800 (and one at 375 px) into --screenshots.

Exit status 77 (ctest SKIP_RETURN_CODE) when chromium, chromedriver or python3-selenium is
missing. Usage:

  /usr/bin/python3 tests/browser/test_ui.py --bin-dir build/bin [--screenshots docs/ui] [--keep]
"""

import argparse
import base64
import hashlib
import importlib.util
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "lib"))
from pystack import free_port, read_pcap, write_pcap  # noqa: E402

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
TOKEN = "ui-test-secret"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(SKIP)


def find_browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if not chromium:
        skip("chromium is not installed (apt-get install chromium; scripts/bootstrap --test-tools)")
    if not driver:
        skip("chromedriver is not installed (apt-get install chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        skip("python3-selenium is not installed for " + sys.executable)
    return chromium, driver


# --- captures -----------------------------------------------------------------------------------

def write_copies(src, dst, copies, mtime=None):
    """`copies` copies of a capture, each 100 s later (the same flows again, new records)."""
    header, recs = read_pcap(src)
    write_pcap(dst, header, [(sec + c * 100, frac, data, orig)
                             for c in range(copies) for sec, frac, data, orig in recs])
    if mtime is not None:
        os.utime(dst, (mtime, mtime))
    return dst


# --- the stack -----------------------------------------------------------------------------------

class Stack:
    def __init__(self, bin_dir, keep):
        self.bin_dir = bin_dir
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="ipfixweb-ui-")
        self.input = os.path.join(self.dir, "input")
        self.output = os.path.join(self.dir, "output")
        os.makedirs(self.input)
        os.makedirs(self.output)
        self.procs = []
        self.http_port = free_port()
        self.front = free_port()
        self.back = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"

    def start(self, name, args):
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        p = subprocess.Popen([os.path.join(self.bin_dir, args[0])] + args[1:], stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p))
        return p

    def up(self):
        data = ["--data-dir", self.dir]
        self.start("broker", ["ipfixweb-broker", *data, "--frontend", f"tcp://127.0.0.1:{self.front}",
                              "--backend", f"tcp://127.0.0.1:{self.back}", "--task-log-dir", "none"])
        # One slot: a long task keeps the worker busy and what comes after it waits.
        self.start("worker", ["ipfixweb-worker", *data, "--broker", f"tcp://127.0.0.1:{self.back}",
                              "--id", "ui-worker", "--slots", "1"])
        self.start_api()
        self.wait_ready()

    def start_api(self, tokens=True):
        self.api = self.start("api", ["ipfixweb-api", "--data-dir", self.dir,
                                      "--listen", f"127.0.0.1:{self.http_port}",
                                      "--broker", f"tcp://127.0.0.1:{self.front}"] +
                              (["--tokens", f"admin:{TOKEN}"] if tokens else []))

    def restart_api(self, sig=signal.SIGKILL, tokens=True):
        """Stops the api (killed: every connection breaks at once) and starts it again."""
        self.api.send_signal(sig)
        self.api.wait(timeout=15)
        self.procs = [(n, p) for n, p in self.procs if p is not self.api]
        self.start_api(tokens)
        self.wait_ready()

    def wait_ready(self):
        deadline = time.time() + 30
        last = None
        while time.time() < deadline:
            try:
                status, _, body = self.request("GET", "/readyz")
                last = body
                if status == 200 and json.loads(body)["checks"]["broker"]["workers"] >= 1:
                    return
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"the stack did not become ready: {last!r}")

    def request(self, method, path, body=None, headers=None, token=True):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {TOKEN}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def json(self, method, path, body=None):
        status, _, data = self.request(method, path, body)
        return status, (json.loads(data) if data else None)

    def down(self, failed):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if failed or self.keep:
            for name, _ in self.procs:
                path = os.path.join(self.dir, name + ".log")
                if failed and os.path.exists(path):
                    with open(path, errors="replace") as f:
                        tail = f.readlines()[-30:]
                    print(f"--- {name}.log (last lines) ---\n" + "".join(tail), file=sys.stderr)
            print(f"kept the test data directory {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- a fake event stream for sse.js ------------------------------------------------------------

class FakeEvents:
    """Serves api/ui's modules and event streams cut in awkward places, for sse.js on its own.

    /stream: the first connection sends, in pieces split inside lines and between CR and LF,
    a comment, `retry: 100`, three events (LF, CRLF and CR line endings, a multi-line data)
    and half an event (id 4, no blank line), then closes; the next connection (which must
    carry Last-Event-ID: 3) sends event 5 and `end`. /json answers JSON, /missing 404.
    """

    FIRST = [b": keep-alive\r\nretry: 100\r\n\r", b"\nevent: state\nid: 1\nda", b"ta: {\"n\":1}\n\n",
             b"event: progress\r\ndata: {\"p\":0.5}\r", b"\n\r\n", b"id: 3\rdata: a\rdata: b\r\r",
             b"event: state\nid: 4\ndata: {\"n\":4}\n"]
    SECOND = [b"event: state\nid: 5\ndata: {\"n\":5}\n\nevent: end\ndata: {}\n\n"]

    def __init__(self):
        import http.server
        import socketserver
        import threading
        fake = self
        self.connections = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status, ctype, body):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/":
                    return self.send(200, "text/html", b"<!doctype html><title>sse</title>")
                if self.path.startswith("/src/"):
                    name = os.path.basename(self.path)
                    with open(os.path.join(SOURCE, "api", "ui", name), "rb") as f:
                        return self.send(200, "text/javascript", f.read())
                if self.path == "/json":
                    return self.send(200, "application/json", b"{}")
                if self.path != "/stream":
                    return self.send(404, "application/json", b"{}")
                fake.connections.append(self.headers.get("Last-Event-ID"))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for piece in (fake.FIRST if len(fake.connections) == 1 else fake.SECOND):
                    self.wfile.write(piece)
                    self.wfile.flush()
                    time.sleep(0.03)
                self.close_connection = True

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- the test ------------------------------------------------------------------------------------

class Failure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)
    print(f"ok: {message}", flush=True)


class UiTest:
    def __init__(self, stack, chromium, driver_path, shots):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.stack = stack
        self.shots = shots
        self.downloads = os.path.join(stack.dir, "downloads")
        os.makedirs(self.downloads)
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for f in CHROMIUM_FLAGS:
            opts.add_argument(f)
        opts.add_argument("--user-data-dir=" + os.path.join(stack.dir, "chromium-profile"))
        opts.add_argument("--window-size=1280,800")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        opts.add_experimental_option("prefs", {
            "download.default_directory": self.downloads,
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        })
        self.driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        self.viewport(1280, 800)
        # Headless Chromium saves downloads only when told where.
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": self.downloads})
        self.console = []
        self.expected_network = []  # console entries of requests the test broke on purpose

    def quit(self):
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001
            pass

    # helpers
    def viewport(self, width, height):
        """The window's size such that the page itself gets width x height."""
        self.driver.set_window_size(width, height)
        inner = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        if inner != [width, height]:
            self.driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, predicate, what, timeout=20):
        deadline = time.time() + timeout
        last_error = None
        while time.time() < deadline:
            try:
                v = predicate()
                if v:
                    return v
            except Exception as e:  # noqa: BLE001 (stale elements while the page re-renders)
                last_error = e
            time.sleep(0.1)
        raise Failure(f"timed out waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))

    def css(self, selector):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector):
        els = self.all(selector)
        return els[0].text if els else ""

    def go(self, hash_):
        self.js("location.hash = arguments[0]", hash_)

    def screenshot(self, name):
        if not self.shots:
            return
        os.makedirs(self.shots, exist_ok=True)
        path = os.path.join(self.shots, name)
        self.driver.save_screenshot(path)
        print(f"screenshot {path}", flush=True)

    def collect_console(self):
        self.console.extend(self.driver.get_log("browser"))

    def stats(self):
        return self.js("return Object.assign({}, window.__ipfixweb || {})")

    def downloaded(self, name, timeout=20):
        path = os.path.join(self.downloads, name)

        def ready():
            return os.path.exists(path) and not os.path.exists(path + ".crdownload") and os.path.getsize(path) > 0
        self.wait(ready, f"the download {name}", timeout)
        return path

    def canvas_ink(self, box):
        """Pixels of the chart's canvas that are not transparent (0 when there is none)."""
        return self.js("""
            const c = document.querySelector(arguments[0] + ' canvas');
            if (!c || !c.width || !c.height) return 0;
            const copy = document.createElement('canvas');
            copy.width = c.width;
            copy.height = c.height;
            const ctx = copy.getContext('2d', {willReadFrequently: true});
            ctx.drawImage(c, 0, 0);
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
            return n;""", box)

    # --- the steps -------------------------------------------------------------------------------

    def routes(self):
        s = self.stack
        status, h, _ = s.request("GET", "/", token=False)
        check(status in (302, 308) and h.get("location") == "/ui", f"GET / redirects to /ui ({status})")
        status, h, body = s.request("GET", "/ui", token=False)
        check(status == 200 and h["content-type"].startswith("text/html"), "GET /ui is the page, without a token")
        csp = h.get("content-security-policy", "")
        for part in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
                     "base-uri 'none'", "frame-ancestors 'none'", "connect-src 'self'"):
            check(part in csp, f"CSP has {part}")
        check(h.get("x-content-type-options") == "nosniff", "X-Content-Type-Options: nosniff")
        check(b"<script type=\"module\" src=\"/ui/app.js\">" in body and b"style=" not in body,
              "index.html loads a module and has no inline style attribute")
        etag = h.get("etag", "")
        check(etag.startswith('"') and len(etag) > 10, f"strong ETag {etag}")
        status, h2, body2 = s.request("GET", "/ui", headers={"If-None-Match": etag}, token=False)
        check(status == 304 and not body2, "If-None-Match with the ETag: 304")
        status, h, _ = s.request("GET", "/ui/app.js", token=False)
        check(status == 200 and h["content-type"].startswith("text/javascript"), "app.js is JavaScript")
        status, h, _ = s.request("GET", "/ui/vendor/uPlot.esm.js", token=False)
        check(status == 200 and h["content-type"].startswith("text/javascript"), "vendor/uPlot.esm.js is served")
        status, h, _ = s.request("GET", "/ui/style.css", token=False)
        check(status == 200 and h["content-type"].startswith("text/css"), "style.css is CSS")
        status, h, _ = s.request("GET", "/ui/nothing.js", token=False)
        check(status == 404, "an unknown file is 404")
        status, _, _ = s.request("GET", "/api/v1/tasks", token=False)
        check(status == 401, "the api itself still needs the token")

    def login(self):
        d = self.driver
        d.get(self.stack.base + "/")
        self.wait(lambda: d.current_url.endswith("/ui#/tasks"), "the page at /ui#/tasks")
        self.wait(lambda: self.css("#token-dialog").get_attribute("open") is not None, "the token dialog")
        self.css("#token-input").send_keys(TOKEN)
        self.css("#token-form button[type=submit]").click()
        self.wait(lambda: self.css("#token-dialog").get_attribute("open") is None, "the dialog to close")
        self.wait(lambda: self.css("#live-mode").get_attribute("data-mode") in ("events", "polling"),
                  "the list's live mode")
        check(True, "token asked once after the 401 and the tasks list loaded")

    def submit_with_upload(self, sample):
        self.go("#/submit")
        self.wait(lambda: self.all("#file-input"), "the submit view")
        self.css("#file-input").send_keys(sample)
        row = self.wait(lambda: self.all('li.upload[data-state="done"]'), "the upload to finish", 30)[0]
        ref = row.get_attribute("data-ref")
        digest = hashlib.sha256(open(sample, "rb").read()).hexdigest()
        check(ref == "sha256:" + digest, f"uploaded through the page (tus): {ref[:20]}…")
        check(self.css("#output_path").get_attribute("value").endswith(".ipfix"), "output name suggested")
        # The api's 422 errors under their fields (the api checks values, then paths).
        self.css("#idle_timeout").send_keys("-5")
        self.css("#submit-task").click()
        self.wait(lambda: self.css("#err-idle_timeout").is_displayed(), "the idle_timeout error")
        check(self.css("#idle_timeout").get_attribute("aria-invalid") == "true",
              f"idle_timeout error under the field: {self.css('#err-idle_timeout').text!r}")
        self.css("#idle_timeout").clear()
        self.css("#idle_timeout").send_keys("60")
        self.css("#paths").send_keys("../outside.pcap")
        self.css("#submit-task").click()
        self.wait(lambda: self.css("#err-pcap_files").is_displayed(), "the pcap_files error")
        check("../outside.pcap" in self.css("#err-pcap_files").text and not self.css("#err-idle_timeout").is_displayed(),
              f"pcap_files error names the path: {self.css('#err-pcap_files').text!r}")
        self.js("document.getElementById('h-captures').scrollIntoView()")
        self.screenshot("submit.png")
        self.css("#paths").clear()
        self.css("#an-dns").click()
        self.css("#submit-task").click()
        self.wait(lambda: "#/task/" in self.driver.current_url, "the task view after submitting")
        task_id = self.driver.current_url.rsplit("/", 1)[1]
        self.wait(lambda: self.text("#task-state") == "succeeded", "the task to succeed", 60)
        check(True, f"task {task_id} submitted from the page reached succeeded")
        return task_id, digest

    def split_task(self):
        """A task split across workers from the form: the page names its parts, and a part
        links back to it."""
        self.go("#/submit")
        self.wait(lambda: self.all("#paths") and self.all("#parallelism"), "the submit view")
        self.css("#paths").send_keys("sample.pcap")
        self.css("#output_path").clear()
        self.css("#output_path").send_keys("split.ipfix")
        self.css("#parallelism").send_keys("2")
        self.css("#submit-task").click()
        self.wait(lambda: "#/task/" in self.driver.current_url, "the split task's view")
        task_id = self.driver.current_url.rsplit("/", 1)[1]
        self.wait(lambda: self.text("#task-state") == "succeeded", "the split task to succeed", 60)
        meta = self.text("#task-meta")
        check("2, on as many workers, then merged" in meta, f"the task names its parts: {meta!r}")
        self.wait(lambda: len(self.all('#task-parts li[data-state="succeeded"]')) == 2,
                  "its two parts listed as succeeded")
        check(True, f"its parts listed on its page: {self.text('#task-parts')!r}")
        self.screenshot("task-split.png")
        status, _, body = self.stack.request("GET", f"/api/v1/tasks?parent={task_id}")
        parts = json.loads(body)["tasks"] if status == 200 else []
        check(len(parts) == 2 and all(p["state"] == "succeeded" for p in parts),
              f"its 2 parts succeeded ({[p['state'] for p in parts]})")
        self.go(f"#/task/{parts[0]['task_id']}")
        link = self.wait(lambda: self.all(f'#task-meta a[href="#/task/{task_id}"]'),
                         "the part's link to its task")[0]
        link.click()
        self.wait(lambda: self.driver.current_url.endswith(f"#/task/{task_id}"), "back at the task")
        check(True, "a part's page links to the task it is part of")
        # The list, kept live by the parts' events too, shows the task and none of its parts.
        self.go("#/tasks")
        self.wait(lambda: self.all("#live-mode") and self.css("#live-mode").get_attribute("data-mode")
                  in ("events", "polling"), "the tasks list")
        status, _, body = self.stack.request("POST", "/api/v1/tasks", body={
            "pcap_files": ["sample.pcap"], "output_path": "split-live.ipfix", "parallelism": 2})
        live = json.loads(body)["task_id"] if status == 202 else ""
        check(bool(live), f"a second split task submitted beside the list ({status})")
        self.wait(lambda: self.all(f'tr[data-task-id="{live}"][data-state="succeeded"]'),
                  "the split task's row to reach succeeded", 60)
        time.sleep(0.5)  # the parts' last events
        status, _, body = self.stack.request("GET", f"/api/v1/tasks?parent={live}")
        part_ids = [p["task_id"] for p in json.loads(body)["tasks"]]
        shown = [p for p in part_ids if self.all(f'tr[data-task-id="{p}"]')]
        check(len(part_ids) == 2 and not shown, f"no part in the live list (shown: {shown})")

    def resumed_upload(self, sample):
        s = self.stack
        path = os.path.join(s.dir, "resume.pcap")
        write_copies(sample, path, 40, mtime=1700000000)
        size = os.path.getsize(path)
        data = open(path, "rb").read()
        half = size // 2
        meta = "filename " + base64.b64encode(b"resume.pcap").decode()
        status, h, _ = s.request("POST", "/api/v1/uploads", headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Upload-Metadata": meta})
        check(status == 201, "a tus upload created beside the page")
        url = urllib.parse.urlparse(h["location"]).path
        status, h, _ = s.request("PATCH", url, body=data[:half], headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        check(status == 204 and h.get("upload-offset") == str(half), f"half of it sent ({half} bytes)")
        # What the page stored before the connection broke (the key: name, size, lastModified).
        self.go("#/submit")
        self.js("localStorage.setItem(arguments[0], arguments[1])",
                f"ipfixweb.tus:resume.pcap:{size}:{1700000000 * 1000}", url)
        self.driver.refresh()
        self.wait(lambda: self.all("#file-input"), "the submit view after a reload")
        self.css("#file-input").send_keys(path)
        row = self.wait(lambda: self.all('li.upload[data-name="resume.pcap"][data-state="done"]'),
                        "the resumed upload", 30)[0]
        check(row.get_attribute("data-resumed-from") == str(half),
              f"the page resumed at the server's offset {row.get_attribute('data-resumed-from')}")
        check(row.get_attribute("data-ref") == "sha256:" + hashlib.sha256(data).hexdigest(),
              "the resumed capture's SHA-256 is the file's")

    def broken_upload(self, sample):
        """An upload whose connection breaks (the api killed and started again) goes on."""
        path = os.path.join(self.stack.dir, "broken.pcap")
        write_copies(sample, path, 200)  # 15 MB
        self.collect_console()
        before = len(self.console)
        size = os.path.getsize(path)
        self.go("#/submit")
        self.wait(lambda: self.all("#file-input"), "the submit view")
        # 3 MB/s: the upload takes about five seconds, long enough to break it in the middle.
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 3 * 1024 * 1024})
        try:
            self.css("#file-input").send_keys(path)
            row = 'li.upload[data-name="broken.pcap"]'
            self.wait(lambda: float(self.css(row + " progress").get_attribute("value")) > 0.2, "a fifth uploaded")
            self.stack.restart_api()
            self.wait(lambda: "retrying" in self.css(row + " .upload-status").text
                      or "resuming" in self.css(row + " .upload-status").text
                      or self.css(row).get_attribute("data-state") == "done", "the page noticing the break")
            self.wait(lambda: self.css(row).get_attribute("data-state") in ("done", "failed"), "the upload to go on", 60)
        finally:
            self.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
                "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        # The broken requests are network errors in the console: provoked here, not the page's.
        self.collect_console()
        self.expected_network += [e for e in self.console[before:] if e.get("source") == "network"]
        check(self.css(row).get_attribute("data-state") == "done" and
              int(self.css(row).get_attribute("data-recoveries")) > 0,
              f"upload went on after the api was killed mid-way ({self.css(row).get_attribute('data-recoveries')}"
              " recoveries: HEAD for the offset, then PATCH from there)")
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        check(self.css(row).get_attribute("data-ref") == "sha256:" + digest,
              f"the capture's SHA-256 is the file's ({size} bytes)")

    def sse_parser(self):
        """sse.js against streams cut anywhere (a page of the fake server's own, no api)."""
        fake = FakeEvents()
        self.collect_console()
        before = len(self.console)
        try:
            self.driver.get(fake.base + "/")
            result = self.driver.execute_async_script("""
                const done = arguments[arguments.length - 1];
                (async () => {
                  const {openEventStream} = await import('/src/sse.js');
                  const events = [];
                  const s = openEventStream('/stream', {onEvent: (t, d, id) => events.push([t, d, id])});
                  const how = await s.done;
                  const other = [];
                  for (const u of ['/missing', '/json'])
                    other.push(await openEventStream(u, {onUnsupported: (st) => other.push(st)}).done);
                  done({how, events, other});
                })().catch((e) => done({error: String(e)}));""")
        finally:
            fake.close()
        # That page's own 404s (/missing on purpose, its favicon) are not the web page's.
        self.collect_console()
        self.expected_network += [e for e in self.console[before:] if fake.base in e.get("message", "")]
        check("error" not in result, f"sse.js ran ({result.get('error', '')})")
        check(result["events"] == [["state", '{"n":1}', "1"], ["progress", '{"p":0.5}', "1"],
                                   ["message", "a\nb", "3"], ["state", '{"n":5}', "5"], ["end", "{}", "5"]],
              f"events parsed across pieces and line endings, the cut one dropped: {result['events']}")
        check(fake.connections == [None, "3"], f"reconnected with Last-Event-ID of the last whole event: {fake.connections}")
        check(result["how"] == "end" and result["other"] == [404, "unsupported", 200, "unsupported"],
              f"`end` ends the stream; 404 and a JSON answer mean no stream: {result['other']}")

    def task_view(self, task_id):
        self.go(f"#/task/{task_id}")
        self.wait(lambda: self.text("#task-state") == "succeeded", "the task view")
        packets = self.wait(lambda: self.css('[data-card="packets"] .card-value').text, "the summary cards")
        check(packets == "347", f"summary card: {packets} packets")
        check(self.all('[data-card="flows"]') and self.all('[data-card="applications"]'), "flows and applications cards")
        events = self.wait(lambda: len(self.all("#timeline li")) >= 3 and self.all("#timeline li"), "the history")
        states = [e.find_element("css selector", ".badge").text for e in events]
        check(states[0] == "queued" and states[-1] == "succeeded", f"timeline {states}")
        self.wait(lambda: len(self.all("#flow-table tbody tr[data-flow]")) > 0, "the flow table")
        self.wait(lambda: self.canvas_ink("#top-chart") > 500, "the top-N chart's pixels")
        self.wait(lambda: self.canvas_ink("#ts-chart") > 500, "the time series chart's pixels")
        check(True, f"charts drawn: top {self.canvas_ink('#top-chart')} px, series {self.canvas_ink('#ts-chart')} px")
        self.screenshot("task.png")
        self.js("document.getElementById('flow-filter').scrollIntoView()")
        time.sleep(0.3)
        self.screenshot("task-flows.png")
        self.js("window.scrollTo(0, 0)")

        # A filter with an error shows the message and the position.
        f = self.css("#flow-filter")
        f.clear()
        f.send_keys("bytes 5")
        self.css("form.flow-filter button[type=submit]").click()
        self.wait(lambda: self.css("#flow-filter-error").is_displayed(), "the filter error")
        check("comparison operator" in self.css("#flow-filter-error").text and self.all("#flow-filter-error mark"),
              f"filter error shown with its position: {self.css('#flow-filter-error .error-line').text!r}")

        # A real filter: every row shown matches it, on every page.
        f.clear()
        f.send_keys("proto tcp")
        self.css("form.flow-filter button[type=submit]").click()
        self.wait(lambda: not self.css("#flow-filter-error").is_displayed(), "the error to go")

        def rows():
            cells = self.all('#flow-table tbody tr[data-flow] td[data-col="proto_name"]')
            return cells if cells and all(c.text for c in cells) else None
        self.wait(lambda: rows() and all(c.text == "tcp" for c in rows()), "only tcp rows")
        seen = 0
        while True:
            protos = [c.text for c in rows()]
            check(protos and all(p == "tcp" for p in protos), f"{len(protos)} rows on this page, all tcp")
            seen += len(protos)
            nxt = self.css("#flow-next")
            if not nxt.is_enabled():
                break
            first = self.css("#flow-table tbody tr[data-flow]").get_attribute("data-flow")
            nxt.click()
            self.wait(lambda: self.css("#flow-table tbody tr[data-flow]").get_attribute("data-flow") != first, "the next page")
        _, total = self.stack.json("GET", f"/api/v1/tasks/{task_id}/flows?filter=proto%20tcp&limit=10000&fields=id")
        check(seen == len(total["flows"]), f"paged through all {seen} tcp flows")

        # Sorting by bytes, descending, done by the api.
        self.css('button.sort[data-sort="bytes"]').click()
        self.wait(lambda: self.css('th[aria-sort]').get_attribute("aria-sort") == "descending", "the sort")

        def byte_values():
            return [int(c.text.replace(",", "").replace("\u202f", "").replace(" ", ""))
                    for c in self.all('#flow-table tbody tr[data-flow] td[data-col="bytes"]')]
        self.wait(lambda: byte_values() == sorted(byte_values(), reverse=True) and len(byte_values()) > 1, "rows by bytes")
        check(True, "sorted by bytes, descending")

        # The NDJSON download (the table's filter applies).
        self.css('a[data-download="ndjson"]').click()
        nd = self.downloaded(os.path.basename(self.css('a[data-download="ndjson"]').get_attribute("download")))
        records = [json.loads(line) for line in open(nd) if line.strip()]
        check(records and all(r["proto_name"] == "tcp" for r in records) and len(records) == seen,
              f"NDJSON downloaded and parsed: {len(records)} tcp records")

        # The packets of one flow: an extract task, followed, its pcap downloaded.
        first = self.css("#flow-table tbody tr[data-flow]")
        flow = first.get_attribute("data-flow")
        first.find_element("css selector", "td.pcap-cell button").click()
        pcap = self.downloaded(f"flow-{flow}.pcap", 60)
        with open(pcap, "rb") as fh:
            magic = fh.read(4)
        check(magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"),
              f"packets of flow {flow} downloaded as a pcap ({os.path.getsize(pcap)} bytes)")

    def live_list(self, sse):
        self.go("#/tasks")
        mode = self.wait(lambda: self.css("#live-mode").get_attribute("data-mode") in ("events", "polling")
                         and self.css("#live-mode").get_attribute("data-mode"), "the live mode")
        if sse:
            check(mode == "events", "the list follows server-sent events")
        else:
            check(mode == "polling", "no /api/v1/events on this api: the list polls")
        before = self.stats()
        status, body = self.stack.json("POST", "/api/v1/tasks", {
            "pcap_files": ["sample.pcap"], "output_path": "live.ipfix", "DPI": True})
        check(status == 202, "a task submitted beside the page")
        tid = body["task_id"]
        sel = f'tr[data-task-id="{tid}"]'
        self.wait(lambda: self.all(sel), "the new task's row, without a reload")
        self.wait(lambda: self.css(sel).get_attribute("data-state") == "succeeded", "the row to show succeeded", 60)
        after = self.stats()
        if sse:
            check(after["sseEvents"] > before["sseEvents"] and after["listLoads"] == before["listLoads"],
                  f"the row came from events ({after['sseEvents'] - before['sseEvents']} events, no list reload)")
        else:
            check(after["polls"] > before["polls"], "the row came from polling")
        return tid

    def cancel_long(self, sample):
        s = self.stack
        # sample.pcap 3,000 times (1M packets, 232 MB) converts in about a second here; read 30
        # times over (hard links: a task may not name one file twice) it takes half a minute.
        long_pcap = write_copies(sample, os.path.join(s.input, "long.pcap"), 3000)
        names = []
        for i in range(30):
            name = f"long-{i}.pcap"
            os.link(long_pcap, os.path.join(s.input, name))
            names.append(name)
        status, body = s.json("POST", "/api/v1/tasks", {
            "pcap_files": names, "output_path": "long.ipfix", "DPI": True})
        check(status == 202, "a long task submitted")
        long_id = body["task_id"]
        # A second task waits behind it (one slot).
        status, body = s.json("POST", "/api/v1/tasks", {
            "pcap_files": ["sample.pcap"], "output_path": "behind.ipfix", "DPI": True})
        behind = body["task_id"]
        self.go("#/tasks")
        row = f'tr[data-task-id="{long_id}"]'
        self.wait(lambda: self.all(row) and self.css(row).get_attribute("data-state") == "running",
                  "the long task running", 30)
        self.wait(lambda: self.all(f'tr[data-task-id="{behind}"]')
                  and self.css(f'tr[data-task-id="{behind}"]').get_attribute("data-state") == "queued",
                  "the next task queued behind it")
        if self.sse:
            self.wait(lambda: float(self.css(row + " progress").get_attribute("value")) > 0,
                      "the running task's progress bar to move (progress events)", 30)
            check(True, "the list's progress bar follows progress events")
        self.screenshot("tasks.png")
        # Its own view follows it live too: history, then state and progress as they come.
        self.go(f"#/task/{long_id}")
        self.wait(lambda: self.text("#task-state") == "running", "the long task's view")
        if self.sse:
            self.wait(lambda: self.css("#task-live").get_attribute("data-mode") == "events", "its event stream")
        before = float(self.css("#task-progress").get_attribute("value"))
        self.wait(lambda: float(self.css("#task-progress").get_attribute("value")) > before,
                  "its progress to move without a reload", 30)
        states = [e.text for e in self.all("#timeline li .badge")]
        check(states == ["queued", "running"], f"the task view follows it live ({states}, progress moving)")
        self.go("#/tasks")
        self.wait(lambda: self.all(row + ' button[data-action="cancel"]'), "the list again")
        self.css(row + ' button[data-action="cancel"]').click()
        self.wait(lambda: self.css(row).get_attribute("data-state") == "cancelled", "the long task cancelled", 30)
        status, t = s.json("GET", f"/api/v1/tasks/{long_id}")
        check(t["state"] == "cancelled" and t["finished_at"], "cancelled from the list (the api agrees)")
        self.wait(lambda: self.css(f'tr[data-task-id="{behind}"]').get_attribute("data-state") == "succeeded",
                  "the queued task to run once the slot is free", 60)
        check(True, "the task behind it ran")

    def service(self):
        self.go("#/service")
        self.wait(lambda: self.all('[data-card="workers"] .card-value') and
                  self.css('[data-card="workers"] .card-value').text == "1", "the service view")
        self.wait(lambda: self.css("#admission").get_attribute("data-state") == "open", "admission state")
        has_status = self.stack.request("GET", "/api/v1/status")[0] == 200
        if has_status:
            self.wait(lambda: self.all("#worker-table tbody tr"), "the workers table")
            check("ui-worker" in self.css("#worker-table").text, "the worker is listed")
            self.wait(lambda: "tasks/s" in self.css("#throughput").text, "the throughput")
            self.wait(lambda: self.canvas_ink("#throughput-chart") > 100, "the throughput chart")
        check(True, "service view: workers, admission" + (", throughput" if has_status else " (from /readyz)"))
        self.screenshot("service.png")

    def phone(self, task_id):
        self.viewport(375, 812)
        self.go("#/tasks")
        self.wait(lambda: self.all("#task-table tbody tr"), "the list at 375 px")
        time.sleep(0.3)
        width = self.js("return document.documentElement.scrollWidth")
        check(width <= 375, f"no horizontal scrolling of the list at 375 px ({width} px)")
        self.screenshot("tasks-375.png")
        self.go(f"#/task/{task_id}")
        self.wait(lambda: self.canvas_ink("#top-chart") > 500 and self.canvas_ink("#ts-chart") > 500,
                  "the task view's charts at 375 px")
        time.sleep(0.5)  # the charts follow their boxes' width
        width = self.js("return document.documentElement.scrollWidth")
        check(width <= 375, f"no horizontal scrolling of the task view at 375 px ({width} px)")
        self.go("#/submit")
        self.wait(lambda: self.all("#submit-task"), "the submit view at 375 px")
        width = self.js("return document.documentElement.scrollWidth")
        check(width <= 375, f"no horizontal scrolling of the submit view at 375 px ({width} px)")
        self.viewport(1280, 800)

    def keyboard(self):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys
        self.go("#/tasks")
        self.driver.refresh()
        self.wait(lambda: self.all("#task-table tbody tr"), "the list after a reload")

        def tab():
            ActionChains(self.driver).send_keys(Keys.TAB).perform()
            return self.js("""const e = document.activeElement;
                return [e.tagName, (e.textContent || e.id || '').trim().slice(0, 24),
                        getComputedStyle(e).outlineStyle];""")
        first = tab()
        check(first[1] == "Skip to content", f"Tab reaches the skip link first ({first})")
        seen = [tab() for _ in range(45)]
        labels = [f"{t}:{x}" for t, x, _ in seen]
        for want in ("A:Tasks", "A:Submit", "A:Service", "A:New task", "BUTTON:Apply", "BUTTON:Resubmit"):
            check(want in labels, f"{want} is reachable with Tab")
        plain = [f"{t}:{x}" for t, x, o in seen if o == "none" and t != "BODY"]  # BODY: past the end
        check(not plain, f"every element focused by keyboard shows an outline (not: {plain})")

    def without_token(self, task_id):
        """An api without tokens: "Forget token", then downloads are plain links."""
        self.collect_console()
        before = len(self.console)
        self.stack.restart_api(signal.SIGTERM, tokens=False)
        self.go("#/tasks")
        self.wait(lambda: self.css("#live-mode").get_attribute("data-mode") in ("events", "polling"),
                  "the list from the restarted api")
        # Requests while the api was down (the list's event stream reconnecting) are refused.
        self.collect_console()
        self.expected_network += [e for e in self.console[before:]
                                  if e.get("source") == "network" and "net::ERR_" in e.get("message", "")]
        self.wait(lambda: self.css("#token-button").is_displayed(), "the Forget token button")
        self.css("#token-button").click()
        self.wait(lambda: not self.css("#token-button").is_displayed(), "the token forgotten")
        check(self.js("return sessionStorage.getItem('ipfixweb.token')") is None, "Forget token empties sessionStorage")
        self.go(f"#/task/{task_id}")
        self.wait(lambda: self.all('a[data-download="csv"]'), "the downloads")
        check("fetched whole into memory" not in self.css("#downloads").text, "no token: downloads are plain links")
        before = set(os.listdir(self.downloads))
        self.css('a[data-download="csv"]').click()

        def new_csv():
            done = [f for f in set(os.listdir(self.downloads)) - before
                    if f.endswith(".csv") and not f.endswith(".crdownload")]
            return done and os.path.getsize(os.path.join(self.downloads, done[0])) > 0 and done[0]
        name = self.wait(new_csv, "the CSV download")
        with open(os.path.join(self.downloads, name)) as f:
            header = f.readline()
        check("proto_name" in header and not self.css("#token-dialog").get_attribute("open"),
              f"CSV downloaded through a plain link, no token asked ({name})")

    def no_console_errors(self, sse, status):
        self.collect_console()
        bad = []
        for e in self.console:
            if e.get("level") != "SEVERE":
                continue
            msg = e.get("message", "")
            # The network layer reports every 4xx answer; these are the ones the test provokes:
            # the first request without a token (401), the submissions it makes invalid (422)
            # and the filter with an error (422); and, on an api without them, the probes of
            # the event stream and of /api/v1/status (404) before the page falls back.
            if e in self.expected_network:
                continue
            if e.get("source") == "network":
                if "status of 401" in msg or "status of 422" in msg:
                    continue
                if "status of 404" in msg and ((not sse and "/api/v1/events" in msg) or
                                               (not status and "/api/v1/status" in msg)):
                    continue
            bad.append(msg)
        for e in self.console:
            print(f"console {e.get('level')} {e.get('source')}: {e.get('message')}", flush=True)
        check(not bad, f"no errors in the browser console ({len(self.console)} entries; unexpected: {bad})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.environ.get("IPFIXWEB_BIN_DIR", os.path.join(SOURCE, "build", "bin")))
    ap.add_argument("--screenshots", default=os.environ.get("IPFIXWEB_UI_SCREENSHOTS", ""),
                    help="directory for the PNG screenshots (none when empty)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    chromium, driver = find_browser()
    for b in ("ipfixweb-api", "ipfixweb-broker", "ipfixweb-worker"):
        if not os.access(os.path.join(args.bin_dir, b), os.X_OK):
            print(f"FAIL: {b} not found in {args.bin_dir} (--bin-dir)", file=sys.stderr)
            return 1
    sample = os.path.join(SOURCE, "tests", "data", "sample.pcap")
    stack = Stack(args.bin_dir, args.keep)
    shutil.copy(sample, os.path.join(stack.input, "sample.pcap"))
    ui = None
    failed = True
    try:
        stack.up()
        sse = probe_events(stack)
        print(f"server-sent events: {'yes' if sse else 'no (the page polls)'}", flush=True)
        ui = UiTest(stack, chromium, driver, args.screenshots)
        ui.sse = sse
        ui.routes()
        ui.sse_parser()
        ui.login()
        task_id, _ = ui.submit_with_upload(sample)
        ui.resumed_upload(sample)
        ui.broken_upload(sample)
        ui.task_view(task_id)
        ui.split_task()
        ui.live_list(sse)
        ui.cancel_long(sample)
        ui.service()
        ui.phone(task_id)
        ui.keyboard()
        ui.without_token(task_id)
        ui.no_console_errors(sse, stack.request("GET", "/api/v1/status")[0] == 200)
        failed = False
        print("PASS", flush=True)
        return 0
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    finally:
        if ui:
            if failed:
                try:
                    path = os.path.join(stack.dir, "failure.png")
                    ui.driver.save_screenshot(path)
                    print(f"screenshot of the failure: {path}", file=sys.stderr)
                    ui.collect_console()
                    for e in ui.console:
                        print(f"console {e.get('level')}: {e.get('message')}", file=sys.stderr)
                except Exception:  # noqa: BLE001
                    pass
            ui.quit()
        stack.down(failed)


def probe_events(stack):
    """Whether the api has GET /api/v1/events (the first bytes of the stream, or a 404)."""
    c = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=5)
    c.request("GET", "/api/v1/events", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"})
    r = c.getresponse()
    ok = r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream")
    c.close()
    return ok


if __name__ == "__main__":
    sys.exit(main())
