# Example 2, Notifications (Vapor): a cross-origin stream with credentials, named ping events,
# onmessage, onerror, and cleanup logged when the client disconnects.
import urllib.request

from selenium.webdriver.common.by import By

from conftest import free_port, wait_until


def start(example):
    """The stream on one port, the page on another: two origins of one site."""
    page_port = free_port()
    server = example("Notifications", TICK_MS=200, PAGE_PORT=page_port)
    server.page = f"http://127.0.0.1:{page_port}/"
    return server


def text(browser, selector):
    return browser.find_element(By.CSS_SELECTOR, selector).text


def test_cross_origin_stream_with_credentials(browser, example):
    server = start(example)
    # A session cookie from the stream's server, sent by the page's EventSource from another
    # origin because it asks for credentials and the server allows that origin.
    browser.get(f"http://127.0.0.1:{server.port}/login?user=ada")
    browser.get(server.page)
    wait_until(lambda: text(browser, "#welcome") == "welcome, ada", message="the welcome message for the cookie's user")
    assert text(browser, "#state") == "open"
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#pings li")) >= 3, message="three pings")
    assert all(li.text.endswith("for ada") for li in browser.find_elements(By.CSS_SELECTOR, "#pings li"))

    # The page closes its EventSource: the server notices at its next write, cleans up and says so.
    browser.execute_script("source.close()")
    wait_until(lambda: "disconnected: cleaned up" in server.output(), message="the cleanup log line")


def test_only_the_page_origin_is_allowed(example):
    server = start(example)

    def allow_origin(origin):
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/notifications", headers={"Origin": origin})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers.get("Access-Control-Allow-Origin")

    page_origin = server.page.rstrip("/")
    assert allow_origin(page_origin) == page_origin
    assert allow_origin("http://evil.example") in (None, "")
    assert allow_origin(f"http://127.0.0.1:{server.port}") in (None, ""), "not even the stream's own origin"


def test_the_page_handles_errors(browser, example):
    server = start(example)
    browser.get(server.page)
    wait_until(lambda: text(browser, "#state") == "open", message="open")
    server.kill()
    wait_until(lambda: text(browser, "#state") == "error: reconnecting", message="onerror")
