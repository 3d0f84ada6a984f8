"""The trace backend's cost, side by side with its peers, as ratios to native.

    .venv/bin/python bench/trace_overhead.py [--runs N]      (as root)

Workloads, each run in a busybox root by every runner found on this host:
  - start: /bin/true, the runner's own start-up and teardown;
  - syscalls: one process making 400,000 system calls the trace backend does not judge
    (dd's reads and writes): what the seccomp prefilter is for (the 1.15x target);
  - fork-exec: a shell loop of pipelines: every new task costs the trace backend two stops
    (the fork event and the child's first stop), handled in Python;
  - judged: a loop of `kill -0 $$`, `hostname` and `uname`: calls the trace backend stops
    and judges.
Runners: native (chroot), hyjail --backend ns, hyjail --backend trace, both of the last
again with the tracer and the jail pinned to one CPU (taskset; ratios to native on one CPU),
strace -f, proot. `--only WORD` keeps the runners whose name has WORD (and native);
`--workloads a,b` keeps those workloads.
Each figure is the median of N runs: "wall" from the runner's start to its exit, "inside"
the workload alone, timed in the jail by a static stopwatch (bench/stopwatch.c, built into
the root), so the runner's own start-up and teardown are out of it; ratios are of "inside"
to native's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HYJAIL = [sys.executable, "-m", "hyjail"]

WORKLOADS = {
    "start": "true",
    "syscalls": "dd if=/dev/zero of=/tmp/data bs=512 count=100000 2>/dev/null && "
                "dd if=/tmp/data of=/dev/null bs=512 2>/dev/null; rm /tmp/data",
    "fork-exec": "i=0; while [ $i -lt 300 ]; do echo $i | cat | tr 0-9 a-j >/tmp/out; "
                 "cat /tmp/out >/dev/null; i=$((i+1)); done",
    "judged": "i=0; while [ $i -lt 3000 ]; do kill -0 $$; i=$((i+1)); done; "
              "j=0; while [ $j -lt 300 ]; do hostname >/dev/null; uname -n >/dev/null; "
              "j=$((j+1)); done",
}


def runners(root: str) -> dict[str, list[str] | None]:
    """Each runner's argv prefix for `/bin/sh -c SCRIPT` in root; None where it is missing."""
    def found(tool: str, argv: list[str]) -> list[str] | None:
        return argv if shutil.which(tool) else None
    return {
        "native (chroot)": ["chroot", root],
        "hyjail ns": [*HYJAIL, "run", "--backend", "ns", root, "bench", "127.0.0.1"],
        "hyjail trace": [*HYJAIL, "run", "--backend", "trace", root, "bench", "127.0.0.1"],
        # Where the tracer runs relative to its tracees: all on one CPU, against native there.
        "native, 1 CPU": found("taskset", ["taskset", "-c", "0", "chroot", root]),
        "trace, 1 CPU": found("taskset", ["taskset", "-c", "0", *HYJAIL, "run", "--backend",
                                          "trace", root, "bench", "127.0.0.1"]),
        "strace -f": found("strace", ["strace", "-f", "-qq", "-o", "/dev/null", "chroot",
                                      root]),
        "proot": found("proot", ["proot", "-w", "/", "-r", root]),
    }


def stopwatched(script: str) -> str:
    """The script, printing only how long it took inside (ns) on stdout."""
    return f't0=$(/bin/stopwatch); {{ {script}; }} >/dev/null; echo $(( $(/bin/stopwatch) - t0 ))'


def timed(argv: list[str], runs: int) -> tuple[float, float]:
    """Median (wall, inside) seconds."""
    walls, insides = [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
        walls.append(time.perf_counter() - start)
        insides.append(int(done.stdout.split()[-1]) / 1e9)
    return statistics.median(walls), statistics.median(insides)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", metavar="WORD", help="Only runners whose name has WORD.")
    parser.add_argument("--workloads", metavar="A,B", help="Only these workloads.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (jails and chroot need it)")
    sys.path.insert(0, os.path.dirname(HERE))
    from hyjail.rootfs import busybox
    with tempfile.TemporaryDirectory() as top:
        root = busybox.build(os.path.join(top, "root"))
        subprocess.run(["gcc", "-static", "-O2", "-o", os.path.join(root, "bin", "stopwatch"),
                        os.path.join(HERE, "stopwatch.c")], check=True)
        table = {name: argv for name, argv in runners(root).items()
                 if name.startswith("native") or not args.only or args.only in name}
        print(f"{'workload':<10} {'runner':<16} {'wall s':>8} {'inside s':>9} {'x native':>9}",
              flush=True)
        natives: dict[str, float] = {}
        chosen = args.workloads.split(",") if args.workloads else list(WORKLOADS)
        for workload, script in WORKLOADS.items():
            if workload not in chosen:
                continue
            for name, prefix in table.items():
                if prefix is None:
                    print(f"{workload:<10} {name:<16} {'missing':>8}", flush=True)
                    continue
                wall, inside = timed([*prefix, "/bin/sh", "-c", stopwatched(script)], args.runs)
                # Ratios are to the native run on as many CPUs.
                baseline = "native, 1 CPU" if "1 CPU" in name else "native (chroot)"
                if name == baseline:
                    natives[name] = inside
                ratio = inside / max(natives[baseline], 1e-9)
                shown = f"{ratio:>8.2f}x" if workload != "start" else ""
                print(f"{workload:<10} {name:<16} {wall:>8.3f} {inside:>9.3f} {shown}",
                      flush=True)

if __name__ == "__main__":
    main()
