# Example 1, Ticker: events reach the DOM, named events reach their listeners, and a page whose
# server is killed and restarted reconnects with Last-Event-ID and shows no gap and no duplicate.
from selenium.webdriver.common.by import By

from conftest import wait_until


def text(browser, selector):
    return browser.find_element(By.CSS_SELECTOR, selector).text


def test_the_feed_shows_the_latest_update(browser, example):
    server = example("Ticker")
    browser.get(server.url + "/")
    first = wait_until(lambda: (t := text(browser, "#feed")) != "waiting…" and t, message="a first update")
    assert first.startswith("20"), first  # an ISO 8601 time
    wait_until(lambda: text(browser, "#feed") != first, timeout=5, message="the next update")


def test_named_price_events_resume_without_gap_after_the_server_is_killed(browser, example):
    server = example("Ticker", TICK_MS=100)
    browser.get(server.url + "/prices.html")
    items = lambda: browser.find_elements(By.CSS_SELECTOR, "#events li")
    wait_until(lambda: len(items()) >= 8, message="eight events")
    assert text(browser, "#state") == "open"
    assert any("alert" in li.get_attribute("class") for li in items()), "trade-alert events reach their listener"
    assert any("price" in li.get_attribute("class") for li in items()), "price-update events reach their listener"

    server.kill()
    wait_until(lambda: text(browser, "#state") == "reconnecting", message="the page to see the drop")
    seen = len(items())
    restarted = example("Ticker", port=server.port, TICK_MS=100)
    wait_until(lambda: len(items()) >= seen + 8, message="events after the restart")

    ids = [int(li.get_attribute("data-id")) for li in items()]
    assert ids == list(range(1, len(ids) + 1)), f"a gap or a duplicate: {ids}"
    assert "resumed with Last-Event-ID" in restarted.output()
    assert int(text(browser, "#reconnects")) >= 1
