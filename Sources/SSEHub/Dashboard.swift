//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Hummingbird

extension Hub {
    /// The dashboard page served at `/`: subscribe, watch events arrive, publish, and see the
    /// active subscriptions. One self-contained HTML page (no external assets, no build step) that
    /// uses the browser's own `EventSource`.
    public struct Dashboard: Sendable {
        /// A publisher token filled into the page's publish form.
        public var publisherToken: String?
        /// A subscriber token the page reads the active subscriptions with.
        public var subscriberToken: String?

        /// A dashboard. Tokens given here are readable by anyone who can load the page: give them
        /// only in development mode.
        public init(publisherToken: String? = nil, subscriberToken: String? = nil) {
            self.publisherToken = publisherToken
            self.subscriberToken = subscriberToken
        }

        /// The page, with the tokens set into it.
        var html: String {
            func literal(_ value: String?) -> String {
                // JWTs are base64url and dots; anything else is dropped so nothing can close the script.
                guard let value else { return "null" }
                let safe = value.filter { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
                return "\"" + safe + "\""
            }
            return Self.page.replacingOccurrences(
                of: "/*SETTINGS*/",
                with: "{publisherToken: \(literal(self.publisherToken)), subscriberToken: \(literal(self.subscriberToken))}"
            )
        }

        func addRoute<Context: RequestContext>(to router: Router<Context>) {
            let body = ByteBuffer(string: self.html)
            router.get("/") { _, _ in
                Response(
                    status: .ok,
                    headers: [
                        .contentType: "text/html; charset=utf-8",
                        .cacheControl: "no-store",
                        .contentSecurityPolicy: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                    ],
                    body: ResponseBody(byteBuffer: body)
                )
            }
        }

        private static let page = #"""
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Herald hub</title>
            <style>
            :root {
              --bg: #0f1419; --panel: #171e26; --line: #263241; --text: #e6edf3; --muted: #8b98a8;
              --accent: #4fb3ff; --good: #3ecf8e; --warn: #f5b94a; --bad: #f76c6c;
              font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
            }
            * { box-sizing: border-box; }
            body { margin: 0; background: var(--bg); color: var(--text); }
            header { display: flex; align-items: center; gap: 1rem; padding: .9rem 1.5rem; border-bottom: 1px solid var(--line); }
            header h1 { font-size: 1.15rem; margin: 0; letter-spacing: .02em; }
            header h1 span { color: var(--accent); }
            header .hint { color: var(--muted); font-size: .85rem; margin-left: auto; }
            main { display: grid; grid-template-columns: minmax(300px, 380px) 1fr; gap: 1.25rem; padding: 1.25rem 1.5rem; }
            @media (max-width: 860px) { main { grid-template-columns: 1fr; } }
            section { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.1rem; margin-bottom: 1.25rem; }
            h2 { font-size: .8rem; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); margin: 0 0 .8rem; display: flex; align-items: center; gap: .5rem; }
            label { display: block; font-size: .8rem; color: var(--muted); margin: .6rem 0 .25rem; }
            input[type=text], textarea { width: 100%; background: var(--bg); color: var(--text); border: 1px solid var(--line); border-radius: 6px; padding: .45rem .55rem; font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
            textarea { resize: vertical; min-height: 3.2rem; }
            input:focus, textarea:focus { outline: none; border-color: var(--accent); }
            .row { display: flex; gap: .6rem; align-items: center; }
            .row > * { flex: 1; }
            .check { display: flex; align-items: center; gap: .4rem; margin-top: .7rem; font-size: .85rem; color: var(--text); }
            button { margin-top: .9rem; background: var(--accent); color: #06121d; border: 0; border-radius: 6px; padding: .5rem 1rem; font-weight: 600; cursor: pointer; }
            button.secondary { background: transparent; color: var(--text); border: 1px solid var(--line); }
            .status { display: inline-flex; align-items: center; gap: .45rem; font-size: .85rem; }
            .dot { width: .6rem; height: .6rem; border-radius: 50%; background: var(--muted); }
            .status[data-state=open] .dot { background: var(--good); box-shadow: 0 0 0 3px #3ecf8e33; }
            .status[data-state=connecting] .dot, .status[data-state=reconnecting] .dot { background: var(--warn); animation: pulse 1s infinite; }
            .status[data-state=closed] .dot { background: var(--bad); }
            @keyframes pulse { 50% { opacity: .35; } }
            .facts { display: grid; grid-template-columns: auto 1fr; gap: .2rem .8rem; font-size: .82rem; margin-top: .7rem; color: var(--muted); }
            .facts b { color: var(--text); font-weight: 500; font-family: ui-monospace, monospace; word-break: break-all; }
            #pub-result { font-size: .82rem; margin-top: .6rem; word-break: break-all; min-height: 1.2em; }
            #pub-result.ok { color: var(--good); } #pub-result.error { color: var(--bad); }
            #events { list-style: none; margin: 0; padding: 0; max-height: 70vh; overflow: auto; }
            #events li { border-top: 1px solid var(--line); padding: .6rem 0; animation: arrive .6s ease-out; }
            #events li:first-child { border-top: 0; }
            @keyframes arrive { from { background: #4fb3ff22; } to { background: transparent; } }
            .meta { display: flex; gap: .6rem; align-items: baseline; font-size: .78rem; color: var(--muted); flex-wrap: wrap; }
            .type { background: #4fb3ff22; color: var(--accent); border-radius: 4px; padding: 0 .4rem; font-weight: 600; }
            .id { font-family: ui-monospace, monospace; }
            pre { margin: .3rem 0 0; white-space: pre-wrap; word-break: break-word; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
            .empty { color: var(--muted); font-size: .88rem; }
            .note { color: var(--muted); font-size: .8rem; }
            .count { background: var(--line); color: var(--text); border-radius: 999px; padding: 0 .5rem; font-size: .75rem; }
            table { width: 100%; border-collapse: collapse; font-size: .82rem; }
            td, th { text-align: left; padding: .3rem .4rem; border-top: 1px solid var(--line); font-family: ui-monospace, monospace; word-break: break-all; }
            th { font-family: inherit; color: var(--muted); font-weight: 500; border-top: 0; }
            </style>
            </head>
            <body>
            <header>
              <h1><span>Herald</span> hub</h1>
              <span class="status" id="status" data-state="closed"><span class="dot"></span><span id="status-text">not subscribed</span></span>
              <span class="hint">Mercure protocol at <code>/.well-known/mercure</code></span>
            </header>
            <main>
              <div>
                <section>
                  <h2>Subscribe</h2>
                  <form id="subscribe-form">
                    <label for="sub-topics">Topic selectors, one per line (exact, <code>*</code> or URI templates)</label>
                    <textarea id="sub-topics" rows="3">*</textarea>
                    <label for="sub-types">Event types to show besides <code>message</code> (comma-separated)</label>
                    <input type="text" id="sub-types" placeholder="book, price">
                    <label for="sub-token">Subscriber token (for private updates; optional)</label>
                    <input type="text" id="sub-token" autocomplete="off">
                    <div class="row">
                      <button type="submit" id="connect">Subscribe</button>
                      <button type="button" class="secondary" id="disconnect">Close</button>
                    </div>
                  </form>
                  <div class="facts">
                    <span>Reconnects</span><b id="reconnects">0</b>
                    <span>Last event ID</span><b id="last-id">none</b>
                    <span>Received</span><b id="received">0</b>
                  </div>
                  <p class="note">On a reconnect the browser sends <code>Last-Event-ID</code> and the hub replays what was missed.</p>
                </section>
                <section>
                  <h2>Publish</h2>
                  <form id="publish-form">
                    <label for="pub-topic">Topic</label>
                    <input type="text" id="pub-topic" value="https://example.com/books/1">
                    <label for="pub-data">Data</label>
                    <textarea id="pub-data" rows="3">{"title": "Dune"}</textarea>
                    <div class="row">
                      <div><label for="pub-type">Type</label><input type="text" id="pub-type" placeholder="message"></div>
                      <div><label for="pub-id">ID</label><input type="text" id="pub-id" placeholder="made by the hub"></div>
                    </div>
                    <label class="check"><input type="checkbox" id="pub-private"> Private (only for subscribers allowed by their token)</label>
                    <label for="pub-token">Publisher token</label>
                    <input type="text" id="pub-token" autocomplete="off">
                    <button type="submit" id="publish">Publish</button>
                    <div id="pub-result" role="status"></div>
                  </form>
                </section>
              </div>
              <div>
                <section>
                  <h2>Events <span class="count" id="event-count">0</span></h2>
                  <p class="empty" id="no-events">Nothing yet. Publish an update to a topic you subscribe to.</p>
                  <ul id="events"></ul>
                </section>
                <section>
                  <h2>Active subscriptions <span class="count" id="subscription-count">–</span></h2>
                  <p class="note" id="subscriptions-note">Needs a subscriber token allowed to read <code>/.well-known/mercure/subscriptions</code>, on a hub that tracks subscriptions.</p>
                  <table id="subscriptions" hidden><thead><tr><th>Topic</th><th>Subscriber</th><th>Payload</th></tr></thead><tbody></tbody></table>
                </section>
              </div>
            </main>
            <script>
            "use strict";
            const settings = /*SETTINGS*/;
            const hub = new URL("/.well-known/mercure", location.href);
            const $ = (id) => document.getElementById(id);
            const params = new URLSearchParams(location.search);
            let source = null, opened = false, reconnects = 0, received = 0;

            $("pub-token").value = settings.publisherToken || "";
            if (params.getAll("topic").length) $("sub-topics").value = params.getAll("topic").join("\n");
            if (params.get("type")) $("sub-types").value = params.get("type");

            function setStatus(state, text) {
              $("status").dataset.state = state;
              $("status-text").textContent = text;
            }

            function show(event) {
              received += 1;
              $("received").textContent = received;
              $("event-count").textContent = received;
              $("last-id").textContent = event.lastEventId || "none";
              $("no-events").hidden = true;
              const item = document.createElement("li");
              item.dataset.id = event.lastEventId;
              item.dataset.type = event.type;
              const meta = document.createElement("div");
              meta.className = "meta";
              const type = document.createElement("span");
              type.className = "type";
              type.textContent = event.type;
              const id = document.createElement("span");
              id.className = "id";
              id.textContent = event.lastEventId;
              const time = document.createElement("span");
              time.textContent = new Date().toLocaleTimeString();
              meta.append(type, id, time);
              const data = document.createElement("pre");
              data.textContent = event.data;
              item.append(meta, data);
              $("events").prepend(item);
            }

            function subscribe() {
              if (source) source.close();
              const url = new URL(hub);
              for (const topic of $("sub-topics").value.split("\n").map((t) => t.trim()).filter(Boolean)) {
                url.searchParams.append("topic", topic);
              }
              const token = $("sub-token").value.trim();
              if (token) url.searchParams.set("authorization", token);
              opened = false;
              setStatus("connecting", "connecting…");
              source = new EventSource(url);
              source.onopen = () => {
                if (opened) reconnects += 1;
                opened = true;
                $("reconnects").textContent = reconnects;
                setStatus("open", reconnects ? `open (resumed after reconnect ${reconnects})` : "open");
              };
              source.onerror = () => {
                if (source.readyState === EventSource.CONNECTING) setStatus("reconnecting", "reconnecting…");
                else setStatus("closed", "closed by the hub (see its answer in the network panel)");
              };
              source.onmessage = show;
              listened = new Set(["message"]);
              listenToTypes();
            }

            // Named events reach only listeners of their name: listen to each type given.
            let listened = new Set();
            function listenToTypes() {
              for (const type of $("sub-types").value.split(",").map((t) => t.trim()).filter(Boolean)) {
                if (source && !listened.has(type)) { source.addEventListener(type, show); listened.add(type); }
              }
            }
            $("sub-types").addEventListener("change", listenToTypes);

            $("subscribe-form").addEventListener("submit", (event) => { event.preventDefault(); subscribe(); });
            $("disconnect").addEventListener("click", () => {
              if (source) source.close();
              source = null;
              setStatus("closed", "not subscribed");
            });

            $("publish-form").addEventListener("submit", async (event) => {
              event.preventDefault();
              const form = new URLSearchParams();
              form.append("topic", $("pub-topic").value);
              form.append("data", $("pub-data").value);
              if ($("pub-type").value) form.append("type", $("pub-type").value);
              if ($("pub-id").value) form.append("id", $("pub-id").value);
              if ($("pub-private").checked) form.append("private", "on");
              const result = $("pub-result");
              try {
                const response = await fetch(hub, {
                  method: "POST",
                  headers: { "Authorization": "Bearer " + $("pub-token").value.trim() },
                  body: form,
                });
                const text = await response.text();
                result.className = response.ok ? "ok" : "error";
                result.textContent = response.ok ? "Published " + text : `${response.status}: ${text}`;
              } catch (error) {
                result.className = "error";
                result.textContent = "The hub did not answer: " + error;
              }
            });

            // Active subscriptions: the list from the subscriptions API, kept current by the
            // subscription events published after it (resumed from its lastEventID: none missed).
            const subscriptions = new Map();
            function renderSubscriptions() {
              const body = $("subscriptions").querySelector("tbody");
              body.replaceChildren();
              for (const s of [...subscriptions.values()].sort((a, b) => a.topic.localeCompare(b.topic))) {
                const row = document.createElement("tr");
                for (const value of [s.topic, s.subscriber, s.payload === undefined ? "" : JSON.stringify(s.payload)]) {
                  const cell = document.createElement("td");
                  cell.textContent = value;
                  row.append(cell);
                }
                body.append(row);
              }
              $("subscription-count").textContent = subscriptions.size;
            }
            async function watchSubscriptions() {
              const token = settings.subscriberToken;
              if (!token) return;
              const response = await fetch(new URL("/.well-known/mercure/subscriptions", location.href), {
                headers: { "Authorization": "Bearer " + token },
              });
              if (!response.ok) return;
              const list = await response.json();
              for (const s of list.subscriptions) subscriptions.set(s.id, s);
              $("subscriptions").hidden = false;
              $("subscriptions-note").hidden = true;
              renderSubscriptions();
              const url = new URL(hub);
              url.searchParams.append("topic", "/.well-known/mercure/subscriptions{/topic}{/subscriber}");
              url.searchParams.set("authorization", token);
              url.searchParams.set("lastEventID", list.lastEventID);
              const events = new EventSource(url);
              events.onmessage = (event) => {
                const s = JSON.parse(event.data);
                if (s.active) subscriptions.set(s.id, s); else subscriptions.delete(s.id);
                renderSubscriptions();
              };
            }

            subscribe();
            watchSubscriptions();
            </script>
            </body>
            </html>
            """#
    }
}
