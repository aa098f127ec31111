#!/usr/bin/env python3
"""A small local Lambda service for the relay's functions: the Lambda Runtime API, the Invoke API and
an API Gateway HTTP API front, with Lambda's timing rules where the relay's guarantees depend on them.

Why not `cargo lambda watch`: it hands every invocation the same fixed deadline header (600 000 ms
since the epoch, i.e. long past), never stops a function at its timeout, and runs one instance per
function; the consumer's claim lease, computed from the deadline, was therefore always over locally.
Here, per function of template.yaml (AWS::Serverless::Function, binary from BuildProperties.Binary):

  * execution environments: each instance is one process of the function's binary (a debug build of
    the workspace), started on demand with AWS_LAMBDA_RUNTIME_API pointing at a Runtime API endpoint
    of its own; up to --concurrency instances per function run invocations in parallel, one
    invocation per instance at a time, as in Lambda; more concurrent invocations are throttled
    (429 TooManyRequestsException), as Lambda does at the function's concurrency limit;
  * deadlines: each event is handed out with Lambda-Runtime-Deadline-Ms = now + the function's
    Timeout (template.yaml); an invocation without a result at its deadline gets Lambda's timeout
    error (Sandbox.Timedout) and its process is SIGKILLed (the next invocation cold-starts a new one);
    init is bounded by --init-timeout (Lambda: 10 s);
  * a process that dies mid-invocation (crash, panic = abort, SIGKILL from a fault test) fails that
    invocation with Runtime.ExitError, as in Lambda; the next invocation starts a new instance;
  * Invoke API: POST /2015-03-31/functions/<fn>/invocations (RequestResponse, or Event = 202 and run
    in the background); function errors answer 200 with X-Amz-Function-Error: Unhandled and the
    error document; 6 MB request/response limits;
  * HTTP API: any request whose method and path match one of the template's HttpApi routes invokes
    that function with an API Gateway payload 2.0 event (routeKey, pathParameters, rawPath,
    requestContext.http.sourceIp = the TCP peer, X-Forwarded-For with the peer appended); no route is
    404 {"message":"Not Found"}, a failed invocation 500 {"message":"Internal Server Error"}, as API
    Gateway answers. /lambda-url/<fn>/<path> (`cargo lambda watch`'s function URLs) works too;
  * code updates: with --watch, a change under functions/, shared/ or the Cargo files triggers
    `cargo build`; when it succeeds, idle instances are replaced and busy ones finish their invocation
    on the old code first (as a deploy does); while it builds or when it fails, the previous build
    keeps serving.

Hooks for tests that kill processes (the fault-injection run):
  GET  /_local/status                                 functions, version, every instance (pid, state,
                                                       request id, deadline); also written to
                                                       --state-file on every change
  POST /_local/functions/<fn>/kill?state=busy|idle|all&signal=KILL|TERM
                                                       signal that function's instances (busy = in an
                                                       invocation, i.e. mid-batch); answers their pids
Any instance may also be killed directly by pid; the service notices and cold-starts a new one.

Environment of each instance: the literal (non-intrinsic) Environment values of the template
(Globals and the function), overlaid by --env-file (config/local.env + the emulator's resources), plus
what Lambda sets (AWS_LAMBDA_FUNCTION_NAME, _MEMORY_SIZE, _VERSION, AWS_LAMBDA_LOG_GROUP_NAME,
AWS_LAMBDA_LOG_STREAM_NAME, AWS_LAMBDA_RUNTIME_API, AWS_REGION, _HANDLER, TZ, ...). Nothing else of
this process's environment leaks in except PATH and HOME.

  .venv/bin/python scripts/local_lambda.py --port 9000 --env-file .local/functions.env --watch
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from esm_runner import read_env_file  # noqa: E402  (same folder, same venv)
from local_aws import ACCOUNT_ID, ROOT, Template  # noqa: E402

MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous request and response limit
DEFAULT_TIMEOUT = 3  # Lambda's default function timeout (s)
DEFAULT_MEMORY = 128
WATCHED = ("functions", "shared", "Cargo.toml", "Cargo.lock")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} lambda: {msg}", file=sys.stderr, flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


# --- functions from the template ---------------------------------------------------------------------


class FunctionSpec:
    def __init__(self, name: str, logical_id: str, timeout: int, memory: int, env: dict[str, str],
                 routes: list[str]):
        self.name, self.logical_id, self.timeout, self.memory = name, logical_id, timeout, memory
        self.env, self.routes = env, routes


def _literal_env(variables: dict | None) -> dict[str, str]:
    """Environment values that are plain strings or numbers in the template (Refs are left to the
    env file, which has the local resources' names)."""
    out = {}
    for k, v in (variables or {}).items():
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            out[k] = str(v)
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
    return out


def functions_from_template(tpl: Template) -> dict[str, FunctionSpec]:
    glob = (tpl.doc.get("Globals") or {}).get("Function") or {}
    out = {}
    for lid, res in tpl.resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties") or {}
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        name = binary or (lid[: -len("Function")] if lid.endswith("Function") else lid).lower()

        def num(key, default):
            value = props.get(key, glob.get(key, default))
            try:
                return int(tpl.resolve(value))
            except (KeyError, TypeError, ValueError):
                return default

        env = _literal_env((glob.get("Environment") or {}).get("Variables"))
        env |= _literal_env((props.get("Environment") or {}).get("Variables"))
        routes = []
        for ev in (props.get("Events") or {}).values():
            if ev.get("Type") == "HttpApi":
                p = ev.get("Properties") or {}
                method = str(p.get("Method", "ANY")).upper()
                method = "ANY" if method in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD") else method
                routes.append(f"{method} {p.get('Path', '/')}" if p.get("Path") else "$default")
        out[name] = FunctionSpec(name, lid, num("Timeout", DEFAULT_TIMEOUT), num("MemorySize", DEFAULT_MEMORY), env, routes)
    return out


# --- invocations and instances -------------------------------------------------------------------


class Invocation:
    def __init__(self, payload: bytes, function: str):
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.function = function
        self.deadline_ms = 0
        self.done = threading.Event()
        self.status = None  # "ok" | "error"
        self.body = b""
        self.error_type = None

    def finish(self, status: str, body: bytes, error_type: str | None = None) -> bool:
        if self.done.is_set():
            return False
        self.status, self.body, self.error_type = status, body, error_type
        self.done.set()
        return True

    def fail(self, error_type: str, message: str) -> bool:
        doc = {"errorType": error_type, "errorMessage": f"RequestId: {self.request_id} Error: {message}"}
        return self.finish("error", json.dumps(doc).encode(), error_type)


class Spawner:
    """Starts every function process from one long-lived thread. The processes get
    PR_SET_PDEATHSIG(SIGKILL) (via setpriv) so they die with this service, as a sandbox dies with
    Lambda's worker; Linux sends that signal when the *thread* that forked exits, so forking from the
    short-lived HTTP handler threads would kill an instance after its first invocation."""

    def __init__(self):
        self.requests: queue.Queue = queue.Queue()
        self.setpriv = shutil.which("setpriv")
        threading.Thread(target=self._run, name="spawner", daemon=True).start()

    def _run(self):
        while True:
            argv, kwargs, box, done = self.requests.get()
            try:
                if self.setpriv:
                    argv = [self.setpriv, "--pdeathsig", "KILL", "--"] + argv
                box.append(subprocess.Popen(argv, **kwargs))
            except Exception as e:  # noqa: BLE001 - handed to the caller
                box.append(e)
            done.set()

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        box: list = []
        done = threading.Event()
        self.requests.put((argv, kwargs, box, done))
        done.wait()
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]


SPAWNER: Spawner | None = None


class RuntimeHandler(BaseHTTPRequestHandler):
    """The Lambda Runtime API of one instance (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)."""

    protocol_version = "HTTP/1.1"
    instance: "Instance"

    def log_message(self, fmt, *args):  # quiet: the service logs what matters
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path.rstrip("/") != "/2018-06-01/runtime/invocation/next":
            return self._reply(404, b'{"errorType":"NotFound"}')
        inv = self.instance.next_invocation()
        if inv is None:  # retiring: the process is about to be stopped
            return self._reply(410, b'{"errorType":"Retired"}')
        self._reply(200, inv.payload, {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.instance.function.arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
        })

    def do_POST(self):
        body = self._body()
        m = re.fullmatch(r"/2018-06-01/runtime/invocation/([^/]+)/(response|error)", self.path)
        if m:
            ok = self.instance.result(m.group(1), m.group(2), body, self.headers.get("Lambda-Runtime-Function-Error-Type"))
            return self._reply(202 if ok else 400, b'{"status":"OK"}' if ok else b'{"errorType":"InvalidRequestID"}')
        if self.path == "/2018-06-01/runtime/init/error":
            self.instance.init_error(body)
            return self._reply(202, b'{"status":"OK"}')
        self._reply(404, b'{"errorType":"NotFound"}')


class Instance:
    """One execution environment: a process of the function's binary and its Runtime API endpoint."""

    def __init__(self, function: "Function", n: int, version: int, binary: Path):
        self.function = function
        self.id = f"{function.spec.name}-{n}"
        self.version = version
        self.state = "init"  # init -> idle <-> busy -> dead
        self.current: Invocation | None = None
        self.since = time.time()
        self.invocations = 0
        self.retiring = False
        self.doomed = False  # signalled by us: never hand it another invocation
        self.ready = threading.Event()
        self.inbox: queue.Queue = queue.Queue()
        handler = type("Handler", (RuntimeHandler,), {"instance": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name=f"rt-{self.id}", daemon=True).start()
        api = f"127.0.0.1:{self.server.server_address[1]}"
        env = function.service.instance_env(function.spec, api, self.id)
        self.proc = SPAWNER.popen(
            [str(binary)], env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        threading.Thread(target=self._pump_output, name=f"out-{self.id}", daemon=True).start()
        threading.Thread(target=self._watch, name=f"wait-{self.id}", daemon=True).start()
        log(f"{self.id}: started pid {self.pid} (build v{version}, runtime API {api})")

    def _pump_output(self):
        prefix = f"[{self.id} pid {self.pid}] ".encode()
        out = self.function.service.function_log
        for line in iter(self.proc.stdout.readline, b""):
            with self.function.service.log_lock:
                out.write(prefix + line)
                out.flush()

    def _watch(self):
        code = self.proc.wait()
        reason = f"signal: {signal.Signals(-code).name.lower().removeprefix('sig')}" if code < 0 else f"exit status {code}"
        self.state = "dead"
        self.ready.set()
        inv = self.current
        if inv is not None and inv.fail("Runtime.ExitError", f"Runtime exited with error: {reason}"):
            log(f"{self.id}: pid {self.pid} died mid-invocation {inv.request_id} ({reason})")
        elif not self.retiring:
            log(f"{self.id}: pid {self.pid} exited ({reason})")
        self.inbox.put(None)
        self.function.remove(self)
        self.server.shutdown()
        self.server.server_close()

    # called by the runtime handler
    def next_invocation(self) -> Invocation | None:
        if not self.ready.is_set():
            self.ready.set()  # the first /next ends init
        if self.state == "init":
            self.state = "idle"
            self.function.service.publish()
        inv = self.inbox.get()
        return inv

    def result(self, request_id: str, kind: str, body: bytes, error_type: str | None) -> bool:
        inv = self.current
        if inv is None or inv.request_id != request_id:
            return False
        if kind == "response":
            if len(body) > MAX_PAYLOAD:
                return inv.fail("Function.ResponseSizeTooLarge", f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).") or True
            return inv.finish("ok", body) or True
        return inv.finish("error", body, error_type or "Unhandled") or True

    def init_error(self, body: bytes):
        log(f"{self.id}: init error: {body[:300].decode('utf-8', 'replace')}")

    # called by the service
    def run(self, inv: Invocation, init_timeout: float) -> None:
        """Runs one invocation to its end: result, error, timeout (process killed) or process death."""
        if not self.ready.wait(init_timeout):
            self.kill(signal.SIGKILL)
            inv.fail("Runtime.InitError", f"init did not finish within {init_timeout:g} s")
            return
        if self.state == "dead":
            inv.fail("Runtime.ExitError", "Runtime exited before the invocation (see .local/functions.log)")
            return
        inv.deadline_ms = now_ms() + self.function.spec.timeout * 1000
        self.current = inv
        # _watch fails self.current when the process exits; if it exited just before current was set,
        # nobody would: check once more now that it is set.
        if self.proc.poll() is not None:
            inv.fail("Runtime.ExitError", f"Runtime exited with error: exit status {self.proc.returncode}")
            self.current = None
            return
        self.state = "busy"
        self.invocations += 1
        self.function.service.publish()
        self.inbox.put(inv)
        left = (inv.deadline_ms - now_ms()) / 1000
        if not inv.done.wait(max(0.0, left)):
            # Lambda stops the sandbox at the deadline: the invocation fails and the process is gone.
            if inv.fail("Sandbox.Timedout", f"Task timed out after {self.function.spec.timeout:.2f} seconds"):
                log(f"{self.id}: {inv.request_id} timed out after {self.function.spec.timeout} s: SIGKILL pid {self.pid}")
                self.kill(signal.SIGKILL)
        self.current = None
        if self.state == "busy":
            self.state = "idle"

    def kill(self, sig=signal.SIGKILL):
        self.doomed = True
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def describe(self) -> dict:
        inv = self.current
        return {"id": self.id, "pid": self.pid, "state": self.state, "version": self.version,
                "invocations": self.invocations, "since": round(self.since, 3),
                "request_id": inv.request_id if inv else None, "deadline_ms": inv.deadline_ms if inv else None}


class Throttled(Exception):
    pass


class Function:
    def __init__(self, service: "Service", spec: FunctionSpec, concurrency: int):
        self.service, self.spec, self.concurrency = service, spec, concurrency
        self.arn = f"arn:aws:lambda:{service.region}:{ACCOUNT_ID}:function:{spec.name}"
        self.lock = threading.Lock()
        self.instances: list[Instance] = []
        self.idle: list[Instance] = []
        self.counter = 0

    def acquire(self) -> Instance:
        with self.lock:
            while self.idle:
                inst = self.idle.pop()
                if inst.state != "dead" and not inst.doomed and inst.version == self.service.version:
                    return inst
                self._retire(inst)
            live = [i for i in self.instances if i.state != "dead"]  # doomed ones still hold a slot until gone
            if len(live) >= self.concurrency:
                raise Throttled()
            self.counter += 1
            inst = Instance(self, self.counter, self.service.version, self.service.binary(self.spec.name))
            self.instances.append(inst)
        self.service.publish()
        return inst

    def release(self, inst: Instance) -> None:
        with self.lock:
            if inst.state == "dead" or inst.doomed:
                return
            if inst.version != self.service.version:
                self._retire(inst)
                return
            self.idle.append(inst)
        self.service.publish()

    def _retire(self, inst: Instance) -> None:
        inst.retiring = True
        inst.kill(signal.SIGTERM)
        threading.Timer(2.0, inst.kill, args=(signal.SIGKILL,)).start()

    def retire_old(self) -> None:
        with self.lock:
            keep = []
            for inst in self.idle:
                if inst.version != self.service.version:
                    self._retire(inst)
                else:
                    keep.append(inst)
            self.idle = keep

    def remove(self, inst: Instance) -> None:
        with self.lock:
            if inst in self.instances:
                self.instances.remove(inst)
            if inst in self.idle:
                self.idle.remove(inst)
        self.service.publish()

    def invoke(self, payload: bytes) -> Invocation:
        inv = Invocation(payload, self.spec.name)
        inst = self.acquire()  # raises Throttled
        try:
            inst.run(inv, self.service.init_timeout)
        finally:
            self.release(inst)
        return inv


class Service:
    def __init__(self, args, specs: dict[str, FunctionSpec], base_env: dict[str, str]):
        self.args = args
        self.region = base_env.get("AWS_REGION") or base_env.get("AWS_DEFAULT_REGION") or "eu-central-1"
        self.base_env = base_env
        self.init_timeout = args.init_timeout
        self.version = 0
        self.code_dir = Path(args.state_dir) / "code"
        self.state_file = Path(args.state_file) if args.state_file else None
        self.function_log = open(args.function_log, "ab")
        self.log_lock = threading.Lock()
        self.publish_lock = threading.Lock()
        self.build_lock = threading.Lock()
        self.building = False
        self.last_build_error = None
        overrides = dict(kv.split("=", 1) for kv in args.concurrency_override)
        timeouts = dict(kv.split("=", 1) for kv in args.timeout_override)
        for name, t in timeouts.items():
            specs[name].timeout = int(t)
        self.functions = {n: Function(self, s, int(overrides.get(n, args.concurrency))) for n, s in specs.items()}
        self.routes = []  # (method, regex, route key, function, path parameter names)
        for fn in self.functions.values():
            for key in fn.spec.routes:
                self.routes.append(_compile_route(key, fn))

    # code
    def binary(self, name: str) -> Path:
        return self.code_dir / f"v{self.version}" / name

    def build(self) -> bool:
        """cargo build of the workspace's binaries; on success the build becomes the new version."""
        with self.build_lock:
            self.building = True
            self.publish()
            started = time.monotonic()
            cmd = ["cargo", "build", "--workspace", "--bins", "--color", "never"]
            log(f"building: {' '.join(cmd)} (log: {self.args.build_log})")
            with open(self.args.build_log, "ab") as out:
                out.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
                out.flush()
                try:
                    rc = subprocess.run(cmd, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT,
                                        timeout=self.args.build_timeout).returncode
                except subprocess.TimeoutExpired:
                    rc = -1
            self.building = False
            took = time.monotonic() - started
            if rc != 0:
                self.last_build_error = f"cargo build failed (exit {rc}) after {took:.0f} s; see {self.args.build_log}"
                log(self.last_build_error + ("; the previous build keeps serving" if self.version else ""))
                self.publish()
                return False
            new = self.version + 1
            target = self.code_dir / f"v{new}"
            target.mkdir(parents=True, exist_ok=True)
            for name in self.functions:
                src = Path(self.args.bin_dir) / name
                dst = target / name
                dst.unlink(missing_ok=True)
                # A copy of its own per version (a hard link where possible: the linker writes a new
                # file on the next build): a later build or a test's `cargo build` never changes the
                # code of running or restarting instances.
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
            self.version = new
            self.last_build_error = None
            for fn in self.functions.values():
                fn.retire_old()
            for old in sorted(self.code_dir.glob("v*")):
                if old.name not in (f"v{new}", f"v{new - 1}"):
                    shutil.rmtree(old, ignore_errors=True)
            log(f"build v{new} ready in {took:.0f} s")
            self.publish()
            return True

    def watch(self, stop: threading.Event) -> None:
        """Polls the sources' modification times (cheap for this tree) and rebuilds after a change."""
        def snapshot():
            stamps = {}
            for entry in WATCHED:
                p = ROOT / entry
                paths = [p] if p.is_file() else p.rglob("*") if p.is_dir() else []
                for f in paths:
                    if f.is_file() and "target" not in f.parts:
                        try:
                            stamps[str(f)] = f.stat().st_mtime_ns
                        except OSError:
                            pass
            return stamps

        seen = snapshot()
        while not stop.wait(1.0):
            if snapshot() != seen:
                stop.wait(0.5)  # let an editor finish writing
                before, seen = seen, snapshot()
                changed = sorted({f for f in before.keys() | seen.keys() if before.get(f) != seen.get(f)})
                names = ", ".join(str(Path(f).relative_to(ROOT)) for f in changed[:3]) + (" ..." if len(changed) > 3 else "")
                log(f"source change ({names}): rebuilding")
                self.build()

    # environment of an instance
    def instance_env(self, spec: FunctionSpec, runtime_api: str, instance_id: str) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
               "LANG": "en_US.UTF-8", "TZ": ":UTC"}
        env |= spec.env
        env |= self.base_env
        env |= {
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d')}/[$LATEST]{instance_id}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_RUNTIME_API": runtime_api,
            "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "_HANDLER": "bootstrap",
            "LAMBDA_TASK_ROOT": str(ROOT),
        }
        return env

    # status
    def status(self) -> dict:
        return {
            "pid": os.getpid(), "version": self.version, "building": self.building,
            "ready": self.version > 0, "build_error": self.last_build_error,
            "functions": {
                n: {"timeout_s": f.spec.timeout, "memory_mb": f.spec.memory, "concurrency": f.concurrency,
                    "routes": f.spec.routes, "instances": [i.describe() for i in list(f.instances)]}
                for n, f in self.functions.items()
            },
        }

    def publish(self) -> None:
        if not self.state_file:
            return
        with self.publish_lock:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=1) + "\n")
            tmp.replace(self.state_file)

    def shutdown(self) -> None:
        instances = [i for f in self.functions.values() for i in list(f.instances)]
        for inst in instances:
            inst.retiring = True
            inst.kill(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(i.proc.poll() is None for i in instances):
            time.sleep(0.05)
        for inst in instances:
            if inst.proc.poll() is None:
                inst.kill(signal.SIGKILL)
        for inst in instances:
            try:
                inst.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass


def _compile_route(key: str, fn: Function):
    if key == "$default":
        return ("ANY", None, key, fn, [])
    method, path = key.split(" ", 1)
    names = []

    def part(seg: str) -> str:
        m = re.fullmatch(r"\{([^}+]+)(\+?)\}", seg)
        if not m:
            return re.escape(seg)
        names.append(m.group(1))
        return "(.+)" if m.group(2) else "([^/]+)"

    regex = "^" + "/".join(part(s) for s in path.split("/")) + "$"
    return (method, re.compile(regex), key, fn, names)


def match_route(service: Service, method: str, path: str):
    """API Gateway's choice: the most specific route (fewest path variables, then the longest)."""
    best = None
    for r_method, regex, key, fn, names in service.routes:
        if regex is None or r_method not in ("ANY", method):
            continue
        m = regex.match(path)
        if not m:
            continue
        rank = (len(names), -len(key), r_method == "ANY")
        if best is None or rank < best[0]:
            best = (rank, key, fn, dict(zip(names, m.groups())))
    if best is None:
        default = next((r for r in service.routes if r[1] is None), None)
        if default:
            return default[2], default[3], {}
        return None
    return best[1], best[2], best[3]


# --- the front: Invoke API, HTTP API, control ---------------------------------------------------------


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service: Service

    def log_message(self, fmt, *args):
        pass

    def _reply(self, status: int, body: bytes, headers: dict | list | None = None):
        self.send_response(status)
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        have_type = False
        for k, v in items:
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            have_type |= k.lower() == "content-type"
            self.send_header(k, v)
        if not have_type and body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc, headers: dict | None = None):
        self._reply(status, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _read_body(self) -> bytes | None:
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_PAYLOAD:
            self.rfile.read(n)
            return None
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PUT(self):
        self.route()

    def do_DELETE(self):
        self.route()

    def do_PATCH(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_OPTIONS(self):
        self.route()

    def route(self):
        url = urlsplit(self.path)
        path = url.path
        try:
            if path == "/_local/status":
                return self._json(200, self.service.status())
            m = re.fullmatch(r"/_local/functions/([^/]+)/kill", path)
            if m and self.command == "POST":
                self._read_body()
                return self.kill(m.group(1), dict(parse_qsl(url.query)))
            m = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", path)
            if m and self.command == "POST":
                return self.invoke_api(m.group(1))
            m = re.fullmatch(r"/lambda-url/([^/]+)(/.*)?", path)
            if m:
                fn = self.service.functions.get(m.group(1))
                if fn is None:
                    return self._json(404, {"message": "Not Found"})
                return self.http_api(fn, "$default", m.group(2) or "/", url.query, {})
            found = match_route(self.service, self.command, path)
            if found is None:
                self._read_body()
                return self._json(404, {"message": "Not Found"})
            key, fn, params = found
            return self.http_api(fn, key, path, url.query, params)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def kill(self, name: str, query: dict):
        fn = self.service.functions.get(name)
        if fn is None:
            return self._json(404, {"message": f"no function {name}"})
        which = query.get("state", "busy")
        sig = getattr(signal, "SIG" + query.get("signal", "KILL").upper(), signal.SIGKILL)
        hit = [i for i in list(fn.instances) if i.state != "dead" and (which == "all" or i.state == which)]
        for inst in hit:
            inst.kill(sig)
        log(f"control: {sig.name} to {len(hit)} {which} {name} instance(s): {[i.pid for i in hit]}")
        self._json(200, {"function": name, "signal": sig.name, "killed": [i.describe() for i in hit]})

    def _run(self, fn: Function, payload: bytes):
        try:
            return fn.invoke(payload)
        except Throttled:
            return None

    def invoke_api(self, name: str):
        fn = self.service.functions.get(name)
        body = self._read_body()
        if fn is None:
            return self._json(404, {"Type": "User", "message": f"Function not found: arn:aws:lambda:{self.service.region}:{ACCOUNT_ID}:function:{name}"},
                              {"X-Amzn-ErrorType": "ResourceNotFoundException"})
        if body is None:
            return self._json(413, {"Type": "User", "message": "Request must be smaller than 6291456 bytes for the InvokeFunction operation"},
                              {"X-Amzn-ErrorType": "RequestTooLargeException"})
        if self.headers.get("X-Amz-Invocation-Type", "RequestResponse") == "Event":
            # Asynchronous: accepted at once, run in the background (no retries or destinations here).
            threading.Thread(target=self._run, args=(fn, body), daemon=True).start()
            return self._reply(202, b"")
        inv = self._run(fn, body or b"{}")
        if inv is None:
            return self._json(429, {"Type": "User", "message": "Rate Exceeded.", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
                              {"X-Amzn-ErrorType": "TooManyRequestsException"})
        headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": "$LATEST", "X-Amzn-RequestId": inv.request_id}
        if inv.status != "ok":
            headers["X-Amz-Function-Error"] = "Unhandled"
        self._reply(200, inv.body, headers)

    def http_api(self, fn: Function, route_key: str, path: str, query: str, params: dict):
        body = self._read_body()
        if body is None:
            return self._json(413, {"message": "Request Entity Too Large"})
        peer = self.client_address[0]
        headers: dict[str, str] = {}
        cookies = []
        for k, v in self.headers.items():
            lk = k.lower()
            if lk == "cookie":
                cookies += [c.strip() for c in v.split(";") if c.strip()]
                continue
            headers[lk] = f"{headers[lk]},{v}" if lk in headers else v
        # API Gateway appends the caller's address to X-Forwarded-For and sets the proto and port.
        headers["x-forwarded-for"] = f"{headers['x-forwarded-for']}, {peer}" if "x-forwarded-for" in headers else peer
        headers["x-forwarded-proto"] = "https"
        headers["x-forwarded-port"] = "443"
        qs: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            qs[k] = f"{qs[k]},{v}" if k in qs else v
        try:
            text = body.decode("utf-8")
            encoded = False
        except UnicodeDecodeError:
            text = base64.b64encode(body).decode()
            encoded = True
        now = datetime.now(timezone.utc)
        request_id = base64.b32encode(uuid.uuid4().bytes).decode()[:16]
        event = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {
                "accountId": ACCOUNT_ID, "apiId": "local", "domainName": headers.get("host", "127.0.0.1"),
                "domainPrefix": headers.get("host", "127.0.0.1").split(".")[0],
                "http": {"method": self.command, "path": path, "protocol": self.request_version,
                         "sourceIp": peer, "userAgent": headers.get("user-agent", "")},
                "requestId": request_id, "routeKey": route_key, "stage": "$default",
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"), "timeEpoch": int(now.timestamp() * 1000),
            },
            "isBase64Encoded": encoded,
        }
        if cookies:
            event["cookies"] = cookies
        if qs:
            event["queryStringParameters"] = qs
        if params:
            event["pathParameters"] = params
        if body:
            event["body"] = text
        inv = self._run(fn, json.dumps(event).encode())
        if inv is None:
            return self._json(429, {"message": "Too Many Requests"}, {"apigw-requestid": request_id})
        if inv.status != "ok":
            return self._json(500, {"message": "Internal Server Error"}, {"apigw-requestid": request_id})
        return self.http_response(inv.body, request_id)

    def http_response(self, payload: bytes, request_id: str):
        """Payload format 2.0 response rules: an object with statusCode is the response; anything else
        is a 200 JSON body."""
        try:
            doc = json.loads(payload or b"null")
        except ValueError:
            return self._json(500, {"message": "Internal Server Error"}, {"apigw-requestid": request_id})
        if not isinstance(doc, dict) or "statusCode" not in doc:
            return self._reply(200, json.dumps(doc).encode(), {"Content-Type": "application/json", "apigw-requestid": request_id})
        headers = [(k, str(v)) for k, v in (doc.get("headers") or {}).items()]
        for k, values in (doc.get("multiValueHeaders") or {}).items():
            headers += [(k, str(v)) for v in values]
        headers += [("Set-Cookie", c) for c in doc.get("cookies") or []]
        headers.append(("apigw-requestid", request_id))
        body = doc.get("body") or ""
        raw = base64.b64decode(body) if doc.get("isBase64Encoded") else str(body).encode()
        self._reply(int(doc["statusCode"]), raw, headers)


# --- main ----------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--env-file", help="KEY=VALUE file: the functions' configuration (over the template's literal values)")
    p.add_argument("--template", default=str(ROOT / "template.yaml"))
    p.add_argument("--concurrency", type=int, default=10,
                   help="instances per function that may run at once; more concurrent invocations are throttled (default 10)")
    p.add_argument("--concurrency-override", action="append", default=[], metavar="FUNCTION=N")
    p.add_argument("--timeout-override", action="append", default=[], metavar="FUNCTION=SECONDS",
                   help="instead of the template's Timeout (for experiments; the default is the template's)")
    p.add_argument("--init-timeout", type=float, default=10.0, help="seconds an instance may take to initialise (Lambda: 10)")
    p.add_argument("--watch", action="store_true", help="rebuild and replace instances when the sources change")
    p.add_argument("--no-build", action="store_true", help="serve the executables already in --bin-dir (no cargo build)")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "debug"),
                   help="where the functions' executables are, named after the functions (default target/debug)")
    p.add_argument("--build-timeout", type=float, default=1800)
    p.add_argument("--state-dir", default=str(ROOT / ".local" / "lambda"))
    p.add_argument("--state-file", default=str(ROOT / ".local" / "lambda-instances.json"),
                   help="the status document, rewritten on every change (pids of every instance)")
    p.add_argument("--function-log", default=str(ROOT / ".local" / "functions.log"))
    p.add_argument("--build-log", default=str(ROOT / ".local" / "build.log"))
    args = p.parse_args()

    base_env = read_env_file(args.env_file) if args.env_file else {}
    tpl = Template(Path(args.template), "kyc-relay", base_env.get("AWS_REGION", "eu-central-1"))
    specs = functions_from_template(tpl)
    if not specs:
        p.error("no AWS::Serverless::Function in the template")
    for kv in args.concurrency_override + args.timeout_override:
        name = kv.partition("=")[0]
        if name not in specs:
            p.error(f"{kv}: no function {name!r} (have {sorted(specs)})")
    global SPAWNER
    SPAWNER = Spawner()
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(Path(args.state_dir) / "code", ignore_errors=True)  # builds of an earlier run
    service = Service(args, specs, base_env)

    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            os._exit(130)
        log(f"{signal.Signals(signum).name}: stopping")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    if args.no_build:
        service.version = 1
        target = service.code_dir / "v1"
        target.mkdir(parents=True, exist_ok=True)
        for name in service.functions:
            src = Path(args.bin_dir) / name
            if not src.exists():
                p.error(f"--no-build: {src} does not exist (cargo build first)")
            shutil.copy2(src, target / name)
    elif not service.build():
        log("the first build failed: nothing to serve")
        return 1
    if stop.is_set():
        return 130

    handler = type("Front", (FrontHandler,), {"service": service})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="front", daemon=True).start()
    if args.watch:
        threading.Thread(target=service.watch, args=(stop,), name="watch", daemon=True).start()
    service.publish()
    for f in service.functions.values():
        log(f"{f.spec.name}: timeout {f.spec.timeout} s, memory {f.spec.memory} MB (not enforced), "
            f"up to {f.concurrency} instances, routes {f.spec.routes or '-'}")
    log(f"serving on http://127.0.0.1:{args.port} (build v{service.version}{', watching sources' if args.watch else ''})")
    while not stop.wait(0.5):
        pass
    server.shutdown()
    service.shutdown()
    service.publish()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
