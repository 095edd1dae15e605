#!/usr/bin/env python3
"""Herald against Nchan on this machine: the same scenarios, the same load generator (`herald bench`),
runs alternated so that the machine's noise hits both alike. Prints a table of both and their ratio,
and writes every run's JSON to .build/compare-nchan/results.json. Where there are publishes, Herald
runs twice: with its default history (SQLite, on disk before a publish is answered) and with its
history in memory, as Nchan keeps its messages.

    scripts/compare-nchan.py                 # every scenario, 3 rounds (about 25 minutes)
    scripts/compare-nchan.py --rounds 1 --scenarios idle-1k,fanout-1k

Installs nginx and its Nchan module from Debian's packages when they are missing, and builds
`herald` in release mode. Everything listens on 127.0.0.1; every run has a time limit.
"""
import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".build" / "compare-nchan"
KEY = "a benchmark key, long enough for HS256 signatures"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"

# name: (bench arguments, the measures to compare, and whether more is better for each).
# latencyFromSchedule (at a rate): from the time each publish was due, so a hub that takes
# publishes later than asked (the publishers wait for its answers) shows it.
SCENARIOS = {
    "idle-1k": (["--idle", "--subscribers", "1000", "--duration", "2"],
                [("serverKilobytesPerConnection", False), ("connectionsPerSecond", True),
                 ("serverCPUMicrosecondsPerConnection", False)]),
    "idle-5k": (["--idle", "--subscribers", "5000", "--duration", "2"],
                [("serverKilobytesPerConnection", False), ("connectionsPerSecond", True),
                 ("serverCPUMicrosecondsPerConnection", False)]),
    "idle-10k": (["--idle", "--subscribers", "10000", "--duration", "2"],
                 [("serverKilobytesPerConnection", False), ("connectionsPerSecond", True),
                  ("serverCPUMicrosecondsPerConnection", False)]),
    # A reconnect storm: 5 000 clients connect at once, as to a hub that restarted; connectSeconds
    # is the time until every subscription's head came.
    "storm-5k": (["--idle", "--subscribers", "5000", "--in-flight", "5000", "--duration", "1"],
                 [("connectSeconds", False), ("serverCPUMicrosecondsPerConnection", False)]),
    "fanout-1k": (["--subscribers", "1000", "--duration", "20", "--publishers", "4"],
                  [("deliveriesPerSecond", True), ("deliveriesPerServerCPUSecond", True),
                   ("latency.p50", False), ("latency.p99", False), ("latency.max", False),
                   ("generatorCPUSeconds", False)]),
    "fanout-10k-10/s": (["--subscribers", "10000", "--rate", "10", "--duration", "10"],
                        [("publishesPerSecond", True), ("deliveriesPerSecond", True), ("deliveriesPerServerCPUSecond", True),
                         ("latency.p50", False), ("latency.p99", False),
                         ("latencyFromSchedule.p50", False), ("latencyFromSchedule.p99", False), ("serverCPUSeconds", False),
                         ("serverSystemCPUSeconds", False), ("generatorCPUSeconds", False)]),
    "fanout-10k-100/s": (["--subscribers", "10000", "--rate", "100", "--duration", "10"],
                         [("publishesPerSecond", True), ("deliveriesPerSecond", True), ("deliveriesPerServerCPUSecond", True),
                          ("latency.p50", False), ("latency.p99", False),
                          ("latencyFromSchedule.p50", False), ("latencyFromSchedule.p99", False), ("serverCPUSeconds", False),
                          ("serverSystemCPUSeconds", False), ("generatorCPUSeconds", False)]),
    "topics-1k": (["--subscribers", "1000", "--topics", "1000", "--duration", "10", "--publishers", "8"],
                  [("publishesPerSecond", True), ("deliveriesPerServerCPUSecond", True),
                   ("latency.p50", False), ("latency.p99", False), ("generatorCPUSeconds", False)]),
    # The same at a fixed 8 000 publishes/s, about 40 % of what either hub takes flat out: the
    # latency of both at the same load (in the closed loop above, the faster hub gets more).
    "topics-1k-8000/s": (["--subscribers", "1000", "--topics", "1000", "--duration", "10", "--publishers", "8", "--rate", "8000"],
                         [("publishesPerSecond", True), ("deliveriesPerServerCPUSecond", True),
                          ("latency.p50", False), ("latency.p99", False), ("latencyFromSchedule.p99", False),
                          ("serverCPUSeconds", False), ("serverSystemCPUSeconds", False), ("generatorCPUSeconds", False)]),
}
# Herald only: durable publishes into SQLite.
DURABLE = {
    "durable-1-publisher": ["--subscribers", "1", "--duration", "5", "--publishers", "1"],
    "durable-50-publishers": ["--subscribers", "1", "--duration", "5", "--publishers", "50"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def more_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def install_nchan():
    if shutil.which("nginx") and Path(NCHAN_MODULE).exists():
        return
    print("installing nginx and libnginx-mod-nchan from Debian's packages", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx", "libnginx-mod-nchan"],
                   check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    # The package starts a system nginx on port 80; the benchmark runs its own.
    subprocess.run(["sh", "-c", "service nginx stop >/dev/null 2>&1 || true"])


def build_herald():
    subprocess.run(["swift", "build", "-c", "release", "--product", "herald"], cwd=ROOT, check=True)
    path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    return Path(path) / "herald"


class Server:
    """A server process started by `start()`; stopped with SIGTERM, then SIGKILL after 20 s."""

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Herald(Server):
    """Herald with its default history, SQLite (on disk before a publish is answered), or with
    `in_memory` its history in memory, as Nchan keeps its messages."""

    def __init__(self, binary, directory, in_memory=False):
        self.binary, self.directory, self.in_memory = binary, directory, in_memory
        self.name = "herald-memory" if in_memory else "herald"

    def start(self):
        self.port = free_port()
        if self.in_memory:
            store = ["--in-memory"]
        else:
            store = ["--database", str(Path(tempfile.mkdtemp(dir=self.directory)) / "herald.db")]
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--port", str(self.port), *store,
             "--publisher-jwt-key", KEY, "--anonymous", "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "herald.log", "ab"), preexec_fn=more_files)
        wait_for_port(self.port, self.process)
        self.pids = [self.process.pid]
        self.hub = f"http://127.0.0.1:{self.port}/.well-known/mercure"
        self.bench = ["--hub", self.hub, "--key", KEY]



class Nchan(Server):
    name = "nchan"

    def __init__(self, directory):
        self.directory = directory

    def start(self):
        self.port = free_port()
        conf = self.directory / "nginx.conf"
        conf.write_text(f"""
load_module {NCHAN_MODULE};
worker_processes auto;
worker_rlimit_nofile 20000;
pid {self.directory}/nginx.pid;
error_log {self.directory}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {self.directory}/body;
    nchan_max_reserved_memory 256M;
    server {{
        listen 127.0.0.1:{self.port};
        location ~ ^/sub/(\\w+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1; }}
        location ~ ^/pub/(\\w+)$ {{ nchan_publisher; nchan_channel_id $1; }}
    }}
}}
""")
        self.process = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=more_files)
        wait_for_port(self.port, self.process)
        time.sleep(0.3)
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        self.pids = [self.process.pid] + [int(pid) for pid in children]
        self.bench = ["--hub", f"http://127.0.0.1:{self.port}", "--protocol", "nchan"]



def run_bench(binary, server, arguments, directory):
    server.start()
    try:
        command = [str(binary), "bench", *server.bench, *arguments] + sum((["--server-pid", str(p)] for p in server.pids), [])
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=more_files)
        (directory / "bench.log").open("a").write(f"$ {' '.join(command)}\n{result.stderr}\n")
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            report = {"failed": result.stderr.strip().splitlines()[-1:] or ["no output"]}
        report["exitStatus"] = result.returncode
        return report
    finally:
        server.stop()


def measure(report, key):
    value = report
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each server per scenario (median reported)")
    parser.add_argument("--scenarios", default=",".join([*SCENARIOS, *DURABLE]), help="comma-separated names")
    options = parser.parse_args()
    chosen = options.scenarios.split(",")

    install_nchan()
    binary = build_herald()
    OUT.mkdir(parents=True, exist_ok=True)
    herald, memory, nchan = Herald(binary, OUT), Herald(binary, OUT, in_memory=True), Nchan(OUT)
    results = {}
    for name in chosen:
        if name in SCENARIOS:
            arguments, _ = SCENARIOS[name]
            # Where there are publishes, Herald with its history in memory too: like for like.
            heralds = [herald] if "--idle" in arguments else [herald, memory]
            for round_ in range(options.rounds):
                order = [nchan, *heralds] if round_ % 2 == 0 else [*reversed(heralds), nchan]
                for server in order:
                    report = run_bench(binary, server, arguments, OUT)
                    results.setdefault(name, {}).setdefault(server.name, []).append(report)
                    print(f"{name} round {round_ + 1} {server.name}: exit {report['exitStatus']}", file=sys.stderr)
        elif name in DURABLE:
            for round_ in range(options.rounds):
                report = run_bench(binary, herald, DURABLE[name], OUT)
                results.setdefault(name, {}).setdefault("herald", []).append(report)
        else:
            sys.exit(f"unknown scenario {name}: choose from {', '.join([*SCENARIOS, *DURABLE])}")
    (OUT / "results.json").write_text(json.dumps(results, indent=2))

    print("\n| scenario | measure | Nchan | Herald (SQLite) | Herald / Nchan | Herald (in memory) | in memory / Nchan |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in chosen:
        if name in DURABLE:
            runs = results[name]["herald"]
            value = statistics.median(r.get("publishesPerSecond", 0) for r in runs)
            print(f"| {name} | durable publishes/s (SQLite) | – | {value:,.0f} | – | | |")
            continue
        _, measures = SCENARIOS[name]
        for key, _higher in measures:
            medians = {}
            for server in results[name]:
                values = [measure(r, key) for r in results[name][server]]
                values = [v for v in values if isinstance(v, (int, float))]
                medians[server] = statistics.median(values) if values else None
            n = medians["nchan"]
            fmt = lambda v: "–" if v is None else (f"{v:,.3f}" if v < 100 else f"{v:,.0f}")
            ratio = lambda v: f"{v / n:.2f}" if n and v is not None else "–"
            columns = [f"{fmt(medians[s])} | {ratio(medians[s])}" if s in medians else "– | –" for s in ("herald", "herald-memory")]
            print(f"| {name} | {key} | {fmt(n)} | {' | '.join(columns)} |")
        for server in results[name]:
            for report in results[name][server]:
                if report["exitStatus"] != 0:
                    why = report.get("failed") or (f"completeness {report.get('completeness')}, publish errors "
                                                    f"{report.get('publishErrors')}, subscriber errors {report.get('subscriberErrors')}")
                    print(f"| {name} | {server} run failed (exit status {report['exitStatus']}) | {why} | | |")
    print(f"\nall runs: {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
