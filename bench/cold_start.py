#!/usr/bin/env python3
"""Cold start of the three functions against their floor: process start to the first Lambda Runtime
API `GET .../next`.

Serves a mock Runtime API on 127.0.0.1, spawns each release binary N times with a valid
configuration (config/local.env, dummy queue URLs and table names, DESTINATIONS_CONFIG inline; no
AWS endpoint: init makes no AWS calls unless `*_SSM` names are given), and records for each run:
- ms from just before `Popen` to the arrival of `GET /2018-06-01/runtime/invocation/next`;
- CPU time the process had used by then (sum of /proc/<pid>/task/*/schedstat, ns precision);
- peak RSS by then (/proc/<pid>/status VmHWM); the process is then killed (SIGKILL).
The floor is `empty-handler` (bench/empty-handler: an empty `lambda_runtime` handler built with the
same release profile, in the same bin dir), measured in the same run; each function's median is also
given as a multiple of the floor's. The `probe` line is a 20-line C program doing only connect + GET
/next: the harness's own cost (fork/exec, dynamic loading of libc, one loopback connection).

Standard library only. Usage (from the repository root, after `cargo build --release --bins && cargo build --release -p empty-handler`: two builds, so the functions get the features they are deployed with):
  python3 bench/cold_start.py [--runs 30] [--bin-dir target/release] [--inherit-env] [--set KEY=VALUE ...]
`--inherit-env` passes this shell's environment through (e.g. SSL_CERT_FILE/SSL_CERT_DIR, which
this machine sets and Lambda does not); by default the environment is Lambda-like and minimal.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEXT = "/2018-06-01/runtime/invocation/next"

PROBE_C = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
  const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
  char host[64]; int port;
  if (!api || sscanf(api, "%63[^:]:%d", host, &port) != 2) return 2;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(port);
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(s, (struct sockaddr *)&a, sizeof a)) return 3;
  char req[256];
  int n = snprintf(req, sizeof req, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\n\r\n", api);
  write(s, req, n);
  char buf[512]; read(s, buf, sizeof buf);
  return 0;
}
"""


class RuntimeApi:
    """A minimal Runtime API: one accept loop on its own thread, timestamping the moment the request
    head of `GET .../next` has arrived; the connection is left open (the caller kills the process)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.arrivals: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            conn, _ = self.sock.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            t = time.perf_counter_ns()
            line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if line.startswith(f"GET {NEXT} "):
                self.arrivals.put(("next", t, conn))
            else:  # e.g. POST /runtime/init/error: the function reports a failed init
                self.arrivals.put(("other", line, data))
                conn.sendall(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                conn.close()


def parse_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.removeprefix("export ").split("=", 1)
        env[k.strip()] = v.strip().strip("'\"")
    return env


def function_env(name: str, api: str, inherit: bool) -> dict[str, str]:
    env = dict(os.environ) if inherit else {}
    env |= {
        # What Lambda sets for a provided.al2023 function (the relevant part).
        "AWS_LAMBDA_RUNTIME_API": api,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/23/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
        "AWS_SESSION_TOKEN": "test",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": "bootstrap",
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    }
    env |= parse_env_file(ROOT / "config/local.env")  # region, dummy credentials, receiver settings
    env |= {
        "INGEST_QUEUE_URL": "https://sqs.eu-central-1.amazonaws.com/123456789012/kyc-relay-ingest",
        "DELIVERY_QUEUE_URL": "https://sqs.eu-central-1.amazonaws.com/123456789012/kyc-relay-delivery",
        "DELIVERY_DLQ_URL": "https://sqs.eu-central-1.amazonaws.com/123456789012/kyc-relay-delivery-dlq",
        "RETRY_QUEUE_URL": "https://sqs.eu-central-1.amazonaws.com/123456789012/kyc-relay-delivery-retry",
        "RECORDS_TABLE": "kyc-relay-records",
        "ARCHIVE_BUCKET": "kyc-relay-archive-123456789012",
        "DESTINATIONS_CONFIG": json.dumps({"destinations": [
            {"id": "crm", "url": "https://crm.internal.example/kyc", "retry_policy": "incode"},
            {"id": "bi", "url": "https://bi.internal.example/kyc", "providers": ["idnow"], "retry_policy": "idnow"},
        ]}),
    }
    return env


def proc_facts(pid: int) -> tuple[int, int]:
    """(CPU ns used so far, over all threads; peak RSS in kB)."""
    cpu = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return cpu, hwm


class CpuCap:
    """Lambda's CPU share at a memory size (MB / 1769 of one vCPU), emulated with a CFS bandwidth
    limit on a cgroup of our own (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); needs root. Each spawned
    process joins it between fork and exec. Lambda does not document its CFS period: `period_ms`
    is an assumption, and the figure is a model of the throttled case, not a Lambda measurement."""

    def __init__(self, memory_mb: int, period_ms: float):
        self.memory_mb, self.period_ms = memory_mb, period_ms
        period_us = int(period_ms * 1000)
        quota_us = max(1000, int(period_us * memory_mb / 1769))
        name = f"kyc-relay-bench-{os.getpid()}"
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
        if (v2 / "cgroup.controllers").exists():
            self.dir = v2 / name
            self.dir.mkdir()
            (self.dir / "cpu.max").write_text(f"{quota_us} {period_us}")
        else:
            self.dir = v1 / name
            self.dir.mkdir()
            (self.dir / "cpu.cfs_period_us").write_text(str(period_us))
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota_us))
        self.procs = str(self.dir / "cgroup.procs")
        self.share = quota_us / period_us

    def join(self) -> None:  # in the child, before exec
        with open(self.procs, "w") as f:
            f.write(str(os.getpid()))

    def close(self) -> None:
        self.dir.rmdir()


CAP: CpuCap | None = None


def run_once(server: RuntimeApi, argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=CAP.join if CAP else None)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    item = server.arrivals.get(timeout=0.05)
                except queue.Empty:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        out.seek(0)
                        sys.exit(f"{argv[0]} exited ({proc.returncode}) before GET /next:\n{out.read().decode(errors='replace')}")
                    continue
                if item[0] != "next":
                    sys.exit(f"{argv[0]} sent {item[1]}: {item[2].decode(errors='replace')}")
                _, t_next, conn = item
                break
            cpu_ns, hwm_kb = proc_facts(proc.pid)
        finally:
            proc.kill()
            proc.wait()
        conn.close()
        return (t_next - t0) / 1e6, cpu_ns / 1e6, hwm_kb


def build_probe() -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    out_dir = ROOT / "target/bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    src, exe = out_dir / "runtime_probe.c", out_dir / "runtime_probe"
    src.write_text(PROBE_C)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3, help="uncounted runs per binary (page cache)")
    ap.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    ap.add_argument("--binaries", nargs="+", default=["empty-handler", "receiver", "consumer", "dispatcher"],
                    help="the first is the floor the others are compared with")
    ap.add_argument("--memory-mb", type=int,
                    help="cap each process's CPU at Lambda's share for this memory size (MB/1769 of a vCPU, "
                         "CFS bandwidth limit on a cgroup of its own; needs root)")
    ap.add_argument("--cfs-period-ms", type=float, default=20.0,
                    help="CFS period of --memory-mb (Lambda's is not documented; an assumption)")
    ap.add_argument("--inherit-env", action="store_true")
    ap.add_argument("--print-env", metavar="NAME",
                    help="print the environment given to function NAME (shell-quoted KEY=VALUE lines; Runtime API "
                         "127.0.0.1:9, where nothing listens) and exit: for strace/gdb runs, see BENCHMARKS.md")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the functions, e.g. SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
    args = ap.parse_args()

    if args.print_env:
        env = function_env(args.print_env, "127.0.0.1:9", args.inherit_env) | dict(kv.split("=", 1) for kv in args.set)
        print("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()), end="")
        return 0

    server = RuntimeApi()
    api = server.address

    extra = dict(kv.split("=", 1) for kv in args.set)
    targets = []
    probe = build_probe()
    if probe:
        targets.append(("probe (C: connect + GET)", [str(probe)], function_env("probe", api, args.inherit_env)))
    for name in args.binaries:
        exe = Path(args.bin_dir) / name
        if not exe.exists():
            exe = Path(args.bin_dir) / name / "bootstrap"  # cargo lambda layout
        targets.append((name, [str(exe)], function_env(name, api, args.inherit_env) | extra))

    global CAP
    if args.memory_mb:
        CAP = CpuCap(args.memory_mb, args.cfs_period_ms)
    print(f"cold start: {args.runs} runs per binary after {args.warmup} warm-up runs; "
          f"env: {'inherited + Lambda-like' if args.inherit_env else 'Lambda-like, minimal'}"
          f"{' + ' + ' '.join(args.set) if args.set else ''}; bin dir {args.bin_dir}"
          + (f"; CPU capped at {CAP.share:.3f} vCPU ({args.memory_mb} MB, CFS period {args.cfs_period_ms:g} ms)"
             if CAP else ""))
    try:
        report(args, server, targets)
    finally:
        if CAP:
            CAP.close()
    return 0


def report(args, server: RuntimeApi, targets) -> None:
    print(f"{'binary':<26} {'size MB':>8} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'max ms':>8} "
          f"{'CPU ms (med)':>13} {'VmHWM MB (med/max)':>19} {'x floor':>8}")
    floor = None
    for name, argv, env in targets:
        for _ in range(args.warmup):
            run_once(server, argv, env)
        runs = [run_once(server, argv, env) for _ in range(args.runs)]
        ms = [r[0] for r in runs]
        cpu = [r[1] for r in runs]
        hwm = [r[2] / 1024 for r in runs]
        size = os.path.getsize(argv[0]) / 1e6
        median = statistics.median(ms)
        if name == args.binaries[0]:
            floor = median
        ratio = f"{median / floor:>8.2f}" if floor and not name.startswith("probe") else f"{'':>8}"
        print(f"{name:<26} {size:>8.2f} {median:>10.2f} {pct(ms, 0.9):>8.2f} {min(ms):>8.2f} "
              f"{max(ms):>8.2f} {statistics.median(cpu):>13.2f} {statistics.median(hwm):>11.1f}/{max(hwm):<7.1f}"
              f"{ratio}")


if __name__ == "__main__":
    sys.exit(main())
