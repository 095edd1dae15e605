//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SSEClient
import Testing

@testable import SSEHub

/// Subscription events and the subscriptions API (draft-dunglas-mercure-07, "Active Subscriptions").
@Suite("Hub subscriptions API")
struct SubscriptionsTests {
    let http = HubHTTPTests()
    static let everySubscription = "/.well-known/mercure/subscriptions{/topic}{/subscriber}"

    /// A JSON object from the body of an event or a response.
    func object(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    /// GETs `path` on the hub's origin, with `token` if given.
    func get(_ base: String, _ path: String, token: String?) async throws -> (HTTPResponseStatus, String, HTTPHeaders) {
        let origin = base.replacingOccurrences(of: "/.well-known/mercure", with: "")
        var request = HTTPClientRequest(url: origin + path)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (response.status, String(buffer: try await response.body.collect(upTo: 1 << 20)), response.headers)
    }

    /// An EventSource that is open (within 5 s), and the events it receives.
    func openSource(_ url: String, token: String) async throws -> (EventSource, AsyncStream<ServerSentEvent>) {
        var configuration = EventSource.Configuration()
        configuration.headers = ["Authorization": "Bearer \(token)"]
        let source = EventSource(url: url, configuration: configuration)
        let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
        Task {
            for try await event in source { continuation.yield(event) }
            continuation.finish()
        }
        for _ in 0..<500 where source.state != .open { try await Task.sleep(for: .milliseconds(10)) }
        try #require(source.state == .open)
        return (source, events)
    }

    @Test func subscriptionEventsAnnounceEachSubscriptionAndItsEnd() async throws {
        try await self.http.withHub(tracksSubscriptions: true) { base in
            let watcherToken = try await token(subscribe: [Self.everySubscription])
            let (watcher, stream) = try await self.openSource(base + "?topic=" + Self.everySubscription.addingPercentEncoding, token: watcherToken)
            var events = stream.makeAsyncIterator()
            // The watcher's own subscription is announced to itself first.
            let own = try self.object(try #require(await events.next()).data)
            #expect(own["topic"] as? String == Self.everySubscription)

            let selector = "https://example.com/books/{id}"
            let readerToken = try await token(subscribe: ["https://example.com/books/1"], payload: .object(["user": .string("alice")]))
            let (reader, _) = try await self.openSource(base + "?topic=" + selector.addingPercentEncoding, token: readerToken)
            let started = try #require(await events.next())
            let document = try self.object(started.data)
            let subscriber = try #require(document["subscriber"] as? String)
            #expect(subscriber.hasPrefix("urn:uuid:"))
            let expectedID = "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D/"
                + subscriber.replacingOccurrences(of: ":", with: "%3A")
            #expect(document["@context"] as? String == "https://mercure.rocks/")
            #expect(document["id"] as? String == expectedID)
            #expect(document["type"] as? String == "Subscription")
            #expect(document["topic"] as? String == selector)
            #expect(document["active"] as? Bool == true)
            #expect((document["payload"] as? [String: Any])?["user"] as? String == "alice")

            reader.close()
            let ended = try self.object(try #require(await events.next()).data)
            #expect(ended["id"] as? String == expectedID)
            #expect(ended["active"] as? Bool == false)
            watcher.close()
        }
    }

    @Test func subscriptionEventsArePrivate() async throws {
        try await self.http.withHub(tracksSubscriptions: true) { base in
            // A subscription is announced (into the history), then a public marker follows it.
            let (reader, _) = try await self.openSource(base + "?topic=books", token: try await token(subscribe: []))
            _ = try await self.http.publish(base, "topic=public&data=marker")
            let url = base + "?topic=" + Self.everySubscription.addingPercentEncoding + "&topic=public&lastEventID=earliest"
            let (_, anonymous) = try await self.http.subscription(url) { $0.contains("data: marker") }
            let other = try await token(subscribe: ["https://example.com/other"])
            let (_, notGranted) = try await self.http.subscription(url, headers: ["Authorization": "Bearer \(other)"]) {
                $0.contains("data: marker")
            }
            let granted = try await token(subscribe: [Self.everySubscription])
            let (_, allowed) = try await self.http.subscription(url, headers: ["Authorization": "Bearer \(granted)"]) {
                $0.contains("data: marker")
            }
            #expect(!anonymous.contains("Subscription") && anonymous.contains("data: marker"))
            #expect(!notGranted.contains("Subscription") && notGranted.contains("data: marker"))
            #expect(allowed.contains("\"topic\":\"books\""))
            reader.close()
        }
    }

    @Test func theAPIListsActiveSubscriptions() async throws {
        try await self.http.withHub(tracksSubscriptions: true) { base in
            let adminToken = try await token(subscribe: [Self.everySubscription])
            let readerToken = try await token(subscribe: [], payload: .object(["n": .integer(1)]))
            let (reader, _) = try await self.openSource(base + "?topic=a&topic=b%2Fc", token: readerToken)

            let (status, body, headers) = try await self.get(base, "/.well-known/mercure/subscriptions", token: adminToken)
            #expect(status == .ok)
            #expect(headers.first(name: "Content-Type") == "application/ld+json")
            let list = try self.object(body)
            #expect(list["type"] as? String == "Subscriptions")
            #expect(list["id"] as? String == "/.well-known/mercure/subscriptions")
            let subscriptions = try #require(list["subscriptions"] as? [[String: Any]])
            #expect(subscriptions.compactMap { $0["topic"] as? String } == ["a", "b/c"])
            #expect(subscriptions.allSatisfy { ($0["payload"] as? [String: Any])?["n"] as? Int == 1 })
            let subscriber = try #require(subscriptions.first?["subscriber"] as? String)
            // The last event is the reader's second subscription event: resuming from it misses nothing.
            let lastEventID = try #require(list["lastEventID"] as? String)
            #expect(lastEventID.hasPrefix("urn:uuid:"))

            let (_, oneTopic, _) = try await self.get(base, "/.well-known/mercure/subscriptions/b%2Fc", token: adminToken)
            let topicList = try #require(try self.object(oneTopic)["subscriptions"] as? [[String: Any]])
            #expect(topicList.count == 1 && topicList.first?["topic"] as? String == "b/c")

            let encodedSubscriber = subscriber.replacingOccurrences(of: ":", with: "%3A")
            let (_, single, _) = try await self.get(base, "/.well-known/mercure/subscriptions/a/\(encodedSubscriber)", token: adminToken)
            let document = try self.object(single)
            #expect(document["type"] as? String == "Subscription")
            #expect(document["subscriber"] as? String == subscriber)
            #expect(document["lastEventID"] as? String == lastEventID)

            let (missing, reason, _) = try await self.get(base, "/.well-known/mercure/subscriptions/zzz/\(encodedSubscriber)", token: adminToken)
            #expect(missing == .notFound)
            #expect(reason.contains("no active subscription"))

            let (anonymous, _, _) = try await self.get(base, "/.well-known/mercure/subscriptions", token: nil)
            #expect(anonymous == .unauthorized)
            let narrow = try await token(subscribe: ["/.well-known/mercure/subscriptions/a{/subscriber}"])
            let (forbidden, why, _) = try await self.get(base, "/.well-known/mercure/subscriptions", token: narrow)
            #expect(forbidden == .forbidden)
            #expect(why.contains("does not allow"))
            #expect(try await self.get(base, "/.well-known/mercure/subscriptions/a", token: narrow).0 == .ok)

            reader.close()
            // Once the reader is gone (its end is announced), the list no longer has it.
            var remaining = subscriptions.count
            for _ in 0..<500 where remaining > 0 {
                try await Task.sleep(for: .milliseconds(10))
                let (_, now, _) = try await self.get(base, "/.well-known/mercure/subscriptions", token: adminToken)
                remaining = (try self.object(now)["subscriptions"] as? [[String: Any]])?.count ?? -1
            }
            #expect(remaining == 0)
        }
    }

    @Test func withoutTrackingThereIsNoAPI() async throws {
        try await self.http.withHub { base in
            let adminToken = try await token(subscribe: [Self.everySubscription])
            #expect(try await self.get(base, "/.well-known/mercure/subscriptions", token: adminToken).0 == .notFound)
        }
    }
}
