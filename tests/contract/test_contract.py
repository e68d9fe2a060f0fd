#!/usr/bin/python3
"""The API contract: every answer of a real stack is one its OpenAPI document describes.

Starts broker, one worker and the api (with read and admin tokens, small body limits so that
the limits are cheap to reach, one event stream at most) from a build's bin directory on free
loopback ports, fetches /openapi.json and then:

  - checks every example in the document against its schema;
  - sends requests built from the document's own examples (path, query and header parameters,
    request bodies), with real ids where an example names something that must exist, and
    broken variants of them for the error answers;
  - for every answer: its status is one the operation documents, its Content-Type one the
    answer documents, its body validates against that schema (JSON bodies with
    python3-jsonschema, the document's OpenAPI 3.0 schemas turned into JSON Schema) and the
    headers the answer says are required are there (Retry-After, Location, WWW-Authenticate,
    tus headers);
  - every secured operation answers 401 without a token, every operation documenting 403 does
    with a read token; the HTTP server's own 400, 413 and 431;
  - at the end, prints which documented statuses of each operation were seen, and fails when
    an operation was never exercised.

Exit status 77 (ctest SKIP_RETURN_CODE) when python3-jsonschema is missing. Usage:

  /usr/bin/python3 tests/contract/test_contract.py --bin-dir build/bin [--keep]
"""

import argparse
import base64
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import traceback
import urllib.parse
from collections import defaultdict

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import Stack  # noqa: E402

SKIP = 77
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(SOURCE, "tests", "data")
ADMIN = "contract-admin-secret"
READ = "contract-read-secret"
MAX_BODY = 8192
MAX_OTHER_BODY = 4096
MAX_CAPTURE = 200000
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
JSON_TYPES = ("application/json", "application/problem+json")


class ContractError(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise ContractError(message)


# --- OpenAPI 3.0 schemas as JSON Schema (draft 7) ------------------------------------------------

def to_json_schema(node):
    """nullable becomes a null type; boolean exclusiveMinimum/Maximum (3.0) numbers (draft 7)."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items()
           if k not in ("nullable", "example", "examples", "discriminator", "xml",
                        "externalDocs", "deprecated", "readOnly", "writeOnly")}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if node.get(bound) is True and limit in node:
            out[bound] = node[limit]
            del out[limit]
        elif node.get(bound) is False:
            del out[bound]
    if node.get("nullable") is True:
        if any(k in out for k in ("allOf", "anyOf", "oneOf", "$ref")):
            return {"anyOf": [{"type": "null"}, out]}
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    return out


class Contract:
    def __init__(self, doc):
        import jsonschema
        self.jsonschema = jsonschema
        self.doc = doc
        self.schema_doc = to_json_schema(doc)
        self.resolver = jsonschema.RefResolver("", self.schema_doc)
        self.seen = defaultdict(set)  # (method, path) -> statuses seen

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ptr = node["$ref"][2:].split("/")
            node = self.doc
            for part in ptr:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def validate(self, instance, schema, what):
        s = to_json_schema(schema)
        v = self.jsonschema.Draft7Validator(
            s, resolver=self.resolver, format_checker=self.jsonschema.draft7_format_checker)
        errors = sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            raise ContractError(f"{what}: {e.message} at {'/'.join(map(str, e.absolute_path))}"
                                f" (instance {json.dumps(instance)[:400]})")

    def operations(self):
        for path, ops in self.doc["paths"].items():
            for method, op in ops.items():
                if method in METHODS:
                    yield method, path, op

    def op(self, method, path):
        return self.doc["paths"][path][method]

    # Every example in the document validates against its schema.
    def check_examples(self):
        count = 0

        def walk(node, where):
            nonlocal count
            if isinstance(node, dict):
                if "schema" in node and "example" in node:
                    self.validate(node["example"], node["schema"], f"example at {where}")
                    count += 1
                if "example" in node and ("type" in node or "allOf" in node) \
                        and "schema" not in node:
                    self.validate(node["example"], node, f"schema example at {where}")
                    count += 1
                for k, v in node.items():
                    walk(v, f"{where}/{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{where}/{i}")
        walk(self.doc["paths"], "#/paths")
        walk(self.doc["components"], "#/components")
        return count

    def check_answer(self, method, path, status, headers, body):
        op = self.op(method, path)
        what = f"{method.upper()} {path} -> {status}"
        responses = op["responses"]
        check(str(status) in responses,
              f"{what}: status not documented (documented: {sorted(responses)}); "
              f"body {body[:300]!r}")
        r = self.resolve(responses[str(status)])
        for name, h in (r.get("headers") or {}).items():
            h = self.resolve(h)
            if h.get("required"):
                check(name.lower() in headers, f"{what}: required header {name} missing")
            if name.lower() in headers and "schema" in h:
                value = headers[name.lower()]
                if h["schema"].get("type") == "integer":
                    check(re.fullmatch(r"\d+", value) is not None,
                          f"{what}: header {name} is not an integer: {value!r}")
                    value = int(value)
                self.validate(value, h["schema"], f"{what}: header {name}")
        content = r.get("content")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "head" or status in (204, 304):
            check(not body, f"{what}: a body where none is documented")
        elif not content:
            check(not body, f"{what}: a body ({ctype}) where none is documented: {body[:200]!r}")
        else:
            check(ctype in content, f"{what}: Content-Type {ctype!r} not documented "
                                    f"({sorted(content)})")
            schema = content[ctype].get("schema")
            if ctype in JSON_TYPES and schema is not None:
                try:
                    value = json.loads(body)
                except ValueError as e:
                    raise ContractError(f"{what}: not JSON ({e}): {body[:200]!r}")
                self.validate(value, schema, what)
        self.seen[(method, path)].add(str(status))

    def report(self):
        print("\ncoverage: operation: statuses seen / documented", flush=True)
        missing_ops = []
        pairs = seen_pairs = 0
        for method, path, op in self.operations():
            documented = sorted(op["responses"])
            seen = sorted(self.seen.get((method, path), ()))
            pairs += len(documented)
            seen_pairs += len(seen)
            if not seen:
                missing_ops.append(f"{method.upper()} {path}")
            unseen = [s for s in documented if s not in seen]
            print(f"  {method.upper():7} {path:45} seen {','.join(seen) or '-':32} "
                  f"not seen {','.join(unseen) or '-'}", flush=True)
        print(f"{len(list(self.operations())) - len(missing_ops)} of "
              f"{len(list(self.operations()))} operations, {seen_pairs} of {pairs} documented "
              f"(operation, status) pairs answered for real", flush=True)
        return missing_ops


# --- The test -------------------------------------------------------------------------------------

class Client:
    """Requests built from the document's examples, checked against it."""

    def __init__(self, stack, contract):
        self.stack = stack
        self.c = contract
        self.count = 0

    def build(self, method, path, params=None, query=None, headers=None, examples=True):
        op = self.c.op(method, path)
        params = dict(params or {})
        query = dict(query or {})
        out_headers = {}
        target = path
        q = []
        for p in op.get("parameters", []):
            p = self.c.resolve(p)
            name, where = p["name"], p["in"]
            if where == "path":
                value = params.get(name, p.get("example"))
                check(value is not None, f"{method} {path}: no value for path parameter {name}")
                target = target.replace("{" + name + "}", urllib.parse.quote(str(value), safe=""))
            elif where == "query":
                if name in query:
                    value = query.pop(name)
                elif examples and "example" in p:
                    value = p["example"]
                else:
                    continue
                if value is None:
                    continue
                if isinstance(value, list):
                    value = ",".join(map(str, value))
                q.append((name, str(value)))
            elif where == "header" and p.get("required") and "example" in p:
                out_headers[name] = str(p["example"])
        q.extend((k, str(v)) for k, v in query.items() if v is not None)
        if q:
            target += "?" + urllib.parse.urlencode(q)
        out_headers.update(headers or {})
        return target, out_headers

    def example_body(self, method, path):
        body = self.c.op(method, path).get("requestBody", {}).get("content", {})
        return json.loads(json.dumps(body["application/json"]["example"]))

    def call(self, method, path, expect=None, params=None, query=None, headers=None, body=None,
             token=ADMIN, target=None, examples=True):
        built, h = self.build(method, path, params, query, headers, examples)
        target = target or built
        if token:
            h.setdefault("Authorization", f"Bearer {token}")
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        status, rh, data = self.stack.request(method.upper(), target, body=body, headers=h)
        self.count += 1
        if expect is not None:
            allowed = expect if isinstance(expect, (set, tuple, list)) else {expect}
            check(status in allowed, f"{method.upper()} {target}: {status}, expected {expect}: "
                                     f"{data[:400]!r}")
        self.c.check_answer(method, path, status, rh, data)
        parsed = None
        if rh.get("content-type", "").split(";")[0] in JSON_TYPES and data:
            parsed = json.loads(data)
        return status, rh, parsed if parsed is not None else data

    # An event stream: the status and header only (the stream itself is left open or closed).
    def open_stream(self, path, params=None, query=None, token=ADMIN):
        target, h = self.build("get", path, params, query)
        h["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.http_port, timeout=10)
        conn.request("GET", target, headers=h)
        r = conn.getresponse()
        headers = {k.lower(): v for k, v in r.getheaders()}
        return conn, r, headers


def wait_for(what, fn, timeout=60, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise ContractError(f"timed out waiting for {what}")


def run(stack, args):
    shutil.copy(os.path.join(DATA, "sample.pcap"), os.path.join(stack.input, "sample.pcap"))
    with open(os.path.join(DATA, "sample.pcap"), "rb") as f:
        sample = f.read()
    with open(os.path.join(DATA, "tiny.pcap"), "rb") as f:
        tiny = f.read()
    stack.start_broker()
    stack.start_worker(slots=2)
    api_args = ["--tokens", f"admin:{ADMIN},read:{READ}", "--max-body", str(MAX_BODY),
                "--max-other-body", str(MAX_OTHER_BODY), "--max-capture-size", str(MAX_CAPTURE),
                "--max-event-streams", "1", "--broker-timeout", "1"]
    stack.start_api(api_args)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    stack.wait_http("/readyz", headers=auth, until=lambda s, b: s == 200 and json.loads(b)[
        "checks"]["broker"]["workers"] >= 1)

    status, headers, body = stack.request("GET", "/openapi.json", headers=auth)
    check(status == 200, f"/openapi.json: {status}")
    contract = Contract(json.loads(body))
    n = contract.check_examples()
    print(f"ok: {n} examples in the document validate against their schemas", flush=True)
    api = Client(stack, contract)
    T = "/api/v1/tasks"

    # --- Service routes
    for path in ("/livez", "/readyz", "/metrics", "/openapi.json", "/api/v1/test/health",
                 "/api/v1/status"):
        api.call("get", path, 200)

    # --- Tokens: 401 without one on every secured operation, 403 with a read token where the
    # document says a larger role is needed.
    for method, path, op in contract.operations():
        secured = op.get("security", contract.doc.get("security")) != []
        if secured:
            api.call(method, path, 401, token=None, examples=False)
        if "403" in op["responses"]:
            api.call(method, path, 403, token=READ, examples=False)
    print("ok: 401 without a token, 403 with a read token where documented", flush=True)

    # --- The HTTP server's own answers
    api.call("get", T, 431, headers={"X-Padding": "x" * 9000})
    api.call("get", T + "/{id}", 400, target=T + "/%zz")
    api.call("post", T, 413, body=b"{" + b" " * (MAX_BODY + 100) + b"}",
             headers={"Content-Type": "application/json"})
    api.call("get", "/api/v1/status", 413, body=b"x" * (MAX_OTHER_BODY + 100))
    print("ok: 400, 413 and 431 from the HTTP server", flush=True)

    # --- Submissions, built from the example request
    example = api.example_body("post", T)
    _, h, first = api.call("post", T, 202, body=example)
    check(h.get("location") == f"{T}/{first['task_id']}", "202 without its Location")
    task = first["task_id"]
    idem = dict(example, output_path="idem.ipfix")
    key_param = [p for p in contract.op("post", T)["parameters"] if p["name"] ==
                 "Idempotency-Key"][0]
    key = {"Idempotency-Key": key_param["example"]}
    _, _, a1 = api.call("post", T, 202, body=idem, headers=key)
    _, _, a2 = api.call("post", T, 200, body=idem, headers=key)
    check(a2["task_id"] == a1["task_id"] and a2["existing"] is True, "idempotent resubmission")
    api.call("post", T, 409, body=example)  # sample.ipfix belongs to the first task
    _, _, p = api.call("post", T, 422, body=dict(idem, DPI=False), headers=key)
    check(p["errors"][0]["field"] == "Idempotency-Key", f"a key reused names the key: {p}")
    api.call("post", T, 400, body=b"{not json", headers={"Content-Type": "application/json"})
    api.call("post", T, 415, body=json.dumps(example).encode(),
             headers={"Content-Type": "text/plain"})
    _, _, p = api.call("post", T, 422, body=dict(example, pcap_files=["../x.pcap"]))
    check(p["errors"][0]["field"] == "pcap_files[0]", f"422 names the field: {p}")
    _, _, p = api.call("post", T, 422, body=dict(example, output_path="u.ipfix", idle_timout=3))
    check(any(e["field"] == "idle_timout" for e in p["errors"]), f"unknown field named: {p}")
    _, _, p = api.call("post", T, 422, body=dict(example, output_path="k.ipfix"),
                       headers={"Idempotency-Key": "k" * 300})
    check(p["errors"][0]["field"] == "Idempotency-Key", f"422 names the header: {p}")
    api.call("post", "/api/export-task", 202,
             body=dict(example, output_path="compat.ipfix", not_a_field=1))
    api.call("post", "/api/export-task", 400, body=b"[", headers={"Content-Type": "application/json"})
    api.call("post", "/api/v1/test/file_exporter/export_task", 202)

    def terminal(tid):
        def done():
            s, _, t = api.call("get", T + "/{id}", 200, params={"id": tid})
            return t if t["state"] in ("succeeded", "failed", "cancelled") else None
        return wait_for(f"task {tid}", done)

    check(terminal(task)["state"] == "succeeded", "the example task succeeds")
    print("ok: submissions (202, 200, 400, 409, 413, 415, 422)", flush=True)

    # --- Reading tasks
    api.call("get", T + "/{id}", 404)  # the example id names no task
    api.call("get", "/api/task-status/{id}", 200, params={"id": task})
    api.call("get", "/api/task-status/{id}", 404)
    _, _, page = api.call("get", T, 200)  # state, created_after, input, limit from examples
    check(any(t["task_id"] == task for t in page["tasks"]), "the list has the task")
    api.call("get", T, 422, query={"limit": 0})
    api.call("get", T, 422, query={"state": "sleeping"}, examples=False)
    api.call("get", "/api/tasks", 200)
    api.call("get", "/api/tasks", 422, query={"next": "x"}, examples=False)

    # --- Events
    E = T + "/{id}/events"
    api.call("get", E, 200, params={"id": task})
    api.call("get", E, 404)
    api.call("get", E, 400, params={"id": task}, query={"stream": "1", "since": "x"})
    _, h, frames = api.call("get", E, 200, params={"id": task}, query={"stream": "1"})
    check(h["content-type"].startswith("text/event-stream") and b"event: end" in frames,
          "a finished task's stream is its history and its end")
    # (the finished task's stream may take a moment to give its place back)
    for _ in range(50):
        conn, r, h = api.open_stream("/api/v1/events")
        if r.status != 503:
            break
        conn.close()
        time.sleep(0.1)
    try:
        contract.check_answer("get", "/api/v1/events", r.status, h, b"")
        check(r.status == 200 and h["content-type"].startswith("text/event-stream"), "a stream")
        api.call("get", "/api/v1/events", 503)  # --max-event-streams 1: this one is refused
    finally:
        conn.close()
    api.call("get", "/api/v1/events", 400, query={"since": "-1"}, examples=False)
    print("ok: events (200 JSON and streams, 400, 404, 503)", flush=True)

    # --- Downloads and the flow store
    _, h, data = api.call("get", T + "/{id}/output", 200, params={"id": task})
    check(h["content-type"] == "application/ipfix" and data[:2] == b"\x00\x0a", "an IPFIX file")
    api.call("get", T + "/{id}/output", 404)
    F = T + "/{id}/flows"
    _, _, flows = api.call("get", F, 200, params={"id": task})  # filter, fields, sort, limit
    check(len(flows["flows"]) > 0 and set(flows["flows"][0]) == {"src", "dst", "proto_name",
                                                                   "bytes"}, f"fields: {flows}")
    _, _, p = api.call("get", F, 422, params={"id": task}, query={"filter": "bytes >"})
    check("position" in p["errors"][0], f"a filter error has its position: {p}")
    api.call("get", F, 422, params={"id": task}, query={"sort": "nope"})
    api.call("get", F, 404)
    _, h, _ = api.call("get", F, 200, params={"id": task},
                       headers={"Accept": "application/x-ndjson"})
    _, _, nd = api.call("get", F + ".ndjson", 200, params={"id": task}, query={"fields": None},
                        examples=False)
    lines = [json.loads(x) for x in nd.decode().splitlines() if x]
    check(lines, "NDJSON records")
    for i, rec in enumerate(lines):
        contract.validate(rec, {"$ref": "#/components/schemas/Flow"}, f"NDJSON record {i}")
    api.call("get", F + ".ndjson", 422, params={"id": task}, query={"fields": "nope"})
    api.call("get", F + ".csv", 200, params={"id": task})
    api.call("get", F + ".csv", 404)
    _, h, db = api.call("get", F + ".sqlite", 200, params={"id": task})
    check(db[:16] == b"SQLite format 3\x00", "a SQLite file")
    api.call("get", F + ".sqlite", 404)
    for by in contract.resolve(
            [p for p in contract.op("get", T + "/{id}/top")["parameters"]
             if p["name"] == "by"][0])["schema"]["enum"]:
        api.call("get", T + "/{id}/top", 200, params={"id": task}, query={"by": by})
    _, _, top = api.call("get", T + "/{id}/top", 200, params={"id": task},
                         query={"by": " APP ", "metric": "Packets"})
    check(top["by"] == "app" and top["metric"] == "packets", f"the names as defined: {top}")
    api.call("get", T + "/{id}/top", 422, params={"id": task}, query={"by": "nope"})
    api.call("get", T + "/{id}/top", 404)
    api.call("get", T + "/{id}/timeseries", 200, params={"id": task})
    api.call("get", T + "/{id}/timeseries", 200, params={"id": task}, query={"by": "proto"})
    api.call("get", T + "/{id}/timeseries", 422, params={"id": task}, query={"by": "src"})
    api.call("get", T + "/{id}/timeseries", 404)
    print("ok: output and flow routes (200, 404, 422)", flush=True)

    # --- One flow's packets: an extract task
    P = T + "/{id}/flows/{flow}/pcap"
    _, _, x = api.call("post", P, 202, params={"id": task})
    api.call("post", P, 200, params={"id": task})
    api.call("post", P, 404, params={"id": task, "flow": 999999})
    api.call("post", P, 404)
    check(terminal(x["task_id"])["state"] == "succeeded", "the extract task succeeds")
    _, h, _ = api.call("get", T + "/{id}/output", 200, params={"id": x["task_id"]})
    check(h["content-type"] == "application/vnd.tcpdump.pcap", "an extract's output is a pcap")

    # --- Cancelling
    api.call("delete", T + "/{id}", 409, params={"id": task})
    api.call("delete", T + "/{id}", 404)
    # (cancelled while queued or running; 409 should it have finished first)
    _, _, c = api.call("post", T, 202, body=dict(example, output_path="cancel.ipfix"))
    api.call("delete", T + "/{id}", (200, 202, 409), params={"id": c["task_id"]})
    terminal(c["task_id"])

    # --- 410: the output replaced by a task that may overwrite it
    _, _, b = api.call("post", T, 202, body=dict(example, overwrite=True))
    check(terminal(b["task_id"])["state"] == "succeeded", "the overwriting task succeeds")
    for path in (T + "/{id}/output", F, F + ".ndjson", F + ".csv", F + ".sqlite",
                 T + "/{id}/top", T + "/{id}/timeseries"):
        api.call("get", path, 410, params={"id": task}, query={"by": "app"} if "top" in path or
                 "series" in path else None)
    api.call("post", P, 410, params={"id": task})

    # --- 500: a damaged flow store
    _, _, d = api.call("post", T, 202, body=dict(example, output_path="damaged.ipfix"))
    check(terminal(d["task_id"])["state"] == "succeeded", "the task succeeds")
    with open(os.path.join(stack.output, "damaged.ipfix.flows.sqlite"), "r+b") as f:
        f.write(b"this is no longer a SQLite database" * 4)
    for path in (F, F + ".ndjson", F + ".csv", T + "/{id}/top", T + "/{id}/timeseries"):
        api.call("get", path, 500, params={"id": d["task_id"]},
                 query={"by": "app"} if "top" in path or "series" in path else None)
    print("ok: extract, cancel (200/202, 404, 409), 409 and 410 and 500 of the flow routes",
          flush=True)

    # --- Captures
    C = "/api/v1/captures"
    octet = {"Content-Type": "application/octet-stream"}
    _, h, cap = api.call("post", C, 201, body=sample, headers=octet)  # ?name= from the example
    check(h["location"] == f"{C}/{cap['sha256']}" and cap["name"] == "trace.pcap", "stored")
    _, _, again = api.call("post", C, 200, body=sample, headers=octet)
    check(again["existing"] is True, "the same content again")
    api.call("post", C, 415, body=b"GIF89a" + b"\x00" * 200, headers=octet)
    _, _, p = api.call("post", C, 422, body=tiny, headers=octet, query={"sha256": "0" * 64})
    check(p["errors"][0]["field"] == "sha256", f"the digest is named: {p}")
    _, _, p = api.call("post", C, 422, body=b"", headers=octet)
    check(p["errors"][0]["field"] == "Content-Length", f"an empty upload: {p}")
    api.call("post", C, 413, body=b"\x00" * (MAX_CAPTURE + 1000), headers=octet)
    api.call("post", C, 400, body=b"x", headers={"Content-Type": "multipart/form-data"})
    boundary = "contract-boundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"tiny.pcap\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + tiny + f"\r\n--{boundary}--\r\n".encode()
    _, _, tcap = api.call("post", C, 201, body=form, query={"name": None}, examples=False,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    api.call("get", C, 200)
    api.call("get", C, 422, query={"limit": 0})
    api.call("get", C + "/{sha256}", 200, params={"sha256": cap["sha256"]})
    api.call("get", C + "/{sha256}", 404)
    api.call("delete", C + "/{sha256}", 204, params={"sha256": tcap["sha256"]})
    api.call("delete", C + "/{sha256}", 404, params={"sha256": tcap["sha256"]})
    print("ok: captures (200, 201, 204, 400, 404, 413, 415, 422)", flush=True)

    # --- Resumable uploads (tus 1.0.0)
    U = "/api/v1/uploads"
    api.call("options", U, 204)
    _, _, p = api.call("post", U, 412, headers={"Tus-Resumable": "0.2.2", "Upload-Length": "10"})
    check(p["title"] == "Precondition Failed", f"412's title is its reason phrase: {p}")
    api.call("post", U, 400)  # no Upload-Length
    _, _, p = api.call("post", U, 422, headers={"Upload-Length": "0"})
    check(p["errors"][0]["field"] == "Upload-Length", f"an empty upload: {p}")
    api.call("post", U, 413, headers={"Upload-Length": str(MAX_CAPTURE + 1)})
    meta = "filename " + base64.b64encode(b"resumed.pcap").decode()
    _, h, _ = api.call("post", U, 201, headers={"Upload-Length": str(len(tiny)),
                                                "Upload-Metadata": meta})
    uid = h["location"].rsplit("/", 1)[1]
    api.call("head", U + "/{id}", 200, params={"id": uid})
    api.call("head", U + "/{id}", 404)
    api.call("head", U + "/{id}", 412, params={"id": uid}, headers={"Tus-Resumable": "0.2.2"})
    half = len(tiny) // 2
    chunk = {"Content-Type": "application/offset+octet-stream"}
    api.call("patch", U + "/{id}", 204, params={"id": uid}, body=tiny[:half], headers=chunk)
    api.call("patch", U + "/{id}", 409, params={"id": uid}, body=tiny[:half], headers=chunk)
    api.call("patch", U + "/{id}", 415, params={"id": uid}, body=tiny[half:],
             headers={"Content-Type": "text/plain", "Upload-Offset": str(half)})
    api.call("patch", U + "/{id}", 400, params={"id": uid}, body=tiny[half:],
             headers=dict(chunk, **{"Upload-Offset": "x"}))
    wrong = base64.b64encode(hashlib.sha1(b"other bytes").digest()).decode()
    api.call("patch", U + "/{id}", 460, params={"id": uid}, body=tiny[half:],
             headers=dict(chunk, **{"Upload-Offset": str(half),
                                    "Upload-Checksum": f"sha1 {wrong}"}))
    api.call("patch", U + "/{id}", 413, params={"id": uid}, body=tiny[half:] + b"extra",
             headers=dict(chunk, **{"Upload-Offset": str(half)}))
    _, _, st = api.call("get", U + "/{id}", 200, params={"id": uid})
    check(st["offset"] == half and not st["complete"], f"the upload's state: {st}")
    right = base64.b64encode(hashlib.sha1(tiny[half:]).digest()).decode()
    _, h, _ = api.call("patch", U + "/{id}", 204, params={"id": uid}, body=tiny[half:],
                       headers=dict(chunk, **{"Upload-Offset": str(half),
                                              "Upload-Checksum": f"sha1 {right}"}))
    check("content-location" in h, "a complete upload names its capture")
    _, _, st = api.call("get", U + "/{id}", 200, params={"id": uid})
    check(st["complete"] and st["capture"]["name"] == "resumed.pcap", f"complete: {st}")
    api.call("patch", U + "/{id}", 409, params={"id": uid}, body=b"x",
             headers=dict(chunk, **{"Upload-Offset": str(len(tiny))}))
    api.call("get", U + "/{id}", 404)
    api.call("patch", U + "/{id}", 404, body=b"x", headers=chunk)
    _, h, _ = api.call("post", U, 201, headers={"Upload-Defer-Length": "1"})
    gone = h["location"].rsplit("/", 1)[1]
    api.call("delete", U + "/{id}", 204, params={"id": gone})
    api.call("delete", U + "/{id}", 404, params={"id": gone})
    api.call("delete", U + "/{id}", 412, params={"id": gone}, headers={"Tus-Resumable": "x"})
    print("ok: resumable uploads (200, 201, 204, 400, 404, 409, 412, 413, 415, 422, 460)",
          flush=True)

    # --- Drop folder, web page
    api.call("get", "/api/v1/drop", 200)
    api.call("get", "/api/v1/drop", 422, query={"limit": 0})
    api.call("get", "/", 308, token=None)
    _, h, _ = api.call("get", "/ui", 200, token=None)
    _, h, _ = api.call("get", "/ui/{file}", 200, token=None)
    api.call("get", "/ui/{file}", 304, token=None, headers={"If-None-Match": h["etag"]})
    api.call("get", "/ui/{file}", 404, token=None, params={"file": "nothing.js"})
    api.call("get", "/ui/vendor/{file}", 200, token=None)
    api.call("get", "/ui/vendor/{file}", 404, token=None, params={"file": "nothing.js"})

    # --- A queued task (no worker): its capture cannot be removed, it has no output yet
    stack.stop("worker")
    wait_for("the broker to lose its worker", lambda: json.loads(stack.request(
        "GET", "/api/v1/status", headers=auth)[2])["broker"]["workers"] == 0, timeout=20)
    _, _, q = api.call("post", T, 202, body=dict(example, pcap_files=[cap["ref"]],
                                                 output_path="queued.ipfix"))
    api.call("delete", C + "/{sha256}", 409, params={"sha256": cap["sha256"]})
    for path in (T + "/{id}/output", F, F + ".ndjson", F + ".csv", F + ".sqlite",
                 T + "/{id}/top", T + "/{id}/timeseries"):
        api.call("get", path, 409, params={"id": q["task_id"]},
                 query={"by": "app"} if "top" in path or "series" in path else None)
    api.call("post", P, 409, params={"id": q["task_id"]})
    _, _, cancelled = api.call("delete", T + "/{id}", 200, params={"id": q["task_id"]})
    check(cancelled["result"] == "cancelled", f"a queued task is cancelled at once: {cancelled}")

    # --- The broker gone: 503 with Retry-After where the api needs it
    stack.stop("broker")
    api.call("post", T, 503, body=dict(example, output_path="nobroker.ipfix"))
    api.call("post", "/api/export-task", 503, body=dict(example, output_path="nobroker2.ipfix"))
    api.call("post", "/api/v1/test/file_exporter/export_task", 503)
    api.call("post", P, 503, params={"id": b["task_id"]})
    api.call("delete", T + "/{id}", 503, params={"id": task})
    api.call("get", "/readyz", 503)
    _, _, s = api.call("get", "/api/v1/status", 200)
    check(s["broker"] == {"up": False}, f"status without a broker: {s['broker']}")
    api.call("get", "/metrics", 200)
    print("ok: a queued task (409s), the broker down (503 + Retry-After, readyz 503)", flush=True)

    # --- An api whose database is not there yet (the broker creates it) and no broker: 503
    # with Retry-After wherever the database or the broker is needed
    bare = Stack(args.bin_dir, keep=args.keep, prefix="ipfixweb-contract-bare-")
    try:
        shutil.copy(os.path.join(DATA, "sample.pcap"), os.path.join(bare.input, "sample.pcap"))
        bare.start_api(["--broker-timeout", "1"])
        bare.wait_http("/livez")
        alone = Client(bare, contract)
        for path in (T + "/{id}", "/api/task-status/{id}", T + "/{id}/events",
                     T + "/{id}/output", F, F + ".csv", F + ".ndjson", F + ".sqlite",
                     T + "/{id}/top", T + "/{id}/timeseries", T, "/api/tasks",
                     "/api/v1/events", "/readyz"):
            alone.call("get", path, 503, token=None)
        alone.call("post", P, 503, token=None)
        alone.call("delete", T + "/{id}", 503, token=None)
        alone.call("post", T, 503, token=None, body=example)
        alone.call("get", "/api/v1/status", 200, token=None)
        api.count += alone.count
    finally:
        bare.down()
    print("ok: without a database or a broker: 503 with Retry-After", flush=True)

    missing = contract.report()
    print(f"{api.count} requests checked against the document", flush=True)
    check(not missing, f"operations never exercised: {missing}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    if importlib.util.find_spec("jsonschema") is None:
        print(f"SKIP: python3-jsonschema is not installed for {sys.executable}", flush=True)
        return SKIP
    stack = Stack(args.bin_dir, keep=args.keep)
    failed = True
    try:
        run(stack, args)
        failed = False
    except Exception:  # noqa: BLE001 - any failure is the test's
        traceback.print_exc()
    finally:
        stack.down(failed)
    print("1 passed, 0 failed" if not failed else "0 passed, 1 failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
