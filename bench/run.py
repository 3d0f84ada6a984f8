"""hyjail beside its peers, in one run: start latency, the cost inside, scale, and network.

    .venv/bin/python bench/run.py [--rounds N] [--scale 1,10,50,100] [--json] [--readme]
        [--scenarios start,enter,inside,scale,network,lan,podman]              (as root)

Every scenario runs hyjail and its peers in alternation (A B C A B C ..., after a warm-up
round that is thrown away) and reports medians and ratios measured in the same run:
  start    start to exit of /bin/true in a busybox root (ratios to crun run), beside the
           Python floor (bench/floor.py: the least a Python jail does);
  enter    /bin/true in a jail or container already running: jexec (and `hyjail exec`) into
           a persistent jail, crun exec and runc exec into a detached container (ratios to
           crun exec);
  inside   workloads timed inside by a static stopwatch, so start-up is left out (ratios to
           native, the same root by chroot; on one CPU, to native on one CPU): find over a
           tree, a fork loop, a stat loop, and a bind/connect loop the trace backend judges;
  scale    N jails with their own addresses started at once (N = 1, 10, 50, 100): the time until
           all run, per jail, and the memory (PSS) of hyjail's own processes per jail;
  network  requests per second from wrk to busybox httpd in a jail at its address, and to the
           same server on the host's loopback;
  lan      requests per second from wrk on a LAN machine to busybox httpd in a jail on the LAN
           (macvlan, --interface) and to the same server on the host, in a network of the
           bench's own (tests/world.py: namespaces that play the host and a LAN machine);
  podman   `podman run --rm IMAGE true` with hyjail-oci, crun and runc as its OCI runtime, by a
           podman of the bench's own (goal: hyjail-oci within 1.5x of crun; where crun cannot
           run, ratios to runc, and a runtime that fails its warm-up shown with its reason).
--readme rewrites the README's results between its bench markers, with the machine it ran on.
Network safety (SPEC section 4): jails use 10.77.209.0/24-10.77.212.0/24 behind their own veths,
or 127.77.210.0/24; traffic goes only to those jails' own addresses, or stays inside the
bench's own network namespaces (lan); podman's containers have no network but loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import peers

WORKLOADS = {
    "find": "find /data | wc -l",
    "fork loop": "i=0; while [ $i -lt {forks} ]; do /bin/true; i=$((i+1)); done",
    "stat loop": "ls -lR /data",
    "bind/connect": "/bin/netloop {calls}",
}
SIZES = {"forks": 400, "calls": 1500}  # the loops' lengths; --quick: a tenth
SCALE = (1, 10, 50, 100)
README = os.path.join(os.path.dirname(peers.BENCH), "README.md")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
GOAL = 1.5  # hyjail-oci's podman run within this of crun's


def alternate(runners: dict[str, list[str]], rounds: int, measure) -> dict[str, list[float]]:
    """Each runner once per round, in turn, after one warm-up round; the measurements."""
    results: dict[str, list[float]] = {name: [] for name in runners}
    for n in range(rounds + 1):
        for name, argv in runners.items():
            value = measure(argv)
            if n:
                results[name].append(value)
    return results


def wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - start


def inside(argv: list[str]) -> float:
    done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
    return int(done.stdout.split()[-1]) / 1e9


def stopwatched(script: str) -> str:
    return f't0=$(/bin/stopwatch); {{ {script}; }} >/dev/null; echo $(( $(/bin/stopwatch) - t0 ))'


def start_scenario(top: str, root: str, rounds: int) -> dict:
    runners = {name: argv for name, argv in peers.start_runners(top, root).items() if argv}
    return _to_crun(alternate(runners, rounds, wall), "crun run")


def enter_scenario(top: str, root: str, rounds: int) -> dict:
    with peers.enter_runners(top, root) as runners:
        return _to_crun(alternate(runners, rounds, wall), "crun exec")


def _to_crun(times: dict[str, list[float]], crun_name: str) -> dict:
    """Each runner's median (ms) and its ratio to crun's (None where crun did not run)."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    crun = medians.get(crun_name)
    return {name: {"median_ms": round(m * 1000, 1),
                   "x_crun": round(m / crun, 2) if crun else None}
            for name, m in medians.items()}


def inside_scenario(root: str, rounds: int, divide: int = 1) -> dict:
    runners = {name: argv for name, argv in peers.inside_runners(root).items() if argv}
    sizes = {name: size // divide for name, size in SIZES.items()}
    table = {}
    for workload, script in WORKLOADS.items():
        argvs = {name: [*argv, "/bin/sh", "-c", stopwatched(script.format(**sizes))]
                 for name, argv in runners.items()}
        times = alternate(argvs, rounds, inside)
        medians = {name: statistics.median(values) for name, values in times.items()}
        # A runner on one CPU is compared with native on one CPU.
        table[workload] = {name: {"median_ms": round(m * 1000, 1),
                                  "x_native": round(m / medians["native, 1 CPU" if "1 CPU" in name
                                                                 else "native"], 2)}
                           for name, m in medians.items()}
    return table


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def hyjail_processes(supervisor: int) -> list[int]:
    """The supervisor and its descendants that are hyjail's own (not the jailed command)."""
    from hyjail.linux import descendants
    own = [supervisor]
    for child, _ in descendants(supervisor):
        with contextlib.suppress(OSError), open(f"/proc/{child}/comm") as f:
            if f.read().strip() in ("hyjail-init", "python3", "python"):
                own.append(child)
    return own


def helpers() -> list[int]:
    """hyjail's shared helpers (the network helper), counted once for all jails."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"hyjail.net.netd" in f.read():
                    found.append(int(entry))
    return found


def scale_once(root: str, count: int) -> dict:
    jails = []
    start = time.perf_counter()
    for n in range(count):
        ip = f"10.77.{211 + n // 250}.{2 + n % 250}"
        jails.append(subprocess.Popen(
            [*peers.HYJAIL, "run", "--backend", "ns", "--host-ip", peers.HOST_IP, root,
             f"s{n}", ip, "/bin/sh", "-c", "echo up; read line"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    try:
        up = sum(jail.stdout.readline() == "up\n" for jail in jails)
        total = time.perf_counter() - start
        own = sum(pss_kib(pid) for jail in jails for pid in hyjail_processes(jail.pid))
        shared = sum(pss_kib(pid) for pid in helpers())
    finally:
        for jail in jails:
            with contextlib.suppress(BrokenPipeError):
                jail.stdin.write("done\n")
                jail.stdin.close()
        for jail in jails:
            jail.wait()
    return {"jails": count, "started": up, "total_s": round(total, 3),
            "per_jail_ms": round(total / count * 1000, 1),
            "pss_per_jail_mib": round((own + shared) / count / 1024, 1)}


def scale_scenario(root: str, counts: tuple[int, ...] = SCALE) -> dict:
    scale_once(root, 1)  # warm-up
    rows = {str(n): scale_once(root, n) for n in counts}
    single = rows["1"]["per_jail_ms"]
    for row in rows.values():
        row["x_single"] = round(row["per_jail_ms"] / single, 2)
    return rows


def network_scenario(root: str, rounds: int) -> dict:
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    _www(root)
    # Each round at addresses of its own: a round's tens of thousands of closed connections
    # sit in TIME_WAIT for a minute, and the next round to the same address would find the
    # client's ports taken (the host reuses them early on its loopback only).
    servers = {
        "hyjail ns": lambda n: ([*peers.HYJAIL, "run", "--backend", "ns", "--host-ip",
                                 peers.HOST_IP, root, "web", _nth(peers.JAIL_IP, n)],
                                _nth(peers.JAIL_IP, n)),
        "hyjail trace": lambda n: ([*peers.HYJAIL, "run", "--backend", "trace", root, "web",
                                    _nth(peers.TRACE_IP, n)], _nth(peers.TRACE_IP, n)),
        "host loopback": lambda n: (["chroot", root], _nth("127.0.0.2", n)),
    }
    medians = _wrk_rounds(servers, rounds, lambda ip, server: _wait_for(ip, 8080, server), [])
    return {name: {"requests_per_s": round(m), "x_host": round(m / medians["host loopback"], 2)}
            for name, m in medians.items()}


def _wrk_rounds(servers: dict, rounds: int, wait, client: list[str]) -> dict[str, float]:
    """Median requests/s of wrk (run under the `client` prefix) against busybox httpd served
    by each of `servers`: name -> (n -> (prefix, address)), a fresh address each round so no
    round's TIME_WAIT sockets slow the next. Round 0 warms up and is not counted."""
    rps: dict[str, list[float]] = {name: [] for name in servers}
    for n in range(rounds + 1):
        for name, made in servers.items():
            prefix, ip = made(n)
            with subprocess.Popen([*prefix, "/bin/busybox", "httpd", "-f", "-p", f"{ip}:8080",
                                   "-h", "/www"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) as server:
                try:
                    wait(ip, server)
                    out = subprocess.run([*client, "wrk", "-t2", "-c16", "-d3s",
                                          f"http://{ip}:8080/index.html"],
                                         capture_output=True, text=True, check=True).stdout
                    if n:
                        rps[name].append(float(re.search(r"Requests/sec:\s+([\d.]+)",
                                                         out).group(1)))
                finally:
                    server.terminate()
                    server.wait()
    return {name: statistics.median(values) for name, values in rps.items()}


def _nth(address: str, n: int) -> str:
    """The address n after `address` (its last byte counted up)."""
    head, _, last = address.rpartition(".")
    return f"{head}.{int(last) + n}"


def _www(root: str) -> None:
    """The page the servers serve: /www/index.html in the root."""
    www = os.path.join(root, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("hello from a jail\n" * 20)


def lan_scenario(root: str, rounds: int) -> dict:
    """wrk on the LAN machine of a network of the bench's own, against the jail on the LAN
    (macvlan) and against the same server on the host itself."""
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    _www(root)
    sys.path.insert(0, os.path.join(os.path.dirname(peers.BENCH), "tests"))
    from world import LAN_HOST, World
    with World() as world:
        # The LAN machine reuses its TIME_WAIT ports (its namespace's own setting), as the
        # host does on its loopback: a round's closed connections do not slow the next.
        world.sh(world.lan, "sysctl -qw net.ipv4.tcp_tw_reuse=1")
        servers = {
            "hyjail ns macvlan": lambda n: ([*world.enter(world.host), *peers.HYJAIL, "run",
                                             "--interface", "uplink", root, "web",
                                             "10.77.100.50"], "10.77.100.50"),
            "host": lambda n: ([*world.enter(world.host), "chroot", root], LAN_HOST),
        }

        def answered(ip: str, server: subprocess.Popen) -> None:
            url = f"http://{ip}:8080/index.html"
            deadline = time.monotonic() + 20
            while world.fetch(world.lan, url, 2) == "":
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"no server answered at {url}")
                time.sleep(0.05)

        medians = _wrk_rounds(servers, rounds, answered, world.enter(world.lan))
    return {name: {"requests_per_s": round(m), "x_host": round(m / medians["host"], 2)}
            for name, m in medians.items()}


def podman_scenario(root: str, rounds: int) -> dict:
    """Each runtime's `podman run --rm IMAGE true`, ratios to crun (to runc where crun fails)."""
    if not shutil.which("podman"):
        return {"skipped": "podman is not installed (script/bootstrap installs it)"}
    with peers.podman(root) as (base, env):
        limits: list[str] = []
        failed = _failures(peers.podman_runners(base, limits), env)
        if any("rlimit" in reason.lower() for reason in failed.values()):
            limits = peers.PODMAN_LIMITS  # for every runtime alike, so the comparison is fair
            failed = _failures(peers.podman_runners(base, limits), env)
        runners = {name: argv for name, argv in peers.podman_runners(base, limits).items()
                   if name not in failed}
        times = alternate(runners, rounds, lambda argv: wall(argv, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = next((name for name in ("crun", "runc") if name in medians), None)
    rows = {name: {"unavailable": failed[name]} if name in failed else
            {"median_ms": round(medians[name] * 1000, 1),
             "x_baseline": round(medians[name] / medians[baseline], 2) if baseline else None}
            for name in peers.PODMAN_RUNTIMES}
    ours = rows["hyjail-oci"].get("x_baseline")
    return {"baseline": baseline, "limits": " ".join(limits) or None,
            "goal": f"hyjail-oci within {GOAL}x of crun",
            "goal_met": ours <= GOAL if baseline == "crun" and ours is not None else None,
            "runtimes": rows}


def _failures(runners: dict[str, list[str]], env: dict[str, str]) -> dict[str, str]:
    """Each runner once, as a warm-up: for each that failed, the first line of its complaint."""
    failed = {}
    for name, argv in runners.items():
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            failed[name] = "no exit within 120 s"
            continue
        if done.returncode:
            failed[name] = (done.stderr.strip().splitlines()
                            or [f"exit status {done.returncode}"])[0]
    return failed


def _wait_for(ip: str, port: int, server: subprocess.Popen) -> None:
    """Until the server answers. A jail's address is tried only through its own veth
    (SO_BINDTODEVICE, once the registry names it), never by the host's default route."""
    import socket
    link = None
    deadline = time.monotonic() + 20
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server at {ip} exited ({server.returncode})")
        if not ip.startswith("127."):
            link = link or _jail_link(ip)
        if ip.startswith("127.") or link:
            with socket.socket() as probe:
                if link:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
                probe.settimeout(1)
                with contextlib.suppress(OSError):
                    probe.connect((ip, port))
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no server answered at {ip}:{port}")
        time.sleep(0.02)


def _jail_link(ip: str) -> str | None:
    """The host end of the veth of the running jail holding ip, once it is up."""
    jails = "/run/hyjail/jails"
    for entry in os.listdir(jails) if os.path.isdir(jails) else []:
        with contextlib.suppress(OSError, ValueError), open(os.path.join(jails, entry)) as f:
            record = json.load(f)
            if ip in record["addresses"] and record["init_pid"]:
                return record["host_link"]
    return None


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        memory = int(f.readline().split()[1]) // 1024 // 1024
    return (f"{time.strftime('%Y-%m-%d')}, Linux {platform.release()}, {model}, "
            f"{os.cpu_count()} CPUs, {memory} GiB")


def as_text(results: dict, rounds: int) -> str:
    lines = [f"Measured {results['machine']}; medians of {rounds} alternating rounds."]
    if "start" in results:
        lines += ["", "Start to exit of /bin/true (ms, and x crun run):", ""]
        lines += [f"    {name:<24} {row['median_ms']:>8.1f}  {_x(row['x_crun'])}"
                  for name, row in results["start"].items()]
    if "enter" in results:
        lines += ["", "/bin/true in a running jail or container (ms, and x crun exec):", ""]
        lines += [f"    {name:<24} {row['median_ms']:>8.1f}  {_x(row['x_crun'])}"
                  for name, row in results["enter"].items()]
    if "inside" in results:
        workloads = list(results["inside"])
        names = list(results["inside"][workloads[0]])
        lines += ["", "Inside the jail, timed by the workload itself (ms, and x native):", "",
                  "    " + f"{'':<24}" + "".join(f"{w:>18}" for w in workloads)]
        for name in names:
            lines.append("    " + f"{name:<24}" + "".join(
                f"{results['inside'][w][name]['median_ms']:>10.1f} "
                f"{_x(results['inside'][w][name]['x_native'])}" for w in workloads))
    if "scale" in results:
        lines += ["", "Jails started at once (ns, each with its own veth and address):", "",
                  f"    {'jails':>5} {'started':>8} {'total s':>8} {'per jail ms':>12} "
                  f"{'x single':>9} {'PSS MiB/jail':>13}"]
        lines += [f"    {r['jails']:>5} {r['started']:>8} {r['total_s']:>8.2f} "
                  f"{r['per_jail_ms']:>12.1f} {_x(r['x_single']):>9} "
                  f"{r['pss_per_jail_mib']:>13.1f}" for r in results["scale"].values()]
    for key, title in (("network", "HTTP requests per second (wrk, 16 connections, busybox "
                                   "httpd):"),
                       ("lan", "HTTP requests per second from a LAN machine (wrk, 16 "
                               "connections, busybox httpd; a network of the bench's own):")):
        if key not in results:
            continue
        lines += ["", title, ""]
        if "skipped" in results[key]:
            lines.append(f"    skipped: {results[key]['skipped']}")
        else:
            lines += [f"    {name:<18} {row['requests_per_s']:>9}  {_x(row['x_host'])} host"
                      for name, row in results[key].items()]
    if "podman" in results:
        lines += _podman_text(results["podman"])
    return "\n".join(lines)


def _podman_text(podman: dict) -> list[str]:
    if "skipped" in podman:
        return ["", "podman run --rm IMAGE true, by OCI runtime:", "",
                f"    skipped: {podman['skipped']}"]
    baseline = podman["baseline"]
    lines = ["", f"podman run --rm IMAGE true, by OCI runtime (ms, and x {baseline or '-'}; "
             f"goal: {podman['goal']}):", ""]
    lines += [f"    {name:<12} {row['median_ms']:>8.1f}  {_x(row['x_baseline'])}"
              if "median_ms" in row else f"    {name:<12} unavailable: {row['unavailable']}"
              for name, row in podman["runtimes"].items()]
    lines.append("")
    if baseline != "crun":
        lines.append("    crun does not run here: ratios are to runc instead."
                     if baseline else "    neither crun nor runc runs here: no ratios.")
    elif podman["goal_met"] is not None:
        lines.append(f"    goal {'met' if podman['goal_met'] else 'not met'}.")
    if podman["limits"]:
        lines += [f"    every runtime with {podman['limits']}: podman's default",
                  "    limits (1048576) are more than this host lets crun and runc set."]
    return lines


def _x(ratio: float | None) -> str:
    return f"{ratio:>6.2f}x" if ratio is not None else "      -"


def write_readme(text: str) -> None:
    with open(README) as f:
        readme = f.read()
    if BEGIN not in readme:
        raise SystemExit(f"bench: {README} has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(README, "w") as f:
        f.write(f"{head}{BEGIN}\n\n{text}\n\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scenarios", default="start,enter,inside,scale,network,lan,podman")
    parser.add_argument("--scale", default=",".join(map(str, SCALE)),
                        help="How many jails at once, in turn (default %(default)s).")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--readme", action="store_true", help="Rewrite README's results.")
    parser.add_argument("--quick", action="store_true",
                        help="A smoke test's run: the inside loops a tenth as long, one round.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (jails, chroot and the OCI runtimes need it)")
    wanted = args.scenarios.split(",")
    results: dict = {"machine": machine(), "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="hyjail-bench-") as top:
        root = peers.build_root(top)
        if "start" in wanted:
            results["start"] = start_scenario(top, root, args.rounds)
        if "enter" in wanted:
            results["enter"] = enter_scenario(top, root, args.rounds)
        if "inside" in wanted:
            results["inside"] = (inside_scenario(root, 1, divide=10) if args.quick else
                                 inside_scenario(root, max(3, args.rounds // 2)))
        if "scale" in wanted:
            results["scale"] = scale_scenario(root, tuple(int(n) for n in args.scale.split(",")))
        if "network" in wanted:
            results["network"] = network_scenario(root, 3)
        if "lan" in wanted:
            results["lan"] = lan_scenario(root, 3)
        if "podman" in wanted:
            results["podman"] = podman_scenario(root, args.rounds)
    text = as_text(results, args.rounds)
    print(json.dumps(results, indent=1) if args.json else text)
    if args.readme:
        write_readme(text)


if __name__ == "__main__":
    main()
