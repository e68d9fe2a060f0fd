#!/usr/bin/python3
"""Lints the OpenAPI document the api serves with Redocly CLI (the version pinned in
tools/redocly, installed by scripts/bootstrap --test-tools into .tools/redocly).

Starts the api alone (the document needs no broker) on a free loopback port, fetches
/openapi.json and runs `redocly lint` on it (indented, so that findings have line numbers)
with Redocly's recommended rules. Fails on any error; prints the warnings (docs/api.md, "The
API description", says which are left and why).

Exit status 77 (ctest SKIP_RETURN_CODE) when node or npm is missing. Usage:

  /usr/bin/python3 tests/contract/lint_openapi.py --bin-dir build/bin [--redocly PATH]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import Stack  # noqa: E402

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = 77


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--redocly", default=os.environ.get(
        "IPFIXWEB_REDOCLY",
        os.path.join(os.environ.get("IPFIXWEB_TOOLS_DIR", os.path.join(SOURCE, ".tools")),
                     "redocly", "node_modules", ".bin", "redocly")))
    ap.add_argument("--keep", action="store_true", help="keep the data directory and document")
    args = ap.parse_args()

    if not shutil.which("node") or not shutil.which("npm"):
        print("SKIP: node and npm are needed for Redocly CLI", flush=True)
        return SKIP
    if not os.access(args.redocly, os.X_OK):
        print(f"FAIL: no Redocly CLI at {args.redocly}: run scripts/bootstrap --test-tools",
              flush=True)
        return 1

    stack = Stack(args.bin_dir, keep=args.keep, prefix="ipfixweb-lint-")
    failed = True
    try:
        stack.start_api()
        stack.wait_http("/livez")
        status, headers, body = stack.request("GET", "/openapi.json")
        if status != 200 or not headers.get("content-type", "").startswith("application/json"):
            print(f"FAIL: GET /openapi.json answered {status} {headers.get('content-type')}")
            return 1
        doc = os.path.join(stack.dir, "openapi.json")
        with open(doc, "w") as f:
            json.dump(json.loads(body), f, indent=1)
        env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true",
                   NO_COLOR="1")
        run = subprocess.run([args.redocly, "lint", doc, "--format=stylish"], cwd=stack.dir,
                             env=env, capture_output=True, text=True, timeout=300)
        out = run.stdout + run.stderr
        print(out, flush=True)
        # stylish: "  1415:19  error    nullable-type-sibling  The `type` field ..."
        errors = re.findall(r"^\s*\d+:\d+\s+error\s+(\S+)", out, re.M)
        warnings = re.findall(r"^\s*\d+:\d+\s+warning\s+(\S+)", out, re.M)
        print(f"redocly lint: exit {run.returncode}, {len(errors)} errors, {len(warnings)} warnings"
              f" ({', '.join(sorted(set(warnings))) or 'none'})", flush=True)
        failed = run.returncode != 0 or len(errors) > 0
        print("1 passed, 0 failed" if not failed else "0 passed, 1 failed", flush=True)
        return 1 if failed else 0
    finally:
        stack.down(failed)


if __name__ == "__main__":
    sys.exit(main())
