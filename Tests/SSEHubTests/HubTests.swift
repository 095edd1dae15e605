//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import SSECore
import Testing

@testable import SSEHub

/// The events in some encoded buffers.
func events(in buffers: [ByteBuffer]) throws -> [ServerSentEvent] {
    var parser = ServerSentEventParser()
    var events: [ServerSentEvent] = []
    for buffer in buffers {
        try parser.parse(buffer.readableBytesView) { if case .event(let event) = $0 { events.append(event) } }
    }
    return events
}

/// Takes `count` buffers from a subscription, within 10 s.
func take(_ count: Int, from subscription: Subscription) async throws -> [ByteBuffer] {
    try await withThrowingTaskGroup(of: [ByteBuffer].self) { group in
        group.addTask {
            var taken: [ByteBuffer] = []
            for await buffer in subscription {
                taken.append(buffer)
                if taken.count == count { break }
            }
            return taken
        }
        group.addTask {
            try await Task.sleep(for: .seconds(10))
            throw CancellationError()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

@Suite("Hub core")
struct HubTests {
    func update(_ n: Int, topic: String = "https://example.com/books/1", isPrivate: Bool = false) -> Update {
        Update(id: "u\(n)", topics: [topic], data: "update \(n)", isPrivate: isPrivate)
    }

    @Test func subscribersReceiveTheUpdatesOfTheirTopicsOnly() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        let (books, _) = try await hub.subscribe([TopicSelector("https://example.com/books/{id}")], lastEventID: nil)
        let (other, _) = try await hub.subscribe([TopicSelector("https://example.com/other")], lastEventID: nil)
        try await hub.publish(self.update(1))
        try await hub.publish(self.update(2, topic: "https://example.com/other"))
        try await hub.publish(Update(id: "u3", topics: ["https://example.com/x", "https://example.com/books/9"], data: "alternate"))
        #expect(try events(in: try await take(2, from: books)).map(\.data) == ["update 1", "alternate"])
        #expect(try events(in: try await take(1, from: other)).map(\.data) == ["update 2"])
    }

    @Test func theHubMakesTheIDOfAnUpdatePublishedWithoutOne() async throws {
        try await StoreKind.sqlite.with { store in
            let hub = try await Hub(store: store)
            let books = [TopicSelector("https://example.com/books/{id}")]
            let (subscription, _) = try await hub.subscribe(books, lastEventID: nil)
            let first = try await hub.publish(topics: ["https://example.com/books/1"], data: "one", type: "book")
            let second = try await hub.publish(topics: ["https://example.com/books/2"], data: "two")
            for update in [first, second] {
                #expect(update.id.hasPrefix("urn:uuid:") && update.id.count == 45, "\(update.id)")
            }
            #expect(first.id != second.id)
            let received = try events(in: try await take(2, from: subscription))
            #expect(received.map(\.id) == [first.id, second.id])
            #expect(received.map(\.data) == ["one", "two"])
            #expect(received.map(\.type) == ["book", "message"])
            // Stored under that ID: a subscriber resuming after the first gets the second.
            let (resumed, _) = try await hub.subscribe(books, lastEventID: first.id)
            #expect(try events(in: try await take(1, from: resumed)).map(\.id) == [second.id])
            await #expect(throws: PublishError.self) { try await hub.publish(topics: [], data: "to no one") }
            await #expect(throws: PublishError.self) { try await hub.publish(Update(id: "u1", topics: [], data: "to no one")) }
            #expect(try await store.lastSequence() == 2, "what was refused is not stored")
        }
    }

    @Test func subscribersDoNotWaitForTheDiskSync() async throws {
        try await StoreKind.sqlite.with { store in
            let store = try #require(store as? SQLiteEventStore)
            let released = NIOLockedValueBox(false)
            store.interposeSync { sync in
                for _ in 0..<1_000 where !released.withLockedValue({ $0 }) { usleep(5_000) }
                try sync()
            }
            let hub = try await Hub(store: store)
            let (subscription, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
            let answered = NIOLockedValueBox(false)
            let publish = Task {
                try await hub.publish(self.update(1))
                answered.withLockedValue { $0 = true }
            }
            #expect(try events(in: try await take(1, from: subscription)).map(\.id) == ["u1"])
            #expect(!answered.withLockedValue { $0 }, "delivered while the publisher waits for the sync")
            released.withLockedValue { $0 = true }
            try await publish.value
            #expect(answered.withLockedValue { $0 })
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aPublisherWaitsWhileTheLoopWritingItsSubscribersIsBehind() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        // As many subscribers as make a loop's writer behind once their event waits for it, on a
        // loop whose clock the test moves.
        let loop = NIOAsyncTestingEventLoop()
        var channels: [NIOAsyncTestingChannel] = []
        var sinks: [ChannelSink] = []
        var subscriptions: [Subscription] = []  // kept: a subscription ends with its last copy
        for _ in 0..<LoopWriter.maximumBacklog {
            let (subscription, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
            let channel = NIOAsyncTestingChannel(loop: loop)
            let sink = try await loop.executeInContext { ChannelSink(channel: channel) }
            #expect(subscription.queue.attach(sink))
            channels.append(channel)
            sinks.append(sink)
            subscriptions.append(subscription)
        }

        // The first two drains run at once; after the second, right after the first (the loop's
        // clock has not moved), the writer is saturated, and the next drain waits for more events
        // to share its writes (see `LoopWriter`). The publishers do not wait while it does, up to
        // the maximum of events held: then their writes wait in it, and the loop is behind.
        for n in 1...2 {
            try await hub.publish(self.update(n))
            await loop.run()
        }
        let last = LoopWriter.maximumEventsHeld + 3
        let held = NIOLockedValueBox(false)
        let publishing = Task {
            for n in 3..<last { try await hub.publish(self.update(n)) }
            held.withLockedValue { $0 = true }
        }
        for _ in 0..<2_000 where !held.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
        try #require(held.withLockedValue { $0 }, "answered while the drain waits by choice")
        try await publishing.value
        let answered = NIOLockedValueBox(false)
        let behind = Task {
            try await hub.publish(self.update(last))
            answered.withLockedValue { $0 = true }
        }
        for _ in 0..<2_000 where hub.lastSequence < last { try await Task.sleep(for: .milliseconds(5)) }
        #expect(hub.lastSequence == last, "the last is fanned out")
        #expect(!answered.withLockedValue { $0 }, "the writes before wait for the loop: the last one's publisher waits")

        await loop.advanceTime(by: LoopWriter.maximumHold)
        try await behind.value
        var received: [[String?]] = []
        for channel in channels {
            var bodies: [ByteBuffer] = []
            while let part = try await channel.readOutbound(as: HTTPResponsePart.self) {
                if case .body(let bytes) = part { bodies.append(bytes) }
            }
            received.append(try events(in: bodies).map(\.id))
        }
        #expect(received.allSatisfy { $0 == (1...last).map { "u\($0)" } }, "every subscriber has every event")
        for sink in sinks { sink.stop() }
        for subscription in subscriptions { subscription.finish() }
        await loop.run()
    }

    @Test func privateUpdatesGoToNoOneWithoutAuthorization() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        let (subscription, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
        try await hub.publish(self.update(1, isPrivate: true))
        try await hub.publish(self.update(2))
        #expect(try events(in: try await take(1, from: subscription)).map(\.id) == ["u2"])
        let (replay, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: "earliest")
        #expect(try events(in: try await take(1, from: replay)).map(\.id) == ["u2"], "nor on replay")
    }

    @Test func resumingReplaysWhatCameAfterTheID() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        for n in 1...5 { try await hub.publish(self.update(n)) }
        let selectors = [TopicSelector("*")]

        let (after3, resumption) = try await hub.subscribe(selectors, lastEventID: "u3")
        #expect(resumption?.lastEventID == "u3")
        #expect(try events(in: try await take(2, from: after3)).map(\.id) == ["u4", "u5"])

        let (earliest, fromEarliest) = try await hub.subscribe(selectors, lastEventID: "earliest")
        #expect(fromEarliest?.lastEventID == "earliest")
        #expect(try events(in: try await take(5, from: earliest)).map(\.id) == ["u1", "u2", "u3", "u4", "u5"])

        let (unknown, fromUnknown) = try await hub.subscribe(selectors, lastEventID: "never-published")
        #expect(fromUnknown?.lastEventID == "earliest", "not the last id the hub saw: everything kept follows")
        #expect(try events(in: try await take(5, from: unknown)).count == 5)

        let (_, none) = try await hub.subscribe(selectors, lastEventID: nil)
        #expect(none == nil, "no Last-Event-ID asked for, none answered")
    }

    @Test func updatesPublishedDuringAReplayAreNeitherLostNorDuplicated() async throws {
        let hub = try await Hub(store: InMemoryEventStore(retention: try Retention(count: 100_000)))
        for n in 1...100 { try await hub.publish(self.update(n)) }
        // Subscribers resume from various points while 300 more updates are published concurrently.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for n in 101...400 { try await hub.publish(self.update(n)) }
            }
            for start in stride(from: 10, through: 100, by: 10) {
                group.addTask {
                    let (subscription, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: "u\(start)")
                    let received = try events(in: try await take(400 - start, from: subscription)).map(\.id)
                    #expect(received == (start + 1...400).map { "u\($0)" }, "resumed after u\(start)")
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func concurrentPublishesReachSubscribersInHistoryOrder() async throws {
        let hub = try await Hub(store: InMemoryEventStore(retention: try Retention(count: 100_000)))
        let (subscription, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<4 {
                group.addTask {
                    for n in 0..<100 { try await hub.publish(self.update(task * 1000 + n)) }
                }
            }
            try await group.waitForAll()
        }
        let live = try events(in: try await take(400, from: subscription)).map(\.id)
        let (replay, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: "earliest")
        let history = try events(in: try await take(400, from: replay)).map(\.id)
        #expect(live == history, "live order is the history's order")
        #expect(Set(live).count == 400)
    }

    @Test func aSlowSubscriberIsCutAndTheOthersDoNotWait() async throws {
        var configuration = Hub.Configuration()
        configuration.subscriberQueueLimit = 5
        let hub = try await Hub(store: InMemoryEventStore(), configuration: configuration)
        let (slow, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
        let (fast, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
        let fastReceived = NIOLockedValueBox(0)
        let fastReader = Task {
            for await _ in fast {
                if fastReceived.withLockedValue({ value in value += 1; return value }) == 20 { break }
            }
        }
        for n in 1...20 {
            try await hub.publish(self.update(n))
            // The fast subscriber keeps up; the slow one never reads.
            for _ in 0..<1000 where fastReceived.withLockedValue({ $0 }) < n { try await Task.sleep(for: .milliseconds(1)) }
        }
        await fastReader.value
        #expect(fastReceived.withLockedValue { $0 } == 20)
        var received = 0
        for await _ in slow { received += 1 }
        #expect(received == 5, "the slow subscriber got what fit in its queue, then its stream ended")
        #expect(hub.subscriberCount <= 1)
    }

    @Test func theQueueIsBoundedInBytesToo() async throws {
        var configuration = Hub.Configuration()
        configuration.subscriberQueueBytes = 3 * 65  // "id: uN\ndata: " + 50 bytes + "\n\n"
        let hub = try await Hub(store: InMemoryEventStore(), configuration: configuration)
        let (slow, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
        for n in 1...10 {
            try await hub.publish(Update(id: "u\(n)", topics: ["t"], data: String(repeating: "x", count: 50)))
        }
        var received = 0
        for await buffer in slow {
            received += 1
            #expect(buffer.readableBytes == 65)
        }
        #expect(received == 3, "what fit in 195 bytes, then the stream ended")
        #expect(hub.subscriberCount == 0)
    }

    @Test func aSubscriberThatComesBetweenTwoPublishesGetsTheSecond() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        let (first, _) = try await hub.subscribe([TopicSelector("https://example.com/books/1")], lastEventID: nil)
        try await hub.publish(self.update(1))  // the hub learns who gets updates on this topic
        let (exact, _) = try await hub.subscribe([TopicSelector("https://example.com/books/1")], lastEventID: nil)
        let (template, _) = try await hub.subscribe([TopicSelector("https://example.com/books/{id}")], lastEventID: nil)
        try await hub.publish(self.update(2))
        #expect(try events(in: try await take(2, from: first)).map(\.data) == ["update 1", "update 2"])
        #expect(try events(in: try await take(1, from: exact)).map(\.data) == ["update 2"])
        #expect(try events(in: try await take(1, from: template)).map(\.data) == ["update 2"])
    }

    @Test func aSubscriptionThatEndsIsForgotten() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        do {
            let (subscription, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: nil)
            #expect(hub.subscriberCount == 1)
            _ = subscription
        }
        for _ in 0..<100 where hub.subscriberCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(hub.subscriberCount == 0)
    }
}
