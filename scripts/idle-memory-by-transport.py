#!/usr/bin/env python3
"""What an idle subscriber costs `herald serve` in memory, by transport: plain HTTP/1.1 (the hub's
door), HTTP/1.1 over TLS, and HTTP/2 (streams of 100 to a connection). For each, starts a fresh
`herald serve --in-memory` on 127.0.0.1, reads its RSS from /proc, opens the subscriptions from
this process, waits for every response head, reads the RSS again and prints the growth per
subscriber.

    scripts/idle-memory-by-transport.py                   # 2 000 subscribers each
    scripts/idle-memory-by-transport.py --subscribers 5000 --herald .build/release/herald

Builds `herald` in release mode unless --herald is given; installs the `h2` package from PyPI
when it is missing (the HTTP/2 client).
"""
import argparse
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TLS = ROOT / "Tests" / "Fixtures" / "tls"
REQUEST = "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
STREAMS_PER_CONNECTION = 100  # the most HTTP/2 streams the hub allows on a connection


def rss_kilobytes(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def tls_context(protocol):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test certificate is self-signed
    context.set_alpn_protocols([protocol])
    return context


def http1_subscribers(port, count, context):
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if context:
            sock = context.wrap_socket(sock)
        sock.sendall(REQUEST)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("the hub closed a subscription")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"not subscribed: {head[:60]!r}")
        held.append(sock)
    return held


def http2_subscribers(port, count):
    import h2.config
    import h2.connection
    import h2.events
    held = []
    for start in range(0, count, STREAMS_PER_CONNECTION):
        streams = min(STREAMS_PER_CONNECTION, count - start)
        sock = tls_context("h2").wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        if sock.selected_alpn_protocol() != "h2":
            raise RuntimeError("the hub did not choose HTTP/2")
        connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        for _ in range(streams):
            headers = [(":method", "GET"), (":path", "/.well-known/mercure?topic=t"), (":scheme", "https"),
                       (":authority", "127.0.0.1")]
            connection.send_headers(connection.get_next_available_stream_id(), headers, end_stream=True)
        sock.sendall(connection.data_to_send())
        answered = 0
        while answered < streams:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("the hub closed an HTTP/2 connection")
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    if dict(event.headers).get(b":status") != b"200":
                        raise RuntimeError(f"not subscribed: {event.headers}")
                    answered += 1
            sock.sendall(connection.data_to_send())
        held.append((sock, connection))
    return held


def measure(herald, transport, count):
    arguments = [herald, "serve", "--in-memory", "--anonymous", "--port", "0", "--heartbeat", "0", "--no-dashboard",
                 "--publisher-jwt-key", "a key for this measurement, long enough for HS256"]
    if transport != "HTTP/1.1":
        arguments += ["--tls-cert", str(TLS / "cert.pem"), "--tls-key", str(TLS / "key.pem")]
    server = subprocess.Popen(arguments, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:  # "herald: hub listening on http://127.0.0.1:PORT/…"
            if "hub listening on" in line:
                break
        else:
            raise RuntimeError("herald serve did not start")
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        threading.Thread(target=server.stderr.read, daemon=True).start()  # so that it never blocks
        time.sleep(0.5)
        before = rss_kilobytes(server.pid)
        if transport == "HTTP/2":
            held = http2_subscribers(port, count)
        else:
            held = http1_subscribers(port, count, tls_context("http/1.1") if transport == "HTTP/1.1 over TLS" else None)
        time.sleep(2)
        after = rss_kilobytes(server.pid)
        connections = len(held)
        for item in held:
            (item[0] if isinstance(item, tuple) else item).close()
        return before, after, connections
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--herald", help="a herald binary (default: build one in release mode)")
    options = parser.parse_args()
    try:
        import h2  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "h2"], check=True)
    herald = options.herald
    if not herald:
        subprocess.run(["swift", "build", "-c", "release", "--product", "herald"], cwd=ROOT, check=True)
        herald = str(ROOT / ".build" / "release" / "herald")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, options.subscribers + 100)), hard))
    print("| transport | subscribers | connections | server RSS before → after, KB | KB per subscriber |")
    print("|---|---:|---:|---:|---:|")
    for transport in ["HTTP/1.1", "HTTP/1.1 over TLS", "HTTP/2"]:
        before, after, connections = measure(herald, transport, options.subscribers)
        per = (after - before) / options.subscribers
        print(f"| {transport} | {options.subscribers} | {connections} | {before} → {after} | {per:.1f} |", flush=True)


if __name__ == "__main__":
    main()
