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
            let stores = try (0..<2).map { _ in try PostgresEventStore(url: url, retention: Retention(), logger: Logger(label: "test"), now: Date.init) }
            let pools = stores.map { store in Task { await store.run() } }
            defer { pools.forEach { $0.cancel() } }
            for store in stores { try await store.migrate() }
            var hubs: [Hub] = []
            for store in stores { hubs.append(try await Hub(store: store)) }
            let followers = zip(stores, hubs).map { store, hub in Task { await store.follow(hub, every: .milliseconds(20)) } }
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
            for subscription in subscriptions {
                let collector = Task {
                    var ids: [String] = []
                    var iterator = subscription.makeAsyncIterator()
                    while ids.count < 30, let buffer = await iterator.next() {
                        let text = String(buffer: buffer)
                        ids.append(String(text.dropFirst(4).prefix { $0 != "\n" }))  // "id: …\n"
                    }
                    return ids
                }
                let limit = Task {
                    try await Task.sleep(for: .seconds(10))
                    collector.cancel()  // ends the subscription: what arrived by then is checked
                }
                received.append(await collector.value)
                limit.cancel()
            }
            // Each node got all 30, once each, and both in the same (the history's) order.
            #expect(received[0].count == 30 && Set(received[0]).count == 30)
            #expect(received[0] == received[1])
            for node in 0..<2 {
                let own = received[0].filter { $0.hasPrefix("n\(node)-") }
                #expect(own == (0..<15).map { "n\(node)-\($0)" }, "a node's publishes keep their order")
            }
        }
    }
}
