//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import HeraldTestSupport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import SSEHub

/// Two hubs, as two nodes would be, sharing one PostgreSQL history.
@Suite("Hubs sharing PostgreSQL", .enabled(if: ThrowawayPostgres.binaries != nil, "PostgreSQL is not installed"))
struct ClusterTests {
    @Test func everyNodeDeliversEveryUpdateOnceInOrder() async throws {
        try await ThrowawayPostgres.with { url in
            let (stores, hubs, pools) = try await Self.nodes(2, on: url)
            defer { pools.forEach { $0.cancel() } }
            let followers = zip(stores, hubs).map { store, hub in Task { await store.follow(hub) } }
            defer { followers.forEach { $0.cancel() } }

            var subscriptions: [Subscription] = []
            for hub in hubs { subscriptions.append(try await hub.subscribe([TopicSelector("*")], lastEventID: nil).events) }
            // Both nodes publish at once, interleaved.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in 0..<2 {
                    let hub = hubs[node]
                    group.addTask {
                        for n in 0..<15 { try await hub.publish(Update(id: "n\(node)-\(n)", topics: ["t"], data: "\(n)")) }
                    }
                }
                try await group.waitForAll()
            }
            var received: [[String]] = []
            var iterators = subscriptions.map { $0.makeAsyncIterator() }
            for index in iterators.indices { received.append(await Self.ids(30, from: &iterators[index])) }
            // Each node got all 30, once each, and both in the same (the history's) order.
            #expect(received[0].count == 30 && Set(received[0]).count == 30)
            #expect(received[0] == received[1])
            for node in 0..<2 {
                let own = received[0].filter { $0.hasPrefix("n\(node)-") }
                #expect(own == (0..<15).map { "n\(node)-\($0)" }, "a node's publishes keep their order")
            }
        }
    }

    /// Reading every 10 minutes, never (an interval of zero), or every 292 billion years (which a
    /// clock cannot count, and waits for ever): only notifications, or the catch-up after
    /// reconnecting, deliver within the test's limits.
    @Test(arguments: [Duration.seconds(600), .zero, .seconds(Int64.max)])
    func aNotificationDeliversAtOnceAndAMissedOneIsCaughtUp(interval: Duration) async throws {
        try await ThrowawayPostgres.withServer { server in
            let (stores, hubs, pools) = try await Self.nodes(2, on: server.url)
            defer { pools.forEach { $0.cancel() } }
            let followers = zip(stores, hubs).map { store, hub in Task { await store.follow(hub, every: interval) } }
            defer { followers.forEach { $0.cancel() } }
            var iterator = try await hubs[1].subscribe([TopicSelector("t")], lastEventID: nil).events.makeAsyncIterator()
            try await hubs[0].publish(Update(id: "notified", topics: ["t"], data: "1"))
            #expect(await Self.ids(1, from: &iterator) == ["notified"])

            // Every listening connection is cut: what is published meanwhile is never notified to
            // them, and is read when they listen again.
            try await server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
            // Right after the kill, the pool can hand the append a dying connection, and the append
            // then fails at the store's timeout (a publisher gets 503 and tries again): so does this.
            for attempt in 1...3 {
                do {
                    try await hubs[0].publish(Update(id: "missed", topics: ["t"], data: "2"))
                    break
                } catch let error as EventStoreError where error == .duplicateID {
                    break  // the attempt that timed out was stored after all
                } catch where attempt < 3 {
                    continue
                }
            }
            #expect(await Self.ids(1, from: &iterator) == ["missed"])
        }
    }

    @Test func publishesFailWhileTheDatabaseIsDownAndNodesCatchUpAfter() async throws {
        try await ThrowawayPostgres.withServer { server in
            let (stores, hubs, pools) = try await Self.nodes(2, on: server.url, timeout: .seconds(1))
            defer { pools.forEach { $0.cancel() } }
            let followers = zip(stores, hubs).map { store, hub in Task { await store.follow(hub, every: .seconds(600)) } }
            defer { followers.forEach { $0.cancel() } }
            var iterator = try await hubs[1].subscribe([TopicSelector("t")], lastEventID: nil).events.makeAsyncIterator()
            try await hubs[0].publish(Update(id: "before", topics: ["t"], data: "1"))
            #expect(await Self.ids(1, from: &iterator) == ["before"])

            server.stop()
            let started = ContinuousClock.now
            await #expect(throws: EventStoreError.self, "no false success") {
                try await hubs[0].publish(Update(id: "during", topics: ["t"], data: "2"))
            }
            #expect(ContinuousClock.now - started < .seconds(5), "the store's timeout bounds the wait")

            try await server.start()
            // The pool reconnects on its own; the first publish after it may still fail.
            var stored = false
            for _ in 0..<100 where !stored {
                stored = (try? await hubs[0].publish(Update(id: "after", topics: ["t"], data: "3"))) != nil
                if !stored { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(stored)
            #expect(await Self.ids(1, from: &iterator) == ["after"], "the failed publish is not delivered")
        }
    }

    @Test func everyNodeListsEverySubscriptionAndTheOnesOfADeadNodeEnd() async throws {
        try await ThrowawayPostgres.with { url in
            let (stores, hubs, pools) = try await Self.nodes(3, on: url, tracking: true)
            defer { pools.forEach { $0.cancel() } }
            let followers = zip(stores, hubs).map { store, hub in Task { await store.follow(hub) } }
            defer { followers.forEach { $0.cancel() } }

            let kept = try await hubs[0].subscribe([TopicSelector("kept")], lastEventID: nil).events
            let orphaned = try await hubs[2].subscribe([TopicSelector("orphaned")], lastEventID: nil).events
            func listed(on hub: Hub) async throws -> [String] {
                try await hub.activeSubscriptions().subscribers.flatMap(\.topics).sorted()
            }
            #expect(try await listed(on: hubs[1]) == ["kept", "orphaned"], "a node lists the subscriptions of the others")

            // Node 2 dies without ending its subscription: it stops telling the others it is alive.
            followers[2].cancel()
            pools[2].cancel()
            var remaining: [String] = []
            for _ in 0..<100 {
                remaining = try await listed(on: hubs[1])
                if remaining == ["kept"] { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(remaining == ["kept"], "a dead node's subscription is removed after its lifetime")
            // …and its end is announced, once, in the shared history.
            var ends: [String] = []
            for _ in 0..<50 {
                ends = try await stores[0].updates(through: .max).map(\.update).filter {
                    $0.topics[0].contains("orphaned") && $0.data.contains(#""active":false"#)
                }.map(\.id)
                if !ends.isEmpty { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(ends.count == 1)
            _ = (kept, orphaned)
        }
    }

    /// `count` hubs with stores of their own on the database at `url`, and the tasks running the
    /// stores' pools (to cancel).
    private static func nodes(
        _ count: Int,
        on url: String,
        timeout: Duration = .seconds(5),
        tracking: Bool = false
    ) async throws -> (stores: [PostgresEventStore], hubs: [Hub], pools: [Task<Void, Never>]) {
        let stores = try (0..<count).map { _ in
            try PostgresEventStore(
                url: url,
                retention: Retention(),
                timeout: timeout,
                nodeLifetime: .seconds(1),
                logger: Logger(label: "test"),
                now: Date.init
            )
        }
        let pools = stores.map { store in Task { await store.run() } }
        // A fresh server on a busy machine can be slow.
        for store in stores { try await store.migrate(timeout: .seconds(30)) }
        var configuration = Hub.Configuration()
        configuration.tracksSubscriptions = tracking
        var hubs: [Hub] = []
        for store in stores { hubs.append(try await Hub(store: store, configuration: configuration)) }
        return (stores, hubs, pools)
    }

    /// The IDs of the next `count` events of a subscription, or of those that arrive within 10 s.
    private static func ids(_ count: Int, from iterator: inout Subscription.AsyncIterator) async -> [String] {
        let collector = Task { [iterator] in
            var iterator = iterator
            var ids: [String] = []
            while ids.count < count, let buffer = await iterator.next() {
                ids.append(String(String(buffer: buffer).dropFirst(4).prefix { $0 != "\n" }))  // "id: …\n"
            }
            return (ids, iterator)
        }
        let limit = Task {
            try await Task.sleep(for: .seconds(10))
            collector.cancel()
        }
        defer { limit.cancel() }
        let (ids, rest) = await collector.value
        iterator = rest
        return ids
    }
}
