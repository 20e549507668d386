#!/usr/bin/python3
"""fakeapi.py -- a test double of the Xtremepush import API (HTTPS, HTTP/1.1).

Serves the shapes of /work/shared/docs/xtremepush-api.md:
  POST /api/external/import/profile   upsert profiles (200 below 100 rows, 202 + task from 100)
  POST /api/external/info/task        one task
  POST /api/external/list/task        tasks, with condition / order / limit / offset
and, for tests, without a token:
  GET  /_admin/health                 {"ok": true, "requests": N}
  GET  /_admin/requests[?since=SEQ][&rows=0]   every API request received, in order
  GET  /_admin/profiles               {user_id: {attribute: value}}
  GET  /_admin/faults                 the faults still pending
  POST /_admin/faults                 [fault, ...]: replaces the pending faults; one is used
                                      by each following import/profile request
  POST /_admin/task_outcome           {"status": "failed"|"complete", "task_delay"?: seconds}
  POST /_admin/reset                  forget requests, profiles, tasks, faults, task outcome

Usage:
  fakeapi.py --cert CERT --key KEY --token-file FILE --attributes a:string,b:number
             [--port 0] [--port-file PATH] [--task-delay 0.3] [--no-rows] [--verbose]

The apptoken is never echoed: request records only say whether it matched.
Standard library only.
"""

import argparse
import gc
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import itemgetter
from urllib.parse import parse_qs, urlsplit

SYSTEM_ATTRIBUTES = frozenset((
    "user_id", "email", "email_subscription", "mobile_number", "sms_subscription",
    "language", "timezone", "whatsapp_number", "whatsapp_subscription",
))
ATTRIBUTE_TYPES = frozenset(("string", "number", "integer", "date", "array", "boolean"))
MAX_ROWS = 10000
ASYNC_ROWS = 100
MAX_BODY = 256 * 1024 * 1024
MAX_ERRORS = 100            # errors listed per 400 response
TASK_IDENTIFIER = "profile_import"
TASK_FIELDS = ("id", "identifier", "status", "create_time", "finish_time", "message")
TASK_OUTCOMES = ("complete", "failed")
FAULT_KEYS = frozenset(("status", "retry_after", "delay", "drop", "drop_after_upsert",
                        "message", "errors"))

PATH_IMPORT = "/api/external/import/profile"
PATH_INFO = "/api/external/info/task"
PATH_LIST = "/api/external/list/task"
API_PATHS = (PATH_IMPORT, PATH_INFO, PATH_LIST)

REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 410: "Gone",
           413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


class ApiError(Exception):
    """A 4xx answer: status, message and an optional errors list."""

    def __init__(self, status, message, errors=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def envelope(code, message, **extra):
    body = {"code": code, "success": 200 <= code < 300, "message": message}
    body.update(extra)
    return body


class Task:
    __slots__ = ("id", "created", "delay", "outcome")

    def __init__(self, task_id, created, delay, outcome):
        self.id = task_id
        self.created = created
        self.delay = delay
        self.outcome = outcome

    def model(self, now):
        elapsed = now - self.created
        finished = elapsed >= self.delay
        if finished:
            status = self.outcome
            message = "Import completed" if status == "complete" else "Import failed"
        elif elapsed >= self.delay / 2:
            status, message = "running", "Import running"
        else:
            status, message = "queued", "Import queued"
        return {"id": self.id, "identifier": TASK_IDENTIFIER, "status": status,
                "create_time": int(self.created),
                "finish_time": int(self.created + self.delay) if finished else None,
                "message": message}


class State:
    """Everything the double remembers; one lock guards it all."""

    def __init__(self, token, attributes, task_delay, keep_rows, keep_profiles):
        self.lock = threading.Lock()
        self.token = token
        self.attributes = attributes
        self.keep_rows = keep_rows
        self.keep_profiles = keep_profiles
        self.default_task_delay = task_delay
        self.reset()

    def reset(self):
        self.requests = []
        self.profiles = {}
        self.pending = []       # bodies accepted but not yet applied to .profiles
        self.tasks = {}
        self.task_seq = 0
        self.faults = []
        self.task_outcome = "complete"
        self.task_delay = self.default_task_delay

    def next_fault(self):
        with self.lock:
            return self.faults.pop(0) if self.faults else None

    def record(self, rec):
        with self.lock:
            rec["seq"] = len(self.requests) + 1
            self.requests.append(rec)

    def apply_pending(self):
        """Apply the accepted imports to the profile store, in the order they were
        accepted. Deferred until someone reads the profiles, from the raw bodies kept: the
        request path parses once and keeps no per-row objects (a 10,000-row request costs
        one JSON parse and a few C-level scans; its objects are freed when it is answered)."""
        # caller holds the lock
        store = self.profiles
        for raw in self.pending:
            body = json.loads(raw)
            columns, rows = body["columns"], body["rows"]
            ui = columns.index("user_id")
            for r in rows:
                uid = r[ui]
                if type(uid) is not str:
                    uid = json.dumps(uid)
                p = store.get(uid)
                if p is None:
                    p = store[uid] = {}
                if None in r:
                    for c, v in zip(columns, r):
                        if v is not None:
                            p[c] = v
                else:
                    p.update(zip(columns, r))
        self.pending = []

    def new_task(self):
        # caller holds the lock
        self.task_seq += 1
        task = Task(str(1000 + self.task_seq), time.time(), self.task_delay, self.task_outcome)
        self.tasks[task.id] = task
        return task


def check_token(state, body):
    tok = body.get("apptoken")
    return isinstance(tok, str) and tok == state.token


def validate_import(state, columns, rows, has_plus=True):
    """Raise ApiError for the first server rule the request breaks (in the documented order).
    has_plus=False: the caller knows no '+' occurs anywhere in the body."""
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ApiError(400, "Invalid request", ["columns: must be an array of attribute names"])
    if not isinstance(rows, list):
        raise ApiError(400, "Invalid request", ["rows: must be an array of arrays"])
    if "user_id" not in columns:
        raise ApiError(400, "A user_id column is required", ["columns: user_id is missing"])
    if "email" in columns and "email_subscription" not in columns:
        raise ApiError(400, "email requires email_subscription",
                       ["columns: email is set without email_subscription"])
    if "mobile_number" in columns and "sms_subscription" not in columns:
        raise ApiError(400, "mobile_number requires sms_subscription",
                       ["columns: mobile_number is set without sms_subscription"])
    if "mobile_number" in columns and has_plus:
        mi = columns.index("mobile_number")
        bad = [i for i, r in enumerate(rows)
               if type(r) is list and len(r) > mi and isinstance(r[mi], str) and "+" in r[mi]]
        if bad:
            raise ApiError(400, "mobile_number must be E.164 digits without +",
                           [f"rows[{i}]: mobile_number contains '+'" for i in bad[:MAX_ERRORS]])
    if len(rows) > MAX_ROWS:
        raise ApiError(400, f"Too many records: at most {MAX_ROWS} per request",
                       [f"rows: {len(rows)} records"])
    unknown = [(i, c) for i, c in enumerate(columns)
               if c not in SYSTEM_ATTRIBUTES and c not in state.attributes]
    if unknown:
        raise ApiError(400, "Unknown attribute",
                       [f"columns[{i}]: attribute '{c}' does not exist" for i, c in unknown])
    n = len(columns)
    if not rows or (set(map(type, rows)) == {list} and set(map(len, rows)) == {n}):
        bad = []
    else:
        bad = [i for i, r in enumerate(rows) if type(r) is not list or len(r) != n]
    if bad:
        raise ApiError(400, "Row length does not match columns",
                       [f"rows[{i}]: {len(rows[i]) if type(rows[i]) is list else 'not an array'}"
                        f" values for {n} columns" for i in bad[:MAX_ERRORS]])
    uids = list(map(itemgetter(columns.index("user_id")), rows))
    if None in uids or "" in uids:
        bad = [i for i, u in enumerate(uids) if u is None or u == ""]
        raise ApiError(400, "user_id must not be empty",
                       [f"rows[{i}]: user_id is empty" for i in bad[:MAX_ERRORS]])


def upsert(state, raw, rows):
    """Accept a valid body for the profile store; returns the task (>= ASYNC_ROWS rows) or
    None."""
    with state.lock:
        if state.keep_profiles:
            state.pending.append(raw)
        if len(rows) >= ASYNC_ROWS:
            return state.new_task()
    return None


def api_list_tasks(state, body):
    cond = body.get("condition", [])
    order = body.get("order", ["id DESC"])
    limit = body.get("limit", 100)
    offset = body.get("offset", 0)
    if not isinstance(cond, list):
        raise ApiError(400, "Invalid request", ["condition: must be an array"])
    tests = []
    ops = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b,
           ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
           "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
    for i, c in enumerate(cond):
        if (not isinstance(c, list) or len(c) != 3 or c[0] not in TASK_FIELDS
                or c[1] not in ops):
            raise ApiError(400, "Invalid request", [f"condition[{i}]: unsupported condition"])
        tests.append((c[0], ops[c[1]], c[2]))
    if isinstance(order, str):
        order = [order]
    if not isinstance(order, list):
        raise ApiError(400, "Invalid request", ["order: must be an array"])
    keys = []
    for i, o in enumerate(order):
        parts = o.split() if isinstance(o, str) else []
        if (len(parts) not in (1, 2) or parts[0] not in TASK_FIELDS
                or (len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC"))):
            raise ApiError(400, "Invalid request", [f"order[{i}]: unsupported order"])
        keys.append((parts[0], len(parts) == 2 and parts[1].upper() == "DESC"))
    for name, val in (("limit", limit), ("offset", offset)):
        if type(val) is not int or val < 0:
            raise ApiError(400, "Invalid request", [f"{name}: must be a non-negative integer"])
    now = time.time()
    with state.lock:
        models = [t.model(now) for t in state.tasks.values()]

    def match(m):
        for field, op, val in tests:
            have = m[field]
            try:
                if field == "id":
                    have, val2 = int(have), int(val)
                else:
                    val2 = val
                if have is None or not op(have, val2):
                    return False
            except (TypeError, ValueError):
                return False
        return True

    models = [m for m in models if match(m)]
    for field, desc in reversed(keys):
        keyf = (lambda m, f=field: int(m[f])) if field == "id" else \
            (lambda m, f=field: (m[f] is not None, m[f] if m[f] is not None else 0))
        models.sort(key=keyf, reverse=desc)
    return envelope(200, "OK", data=models[offset:offset + limit])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakeapi/1"
    sys_version = ""
    wbufsize = 1 << 16          # whole responses go out in one write, flushed per request
    timeout = 300               # idle keep-alive connections are closed after this

    # -- plumbing -------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        if self.server.verbose:
            sys.stderr.write("fakeapi: %s - %s\n" % (self.address_string(), format % args))

    def handle_expect_100(self):
        self.send_response_only(100)
        self.end_headers()
        self.wfile.flush()
        return True

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if te == "chunked":
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ApiError(413, "Request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(parts)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        n = int(length)
        if n < 0 or n > MAX_BODY:
            raise ApiError(413, "Request body too large")
        return self.rfile.read(n)

    def send_json(self, status, obj, headers=()):
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def drop(self):
        """Close the connection without any response."""
        self.close_connection = True
        self.server.abort_connection(self.connection)

    # -- dispatch -------------------------------------------------------------------------
    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def dispatch(self, method):
        try:
            raw = self.read_body()
        except ApiError as e:
            self.close_connection = True
            self.send_json(e.status, envelope(e.status, e.message))
            return
        except ValueError:
            self.close_connection = True
            self.send_json(400, envelope(400, "Malformed request body"))
            return
        url = urlsplit(self.path)
        if url.path.startswith("/_admin/"):
            self.admin(method, url, raw)
            return
        rec = {"seq": 0, "method": method, "path": url.path, "status": None,
               "time": time.time(), "columns": None, "n_rows": None, "rows": None,
               "task_id": None, "apptoken_ok": False, "fault": None}
        status, obj, headers = self.api(method, url.path, raw, rec)
        # recorded before the answer leaves, so a test that has the answer sees the record
        rec["status"] = status
        self.server.state.record(rec)
        if status is None:
            self.drop()
        else:
            self.send_json(status, obj, headers)

    def api(self, method, path, raw, rec):
        """Returns (status, body, headers); status None = close without answering."""
        state = self.server.state
        if path not in API_PATHS:
            return 404, envelope(404, "Not found"), ()
        if method != "POST":
            return 405, envelope(405, "Method not allowed"), [("Allow", "POST")]
        fault = state.next_fault() if path == PATH_IMPORT else None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            rec["apptoken_ok"] = check_token(state, body)
            if path == PATH_IMPORT:
                cols, rows = body.get("columns"), body.get("rows")
                rec["columns"] = cols
                if isinstance(rows, list):
                    rec["n_rows"] = len(rows)
                    if state.keep_rows:
                        rec["_raw"] = raw       # rows are parsed again for /_admin/requests
            elif path == PATH_INFO:
                rec["task_id"] = body.get("id")
        if fault is not None:
            rec["fault"] = fault
            if "delay" in fault:
                time.sleep(fault["delay"])
            if fault.get("drop"):
                return None, None, ()
            if "status" in fault:
                st = fault["status"]
                extra = {"errors": fault["errors"]} if "errors" in fault else {}
                headers = [("Retry-After", str(fault["retry_after"]))] \
                    if "retry_after" in fault else []
                msg = fault.get("message", REASONS.get(st, "Injected fault"))
                return st, envelope(st, msg, **extra), headers
        try:
            if body is None:
                raise ApiError(400, "Invalid JSON body", ["body: not valid JSON"])
            if not isinstance(body, dict):
                raise ApiError(400, "Invalid request", ["body: must be a JSON object"])
            if not rec["apptoken_ok"]:
                raise ApiError(401, "Authentication failed")
            if path == PATH_IMPORT:
                status, obj = self.api_import(body, raw, rec)
            elif path == PATH_INFO:
                status, obj = self.api_info(body)
            else:
                status, obj = 200, api_list_tasks(state, body)
        except ApiError as e:
            status = e.status
            obj = envelope(e.status, e.message)
            if e.errors is not None:
                obj["errors"] = e.errors
        if fault is not None and fault.get("drop_after_upsert"):
            return None, None, ()
        return status, obj, ()

    def api_import(self, body, raw, rec):
        state = self.server.state
        columns, rows = body.get("columns"), body.get("rows")
        # a cheap scan of the bytes spares the per-row '+' check of almost every request
        has_plus = b"+" in raw or b"\\u002b" in raw or b"\\u002B" in raw
        validate_import(state, columns, rows, has_plus=has_plus)
        task = upsert(state, raw, rows)
        if task is None:
            return 200, envelope(200, f"{len(rows)} profiles imported")
        rec["task_id"] = task.id
        return 202, envelope(202, "Import queued", model={"id": task.id})

    def api_info(self, body):
        state = self.server.state
        tid = body.get("id")
        if not isinstance(tid, (str, int)) or isinstance(tid, bool):
            raise ApiError(400, "Invalid request", ["id: a task id is required"])
        with state.lock:
            task = state.tasks.get(str(tid))
        if task is None:
            raise ApiError(404, "Task not found")
        return 200, envelope(200, "OK", model=task.model(time.time()))

    # -- admin ----------------------------------------------------------------------------
    def admin(self, method, url, raw):
        state = self.server.state
        name = url.path[len("/_admin/"):]
        gets = ("health", "requests", "profiles", "faults")
        posts = ("faults", "task_outcome", "reset")
        if name not in gets and name not in posts:
            self.send_json(404, envelope(404, "Not found"))
            return
        if (method == "GET" and name not in gets) or (method == "POST" and name not in posts) \
                or method not in ("GET", "POST"):
            self.send_json(405, envelope(405, "Method not allowed"))
            return
        if method == "GET":
            q = parse_qs(url.query)
            with state.lock:
                if name == "health":
                    out = {"ok": True, "requests": len(state.requests)}
                elif name == "requests":
                    since = q.get("since", ["0"])[0]
                    since = int(since) if since.isdigit() else 0
                    with_rows = q.get("rows", ["1"])[0] != "0"
                    out = [public_record(r, with_rows) for r in state.requests[since:]]
                    data = json.dumps(out, separators=(",", ":"))
                elif name == "profiles":
                    state.apply_pending()
                    out = {uid: {k: v for k, v in p.items() if k != "user_id"}
                           for uid, p in state.profiles.items()}
                else:
                    out = list(state.faults)
                if name != "requests":
                    data = json.dumps(out, separators=(",", ":"))
            self.send_raw(200, data.encode())
            return
        try:
            arg = json.loads(raw) if raw.strip() else None
        except ValueError:
            self.send_json(400, envelope(400, "Invalid JSON body"))
            return
        err = None
        with state.lock:
            if name == "reset":
                state.reset()
            elif name == "faults":
                err = check_faults(arg)
                if err is None:
                    state.faults = list(arg)
            else:
                if not isinstance(arg, dict) or arg.get("status") not in TASK_OUTCOMES:
                    err = "status must be one of: " + ", ".join(TASK_OUTCOMES)
                elif "task_delay" in arg and not isinstance(arg["task_delay"], (int, float)):
                    err = "task_delay must be a number"
                else:
                    state.task_outcome = arg["status"]
                    if "task_delay" in arg:
                        state.task_delay = float(arg["task_delay"])
        if err is not None:
            self.send_json(400, envelope(400, err))
        else:
            self.send_json(200, envelope(200, "OK"))

    def send_raw(self, status, data):
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def public_record(rec, with_rows):
    """A request record as /_admin/requests shows it: rows parsed from the kept body, the
    body itself (and so the apptoken) never."""
    out = {k: v for k, v in rec.items() if k != "_raw"}
    if with_rows and "_raw" in rec:
        out["rows"] = json.loads(rec["_raw"])["rows"]
    return out


def check_faults(arg):
    if not isinstance(arg, list):
        return "faults: expected a JSON array"
    for i, f in enumerate(arg):
        if not isinstance(f, dict) or not f:
            return f"faults[{i}]: expected a non-empty object"
        extra = set(f) - FAULT_KEYS
        if extra:
            return f"faults[{i}]: unknown keys {sorted(extra)}"
        if "status" in f and (type(f["status"]) is not int or not 100 <= f["status"] <= 599):
            return f"faults[{i}]: status must be an HTTP status"
        if "delay" in f and (not isinstance(f["delay"], (int, float)) or f["delay"] < 0):
            return f"faults[{i}]: delay must be a non-negative number"
        if ("status" in f) + bool(f.get("drop")) + bool(f.get("drop_after_upsert")) > 1:
            return f"faults[{i}]: status, drop and drop_after_upsert exclude each other"
    return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr, state, ctx, verbose):
        self.state = state
        self.ssl_ctx = ctx
        self.verbose = verbose
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def finish_request(self, request, client_address):
        # TLS handshake in the connection's own thread, never in the accept loop
        request.settimeout(30)
        try:
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            if self.verbose:
                sys.stderr.write(f"fakeapi: TLS handshake failed: {e}\n")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            tls.close()

    @staticmethod
    def abort_connection(conn):
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def parse_attributes(text):
    attrs = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, typ = item.partition(":")
        if not sep or not name or typ not in ATTRIBUTE_TYPES:
            raise ValueError(f"--attributes: bad item '{item}' (want name:type, type one of "
                             + ", ".join(sorted(ATTRIBUTE_TYPES)) + ")")
        attrs[name] = typ
    return attrs


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Xtremepush import API test double")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--attributes", default="")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--task-delay", type=float, default=0.3)
    ap.add_argument("--no-rows", action="store_true",
                    help="do not keep the rows of each request (benchmarks)")
    ap.add_argument("--no-store", action="store_true",
                    help="keep no profile store: /_admin/profiles stays empty (benchmarks)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    try:
        attributes = parse_attributes(a.attributes)
    except ValueError as e:
        ap.error(str(e))
    with open(a.token_file) as f:
        token = f.read().strip()
    if not token:
        ap.error("--token-file: the file is empty")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])
    state = State(token, attributes, a.task_delay, not a.no_rows, not a.no_store)
    srv = Server(("127.0.0.1", a.port), state, ctx, a.verbose)
    port = srv.server_address[1]
    if a.port_file:
        write_atomic(a.port_file, f"{port}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The store and the request log are millions of long-lived containers and the request
    # path allocates one list per row: the cyclic GC would rescan them again and again.
    # Nothing here builds reference cycles worth collecting in a test's lifetime.
    gc.disable()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
