//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOCore
import NIOEmbedded
import Testing

@testable import SSEHub

@Suite("Subscriber timers")
struct SubscriberTimersTests {
    /// A heartbeat at every tick (the queue is always idle for zero seconds).
    static let heartbeat = (event: EncodedEvent(ByteBuffer(string: ":\n\n")), after: TimeAmount.zero)

    func start(on loop: EmbeddedEventLoop) -> SubscriberQueue {
        let queue = SubscriberQueue(limits: .init(events: 100, bytes: 1 << 20))
        queue.startTimer(period: .seconds(1), heartbeat: Self.heartbeat, writeDeadline: .seconds(2), on: loop)
        return queue
    }

    /// The heartbeats queued so far, once the queue is finished.
    func heartbeats(of queue: SubscriberQueue) async -> Int {
        queue.finish()
        return await queue.next().count
    }

    @Test func theSubscribersOfALoopShareOneTimerWhichStopsWithTheLast() async throws {
        let loop = EmbeddedEventLoop()
        let queues = (0..<3).map { _ in self.start(on: loop) }
        let timers = SubscriberTimers.forLoop(loop, period: .seconds(1))
        #expect(timers.count == 3 && timers.isTicking)
        #expect(SubscriberTimers.forLoop(loop, period: .seconds(2)) !== timers)  // another period, another timer

        loop.advanceTime(by: .seconds(2))
        #expect(await self.heartbeats(of: queues[0]) == 2)
        #expect(timers.count == 2)

        // A finished subscriber gets no more ticks; the others do.
        loop.advanceTime(by: .seconds(1))
        #expect(await self.heartbeats(of: queues[1]) == 3)
        #expect(await self.heartbeats(of: queues[2]) == 3)
        #expect(timers.count == 0 && !timers.isTicking)

        // The timer starts again with the next subscriber, a period after its start at most.
        let next = self.start(on: loop)
        #expect(timers.count == 1 && timers.isTicking)
        loop.advanceTime(by: .seconds(1))
        #expect(await self.heartbeats(of: next) == 1)
        #expect(!timers.isTicking)
    }

    @Test func aQueueFinishedBeforeItsTimerStartsIsNotAdded() async throws {
        let loop = EmbeddedEventLoop()
        let queue = SubscriberQueue(limits: .init(events: 100, bytes: 1 << 20))
        queue.finish()
        queue.startTimer(period: .seconds(3), heartbeat: Self.heartbeat, writeDeadline: .seconds(6), on: loop)
        let timers = SubscriberTimers.forLoop(loop, period: .seconds(3))
        #expect(timers.count == 0 && !timers.isTicking)
    }
}
