# Examples 3 to 5 in headless Chromium: token stream, signup feed, build log.
import urllib.error
import urllib.request

from selenium.webdriver.common.by import By

from conftest import wait_until


def text(browser, selector):
    return browser.find_element(By.CSS_SELECTOR, selector).text


def status_of(url, last_event_id):
    request = urllib.request.Request(url, headers={"Last-Event-ID": last_event_id, "Accept": "text/event-stream"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_token_stream_ends_cleanly_and_the_page_stops(browser, example):
    server = example("TokenStream", TICK_MS=100)
    browser.get(server.url + "/")
    wait_until(lambda: text(browser, "#status") == "(finished)", timeout=15, message="the done event")
    tokens = browser.find_elements(By.CSS_SELECTOR, "#tokens li")
    assert len(tokens) == 10
    assert all(token.text.startswith("20") for token in tokens)
    assert browser.execute_script("return source.readyState") == 2  # CLOSED: the page stopped
    # A reconnection after the end is refused with 204, which stops any EventSource for good.
    assert status_of(server.url + "/tokens", "done") == 204


def test_signup_feed_reacts_to_open_message_signup_and_error(browser, example):
    server = example("SignupFeed", TICK_MS=100)
    browser.get(server.url + "/")
    wait_until(lambda: text(browser, "#state") == "open", message="open")
    wait_until(lambda: int(text(browser, "#count")) >= 2, message="two signups")
    messages = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#messages li")]
    assert len(messages) >= 6 and all(m.startswith("hello #") for m in messages), messages
    signups = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#signups li")]
    assert "user1" in signups
    server.kill()
    wait_until(lambda: text(browser, "#state") == "connection lost, retrying", message="the error handler")


def test_build_log_resumes_at_the_right_line_after_a_restart(browser, example):
    server = example("BuildLog", TICK_MS=60)
    browser.get(server.url + "/")
    lines = lambda: browser.find_elements(By.CSS_SELECTOR, "#log div")
    wait_until(lambda: len(lines()) >= 10, message="ten log lines")
    server.kill()
    wait_until(lambda: text(browser, "#status") == "reconnecting", message="the page to see the drop")
    restarted = example("BuildLog", port=server.port, TICK_MS=60)
    wait_until(lambda: text(browser, "#status") == "build succeeded", timeout=30, message="the end of the build")

    ids = [int(line.get_attribute("data-id")) for line in lines()]
    assert ids == list(range(1, 61)), f"a gap or a duplicate: {ids}"
    assert browser.find_element(By.ID, "bar").get_attribute("value") == "100"
    assert "streaming from line" in restarted.output() and "streaming from line 1\n" not in restarted.output()
