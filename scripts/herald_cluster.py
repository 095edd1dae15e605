"""A throwaway PostgreSQL, nginx in front of hub nodes (with the proxy settings docs/DEPLOYMENT.md
gives), all on 127.0.0.1, and the polling helpers: for the browser tests (Tests/Browser) and the
cluster's benchmark (scripts/bench-cluster.py)."""
import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

NGINX = "/usr/sbin/nginx"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Polls `predicate` until it returns a truthy value, at most `timeout` seconds; returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def available():
    return binaries() is not None and os.path.exists(NGINX)


def binaries():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(found[0]).parent if found else None


class Postgres:
    """A throwaway server: initdb into a temporary folder, on a free port of 127.0.0.1."""

    def __init__(self, folder):
        self.folder = folder
        self.port = free_port()
        self.process = None
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] if os.geteuid() == 0 else []
        self.prefix = as_postgres
        if as_postgres:
            shutil.chown(folder, "postgres", "postgres")
        subprocess.run(
            [*self.prefix, str(binaries() / "initdb"), "-D", str(folder / "data"), "-U", "herald", "--auth=trust", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )

    @property
    def url(self):
        return f"postgres://herald@127.0.0.1:{self.port}/postgres"

    def start(self):
        self.process = subprocess.Popen(
            [*self.prefix, str(binaries() / "postgres"), "-D", str(self.folder / "data"), "-p", str(self.port),
             "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: accepts(self.port), timeout=30, message="PostgreSQL to listen")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: a fast shutdown
            self.process.wait(timeout=30)


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def nginx(folder, ports):
    port = free_port()
    (folder / "temp").mkdir()
    upstream = "\n".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports)
    configuration = f"""
        worker_processes 1;
        daemon off;
        pid {folder}/nginx.pid;
        events {{ worker_connections 256; }}
        http {{
            access_log off;
            client_body_temp_path {folder}/temp/body;
            proxy_temp_path {folder}/temp/proxy;
            fastcgi_temp_path {folder}/temp/fastcgi;
            uwsgi_temp_path {folder}/temp/uwsgi;
            scgi_temp_path {folder}/temp/scgi;
            upstream herald {{ {upstream} }}
            server {{
                listen 127.0.0.1:{port};
                location / {{
                    proxy_pass http://herald;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_buffering off;
                    proxy_cache off;
                    proxy_read_timeout 1h;
                    proxy_connect_timeout 2s;
                }}
            }}
        }}
    """
    (folder / "nginx.conf").write_text(configuration)
    process = subprocess.Popen(
        [NGINX, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(folder / "nginx.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: accepts(port), message="nginx to listen")
    return process, port


