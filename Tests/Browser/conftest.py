# Browser tests: the examples in a real headless Chromium (Debian's chromium + chromium-driver,
# driven by selenium; scripts/install-test-tools.sh installs them). The examples are the
# executables `swift build` put in .build/debug (or $HERALD_BUILD_DIR); each test starts its own
# on a free port on 127.0.0.1 and stops it afterwards.
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from herald_cluster import free_port, wait_until  # noqa: E402  (shared with scripts/bench-cluster.py)
BUILD = Path(os.environ.get("HERALD_BUILD_DIR", ROOT / ".build" / "debug"))


class Example:
    """One example server, run as a process from the repository root (where its pages are)."""

    started = 0

    def __init__(self, name, port=None, args=(), **env):
        self.name = name
        self.port = port or free_port()
        self.scheme = "https" if "--tls-cert" in args else "http"
        self.args = [argument.replace("{port}", str(self.port)) for argument in args]
        self.env = {**os.environ, "PORT": str(self.port), **{k: str(v) for k, v in env.items()}}
        self.process = None
        Example.started += 1
        self.log = ROOT / ".build" / "browser-logs" / f"{name}-{self.port}-{Example.started}.log"

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self):
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(BUILD / self.name), *self.args], cwd=ROOT, env=self.env,
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
        )

        def listening():
            assert self.process.poll() is None, f"{self.name} exited: {self.output()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, message=f"{self.name} to listen on {self.port}")
        return self

    def kill(self):
        """Kills the server at once (SIGKILL): no goodbye to the browser."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def output(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def example():
    started = []

    def start(name, **kwargs):
        server = Example(name, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking",
        # The TLS tests' hub has a self-signed certificate (Tests/Fixtures/tls).
        "--ignore-certificate-errors",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ]:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
