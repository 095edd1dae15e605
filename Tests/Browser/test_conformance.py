# Mercure's conformance suite (conformance-tests/ in the Mercure repository, hub 0.x), run against
# `herald serve` in the same way: in a real browser page on the hub's origin, an EventSource
# subscribes, then fetch() publishes with the suite's own token (HS256 with the key of Mercure's
# documentation), and the update must arrive, or not, within two seconds. The suite runs with
# CUSTOM_ID=1: the hub must answer with the publisher's id.
#
# One difference: the suite derives each update's id from its topics, so several cases publish the
# same id. Herald refuses a second update with an id already in its history (409: resuming from
# it would be ambiguous), so the private cases would pass without publishing anything. Here every
# case has an id of its own, and every publish must succeed, received or not.
import secrets

import pytest

from conftest import wait_until

# The token of the suite: {"mercure": {"publish": ["*"], "subscribe": ["*"]}}, HS256.
SUITE_KEY = "!ChangeThisMercureHubJWTSecretKey!"
SUITE_TOKEN = (
    "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdLCJzdWJzY3JpYmUiOlsiKiJdfX0."
    "bVXdlWXwfw9ySx7-iV5OpUSHo34RkjUdVzDLBcc6l_g"
)

R = [secrets.token_hex(20) for _ in range(6)]
CASES = [
    # name, update topics, topic selectors, must be received, private
    ("raw string", [R[0]], [R[0]], True, False),
    ("multiple topics", [secrets.token_hex(20), R[1]], [R[1]], True, False),
    ("multiple topic selectors", [R[2]], ["foo", R[2]], True, False),
    ("URI", [f"https://example.net/foo/{R[3]}"], [f"https://example.net/foo/{R[3]}"], True, False),
    ("URI template", [f"https://example.net/foo/{R[4]}"], ["https://example.net/foo/{random}"], True, False),
    ("nonmatching raw string", ["will-not-match}"], ["another-name"], False, False),
    ("nonmatching URI", ["https://example.net/foo/will-not-match}"], ["https://example.net/foo/another-name"], False, False),
    ("nonmatching URI template", ["https://example.net/foo/will-not-match}"], ["https://example.net/bar/{var}"], False, False),
    ("private raw string", [R[0]], [R[0]], False, True),
    ("private URI", [f"https://example.net/foo/{R[3]}"], [f"https://example.net/foo/{R[3]}"], False, True),
    ("private URI template", [f"https://example.net/foo/{R[4]}"], ["https://example.net/foo/{random}"], False, True),
]

# Subscribe (anonymously), wait for the stream to open, publish, then race the update against a
# two-second timer. Returns what the page saw and what the publish answered.
SCRIPT = """
const [topics, selectors, isPrivate, id, name, token, done] = arguments;
const url = new URL("/.well-known/mercure", location.origin);
for (const selector of selectors) url.searchParams.append("topic", selector);
const form = new URLSearchParams();
for (const topic of topics) form.append("topic", topic);
form.set("id", id);
form.set("data", `data for\\n\\n        ${name}`);
if (isPrivate) form.set("private", "on");
const source = new EventSource(url);
let arrived;
const received = new Promise((resolve) => { arrived = resolve; });
source.onmessage = (event) => {
  if (event.type === "message" && event.lastEventId === id && event.data === form.get("data")) arrived(true);
};
source.onopen = async () => {
  const response = await fetch("/.well-known/mercure", {
    method: "POST", headers: { Authorization: "Bearer " + token }, body: form,
  });
  const body = await response.text();
  const seen = await Promise.race([received, new Promise((resolve) => setTimeout(resolve, 2000, false))]);
  source.close();
  done({ received: seen, status: response.status, contentType: response.headers.get("Content-Type"), body });
};
"""


@pytest.fixture(scope="module")
def suite_hub():
    from conftest import Example

    hub = Example("herald", args=["serve", "--port", "{port}", "--in-memory", "--anonymous"],
                  MERCURE_PUBLISHER_JWT_KEY=SUITE_KEY).start()
    yield hub
    hub.stop()


@pytest.mark.parametrize("name,topics,selectors,must_be_received,private", CASES, ids=[case[0] for case in CASES])
def test_mercure_conformance(browser, suite_hub, name, topics, selectors, must_be_received, private):
    browser.get(suite_hub.url + "/")
    browser.set_script_timeout(15)
    update_id = f"id-{name.replace(' ', '-')}-" + str(topics).replace("'", '"').replace(", ", ",")
    result = browser.execute_async_script(SCRIPT, topics, selectors, private, update_id, name, SUITE_TOKEN)
    assert result["received"] is must_be_received, result
    assert result["status"] == 200
    assert result["contentType"].startswith("text/plain")
    assert result["body"] == update_id
