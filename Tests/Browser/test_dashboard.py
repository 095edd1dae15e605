# The hub's dashboard (`herald serve`, page at /) in a real Chromium: an update published with
# the page's form reaches a second page, and a page whose hub is killed resumes with
# Last-Event-ID, with no gap and no duplicate.
import re
import ssl
import time
import urllib.parse
import urllib.request

from selenium.webdriver.common.by import By

from conftest import ROOT, wait_until

TLS = ROOT / "Tests" / "Fixtures" / "tls"


def serve(example, database, port=None, tls=False):
    """`herald serve` in development mode on a free (or the given) port, history in `database`."""
    arguments = ["serve", "--port", "{port}", "--database", str(database)]
    if tls:
        arguments += ["--tls-cert", str(TLS / "cert.pem"), "--tls-key", str(TLS / "key.pem")]
    return example("herald", port=port, args=arguments)


def publisher_token(hub):
    """The development-mode publisher token the hub printed."""
    match = wait_until(lambda: re.search(r"publisher token.*\n(\S+)", hub.output()), message="the printed token")
    return match.group(1)


def publish(hub, topic, data):
    """Publishes with the hub's own development token; returns the event ID."""
    form = urllib.parse.urlencode({"topic": topic, "data": data}).encode()
    request = urllib.request.Request(hub.url + "/.well-known/mercure", data=form, method="POST")
    request.add_header("Authorization", "Bearer " + publisher_token(hub))
    with urllib.request.urlopen(request, timeout=10, context=ssl._create_unverified_context()) as response:
        return response.read().decode()


def events(browser):
    return [
        (li.get_attribute("data-id"), li.get_attribute("data-type"), li.find_element(By.TAG_NAME, "pre").text)
        for li in reversed(browser.find_elements(By.CSS_SELECTOR, "#events li"))
    ]


def text(browser, element_id):
    return browser.find_element(By.ID, element_id).text


def test_an_update_published_with_the_form_reaches_a_second_page(browser, example, tmp_path):
    hub = serve(example, tmp_path / "hub.db")
    topic = "https://example.com/books/{id}"
    browser.get(hub.url + "/?" + urllib.parse.urlencode({"topic": topic, "type": "book"}))
    reader = browser.current_window_handle
    wait_until(lambda: text(browser, "status") == "open", message="the reader to subscribe")

    browser.switch_to.new_window("tab")
    browser.get(hub.url + "/")
    wait_until(lambda: text(browser, "status") == "open", message="the publisher page to subscribe")
    # The form comes with the development token; fill in an update of type "book".
    browser.find_element(By.ID, "pub-topic").clear()
    browser.find_element(By.ID, "pub-topic").send_keys("https://example.com/books/42")
    browser.find_element(By.ID, "pub-data").clear()
    browser.find_element(By.ID, "pub-data").send_keys('{"title": "Hyperion"}')
    browser.find_element(By.ID, "pub-type").send_keys("book")
    browser.find_element(By.ID, "publish").click()
    result = wait_until(lambda: text(browser, "pub-result"), message="the hub's answer")
    assert result.startswith("Published urn:uuid:"), result
    event_id = result.removeprefix("Published ")
    # A refused publish shows the hub's reason, as the plain text it answers.
    token = browser.find_element(By.ID, "pub-token")
    token.clear()
    token.send_keys("not.a.jwt")
    browser.find_element(By.ID, "publish").click()
    refused = wait_until(lambda: (t := text(browser, "pub-result")) != result and t, message="the hub's refusal")
    assert refused == "401: the publisher token is not valid: it must be a JWT signed with the publisher key (HS256)", refused
    # Its active subscriptions list shows both pages' subscriptions.
    wait_until(lambda: text(browser, "subscription-count") not in ("–", "0"), message="the subscriptions list")
    assert topic in text(browser, "subscriptions")

    browser.close()
    browser.switch_to.window(reader)
    wait_until(lambda: events(browser), message="the update on the second page")
    assert events(browser) == [(event_id, "book", '{"title": "Hyperion"}')]


def test_a_page_resumes_with_last_event_id_after_the_hub_is_killed(browser, example, tmp_path):
    database = tmp_path / "hub.db"
    hub = serve(example, database)
    browser.get(hub.url + "/?topic=news")
    wait_until(lambda: text(browser, "status") == "open", message="the page to subscribe")
    first = publish(hub, "news", "one")
    wait_until(lambda: len(events(browser)) == 1, message="the first update")

    hub.kill()
    wait_until(lambda: text(browser, "status").startswith("reconnecting"), message="the page to see the drop")
    # Published while the page cannot reach the hub (on another port, same history): the page
    # can only get these by resuming with Last-Event-ID.
    elsewhere = serve(example, database)
    missed = [publish(elsewhere, "news", "two"), publish(elsewhere, "news", "three")]
    elsewhere.stop()

    serve(example, database, port=hub.port)
    wait_until(lambda: len(events(browser)) >= 3, timeout=20, message="the missed updates")
    assert events(browser) == [(first, "message", "one"), (missed[0], "message", "two"), (missed[1], "message", "three")]
    assert text(browser, "status").startswith("open")
    assert text(browser, "reconnects") == "1"
    assert text(browser, "last-id") == missed[1]


OPEN_MANY = """
window.sources = [];
window.received = 0;
for (let i = 0; i < arguments[0]; i++) {
  const source = new EventSource("/.well-known/mercure?topic=many");
  source.onmessage = () => { window.received += 1; };
  window.sources.push(source);
}
"""
OPEN_COUNT = "return window.sources.filter((s) => s.readyState === EventSource.OPEN).length"


def test_over_tls_with_http2_one_page_opens_more_than_six_event_sources(browser, example, tmp_path):
    hub = serve(example, tmp_path / "hub.db", tls=True)
    browser.get(hub.url + "/?topic=news")
    wait_until(lambda: text(browser, "status") == "open", message="the dashboard to subscribe")
    assert browser.execute_script("return performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
    # The dashboard holds two EventSources already (its events and its subscriptions list).
    browser.execute_script(OPEN_MANY, 8)
    wait_until(lambda: browser.execute_script(OPEN_COUNT) == 8, message="eight more EventSources to open")
    publish(hub, "many", "to every one")
    wait_until(lambda: browser.execute_script("return window.received") == 8, message="the update on all eight")
    assert text(browser, "status") == "open"


def test_over_http1_the_browser_stops_at_six(browser, example, tmp_path):
    # The control for the test above: the same page over plain HTTP/1.1 is held to six connections.
    hub = serve(example, tmp_path / "hub.db")
    browser.get(hub.url + "/?topic=news")
    wait_until(lambda: text(browser, "status") == "open", message="the dashboard to subscribe")
    browser.execute_script(OPEN_MANY, 8)
    wait_until(lambda: browser.execute_script(OPEN_COUNT) == 4, message="four more EventSources to open")
    time.sleep(1.5)
    assert browser.execute_script(OPEN_COUNT) == 4, "two dashboard streams and four of these: six in all"
    browser.execute_script("window.sources.forEach((s) => s.close())")
