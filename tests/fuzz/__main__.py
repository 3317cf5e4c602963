"""The differential fuzzer's driver: ``python -m tests.fuzz`` from the repository root.

    python -m tests.fuzz --seconds 120            # a bounded run, 2 worker processes
    python -m tests.fuzz --cases 5000 --start 10**6
    python -m tests.fuzz --replay SEED            # one case, in this process, verbose
    python -m tests.fuzz --op grad.max_pool2d --seconds 60

Cases run in worker processes (``--worker`` reads seeds on stdin and writes
one result line each), so that a crash, a hang or a sanitizer report (the
worker dies with its report on stderr) is caught and attributed to its seed.
The exit status is 1 if anything was found. Every finding prints the command
that replays it.
"""

import argparse
import faulthandler
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter

CASE_TIMEOUT = 120  # seconds; far above any case's time, even under the sanitizers


def _worker(op):
    from . import cases

    faulthandler.enable()
    out = sys.stdout
    # the driver's own test (tests/test_fuzz.py): this seed segfaults the worker
    crash = int(os.environ.get("FASTCONV_FUZZ_CRASH_SEED", -1))
    for line in sys.stdin:
        seed = int(line)
        if seed == crash:
            import ctypes
            ctypes.string_at(0)
        try:
            name, status = cases.run(seed, op)
            result = {"seed": seed, "op": name, "status": status}
        except cases.Finding as exc:
            result = {"seed": seed, "op": "?", "status": "finding", "message": str(exc)[:3000]}
        except Exception as exc:  # the harness itself: still a finding, with its traceback
            result = {"seed": seed, "op": "?", "status": "finding",
                      "message": f"{type(exc).__name__}: {exc}\n"
                                 f"{traceback.format_exc()[-2000:]}"}
        if result["op"] == "?":
            result["op"] = cases.generate(seed, op)[0]
        out.write(json.dumps(result) + "\n")
        out.flush()


class _Runner:
    """One worker process, restarted after a crash."""

    def __init__(self, op):
        self.op = op
        self.proc = None
        self.err = None

    def start(self):
        self.err = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "tests.fuzz", "--worker"]
        if self.op:
            cmd += ["--op", self.op]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, bufsize=0)
        self.buf = b""

    def run(self, seed):
        """The result dict of `seed`; a crash or hang is a finding."""
        if self.proc is None:
            self.start()
        self.proc.stdin.write(f"{seed}\n".encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + CASE_TIMEOUT
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0, left))
            if not ready:
                self.proc.kill()
                return self._dead(seed, f"hang: no answer in {CASE_TIMEOUT} s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                self.proc.wait()
                return self._dead(seed, f"crash: the worker exited with {self.proc.returncode}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _dead(self, seed, what):
        self.proc.wait()
        self.err.seek(0)
        report = self.err.read().decode(errors="replace")[-6000:]
        self.proc = None
        return {"seed": seed, "op": "?", "status": "finding", "message": f"{what}\n{report}"}

    def stop(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def _drive(args):
    counts = {}
    findings = []
    lock = threading.Lock()
    next_seed = [args.start]
    stop_at = time.monotonic() + args.seconds if args.seconds else None
    limit = args.start + args.cases if args.cases else None

    def take():
        with lock:
            if stop_at is not None and time.monotonic() >= stop_at:
                return None
            if limit is not None and next_seed[0] >= limit:
                return None
            seed = next_seed[0]
            next_seed[0] += 1
            return seed

    def loop():
        runner = _Runner(args.op)
        while (seed := take()) is not None:
            result = runner.run(seed)
            if result["op"] == "?":
                from . import cases
                result["op"] = cases.generate(seed, args.op)[0]
            with lock:
                counts.setdefault(result["op"], Counter())[result["status"]] += 1
                if result["status"] == "finding":
                    findings.append(result)
                    print(f"FINDING seed {seed} ({result['op']}): {result['message']}\n"
                          f"  replay: python -m tests.fuzz --replay {seed}"
                          + (f" --op {args.op}" if args.op else ""), flush=True)
        runner.stop()

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    total = sum(sum(c.values()) for c in counts.values())
    print(f"fuzz: {total} cases (seeds {args.start}..{next_seed[0] - 1}) in {elapsed:.0f} s, "
          f"{len(findings)} findings")
    print(f"{'op':32s} {'cases':>7s} {'ok':>7s} {'raised':>7s} {'skipped':>7s} {'known':>6s} "
          f"{'found':>6s}")
    for op in sorted(counts):
        c = counts[op]
        print(f"{op:32s} {sum(c.values()):7d} {c['ok']:7d} {c['raised']:7d} {c['skipped']:7d} "
              f"{c['known']:6d} {c['finding']:6d}")
    print("(raised: both backends raised the same error; skipped: a valid geometry too big "
          "to fuzz; known: a defect held by a strict xfail in tests/test_fuzz.py)")
    return 1 if findings else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long")
    parser.add_argument("--cases", type=int, default=0, help="stop after this many cases")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--op", default=None, help="fuzz only this op (e.g. grad.max_pool2d)")
    parser.add_argument("--replay", type=int, default=None, help="run one seed, verbosely")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.op)
        return 0
    from . import cases

    if args.op is not None and args.op not in cases.OPS:
        parser.error(f"--op must be one of {cases.OPS}")
    if args.replay is not None:
        print(cases.describe(args.replay, args.op))
        name, status = cases.run(args.replay, args.op)
        print(f"{name}: {status}")
        return 0
    if not args.seconds and not args.cases:
        args.seconds = 60
    return _drive(args)


if __name__ == "__main__":
    sys.exit(main())
