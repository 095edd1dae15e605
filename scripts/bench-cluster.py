#!/usr/bin/env python3
"""One Herald node against two on the same PostgreSQL, with the same load generator (`herald bench`),
alternated run by run. Prints deliveries/s, publishes/s and latencies of both and their ratio, and
writes every run's JSON to .build/bench-cluster/results.json.

    scripts/bench-cluster.py              # 1 round of every scenario (about 2 minutes)
    scripts/bench-cluster.py --rounds 3

Needs PostgreSQL's server binaries (scripts/install-test-tools.sh installs them) and builds `herald`
in release mode. Everything listens on 127.0.0.1; every run has a time limit.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from herald_cluster import Postgres, accepts, free_port, wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".build" / "bench-cluster"
KEY = "a benchmark key, long enough for HS256 signatures"
SCENARIOS = {
    # Subscribers spread over the nodes, publishes alternating between them.
    "1k subscribers, 200 publishes/s": ["--subscribers", "1000", "--rate", "200", "--duration", "10"],
    "100 subscribers, publishing flat out (16 publishers)": ["--subscribers", "100", "--duration", "10", "--publishers", "16"],
}
MEASURES = ["deliveriesPerSecond", "publishesPerSecond", "publishLatency.p50", "publishLatency.p99",
            "latency.p50", "latency.p99", "serverCPUSeconds", "completeness"]


def build_herald():
    subprocess.run(["swift", "build", "-c", "release", "--product", "herald"], cwd=ROOT, check=True)
    path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    return Path(path) / "herald"


def run(binary, database, nodes, arguments):
    servers = []
    try:
        for _ in range(nodes):
            port = free_port()
            process = subprocess.Popen(
                [str(binary), "serve", "--port", str(port), "--store", database.url, "--publisher-jwt-key", KEY, "--anonymous"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            servers.append((process, port))
            wait_until(lambda: accepts(port), timeout=20, message="herald serve to listen")
        command = [str(binary), "bench", "--key", KEY, *arguments]
        for process, port in servers:
            command += ["--hub", f"http://127.0.0.1:{port}/.well-known/mercure", "--server-pid", str(process.pid)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
        return json.loads(result.stdout)
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=20)


def measure(report, key):
    value = report
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    binary = build_herald()
    OUT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="herald-bench-cluster-"))
    folder.chmod(0o755)  # PostgreSQL may run as another user, in a folder below
    (folder / "pg").mkdir()
    database = Postgres(folder / "pg")
    database.start()
    results = {}
    try:
        for round_number in range(options.rounds):
            for name, arguments in SCENARIOS.items():
                order = [1, 2] if round_number % 2 == 0 else [2, 1]
                for nodes in order:
                    print(f"round {round_number + 1}: {name}, {nodes} node(s)", file=sys.stderr)
                    results.setdefault(name, {}).setdefault(nodes, []).append(run(binary, database, nodes, arguments))
    finally:
        database.stop()
    (OUT / "results.json").write_text(json.dumps({k: {str(n): v for n, v in r.items()} for k, r in results.items()}, indent=2))
    print(f"| scenario | measure | 1 node | 2 nodes | 2 / 1 |\n|---|---|---|---|---|")
    for name, by_nodes in results.items():
        for key in MEASURES:
            values = [statistics.median([measure(r, key) or 0 for r in by_nodes[n]]) for n in (1, 2)]
            ratio = f"{values[1] / values[0]:.2f}" if values[0] else "–"
            unit = " ms" if "atency" in key else ""
            print(f"| {name} | {key} | {values[0]:.4g}{unit} | {values[1]:.4g}{unit} | {ratio} |")


if __name__ == "__main__":
    main()
