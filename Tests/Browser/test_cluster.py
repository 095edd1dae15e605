# Two `herald serve` nodes on one PostgreSQL, behind nginx (the set-up of docs/DEPLOYMENT.md), and
# an EventSource in Chromium through nginx: its node is killed and PostgreSQL restarts, and the
# page still gets every acknowledged update once, in order.
import base64
import hashlib
import hmac
import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import wait_until
from herald_cluster import Postgres, available, nginx

KEY = "k" * 40
pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL or nginx is not installed (scripts/install-test-tools.sh installs both)")


def token():
    def encode(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    signing_input = encode({"alg": "HS256", "typ": "JWT"}) + "." + encode({"mercure": {"publish": ["*"]}})
    signature = hmac.new(KEY.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def publish(hub, update_id):
    """Publishes `update_id` on topic `news`; returns the HTTP status."""
    form = urllib.parse.urlencode({"topic": "news", "data": update_id, "id": update_id}).encode()
    request = urllib.request.Request(hub + "/.well-known/mercure", data=form, method="POST")
    request.add_header("Authorization", "Bearer " + token())
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def subscribers(node):
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("herald_subscribers "):
                return int(float(line.split()[1]))
    return 0


LISTEN = """
window.received = [];
window.opens = 0;
const source = new EventSource("/.well-known/mercure?topic=news");
source.onopen = () => { window.opens += 1; };
source.onmessage = (event) => { window.received.push(event.lastEventId); };
"""


def test_a_page_behind_nginx_gets_every_update_through_a_killed_node_and_a_database_restart(browser, example):
    folder = Path(tempfile.mkdtemp(prefix="herald-cluster-"))
    folder.chmod(0o755)  # PostgreSQL may run as another user, in a folder below
    (folder / "pg").mkdir()
    database = Postgres(folder / "pg")
    database.start()
    balancer = None
    try:
        # The example fixture stops the nodes afterwards.
        nodes = [
            example("herald", args=["serve", "--port", "{port}", "--store", database.url, "--publisher-jwt-key", KEY, "--anonymous"])
            for _ in range(2)
        ]
        (folder / "nginx").mkdir()
        balancer, port = nginx(folder / "nginx", [node.port for node in nodes])
        front = f"http://127.0.0.1:{port}"

        browser.get(front + "/healthz")
        browser.execute_script(LISTEN)
        wait_until(lambda: browser.execute_script("return window.opens") == 1, message="the EventSource to open")
        assert publish(front, "one") == 200
        wait_until(lambda: browser.execute_script("return window.received").count("one") == 1, message="the first update")

        # Its node dies; what is published before the page is back comes with the resumption.
        serving = next(node for node in nodes if subscribers(node) == 1)
        other = next(node for node in nodes if node is not serving)
        serving.kill()
        assert publish(other.url, "two") == 200
        wait_until(lambda: browser.execute_script("return window.opens") == 2, timeout=20, message="the page to reconnect")
        assert publish(front, "three") == 200
        wait_until(lambda: len(browser.execute_script("return window.received")) >= 3, timeout=20, message="the missed update")

        # PostgreSQL restarts: a publish meanwhile is refused, not lost; then the hub carries on.
        database.stop()
        assert publish(front, "refused") == 503
        database.start()
        wait_until(lambda: publish(front, "four") in (200, 409), timeout=30, interval=0.2, message="publishing to work again")
        wait_until(lambda: len(browser.execute_script("return window.received")) >= 4, timeout=20, message="the last update")
        assert browser.execute_script("return window.received") == ["one", "two", "three", "four"]
        assert browser.execute_script("return window.opens") == 2, "the stream stayed open through the database's restart"
    finally:
        if balancer:
            balancer.terminate()
            balancer.wait(timeout=10)
        database.stop()
        shutil.rmtree(folder, ignore_errors=True)
