//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import NIOSSL
import Testing

@testable import SSEHub

/// An event loop's writer, on an embedded loop whose clock the test moves.
@Suite("Loop writers")
struct LoopWriterTests {
    /// The bodies the channel has written so far.
    func written(_ channel: EmbeddedChannel) throws -> [String] {
        var bodies: [String] = []
        while let part = try channel.readOutbound(as: HTTPResponsePart.self) {
            if case .body(let bytes) = part { bodies.append(String(buffer: bytes)) }
        }
        return bodies
    }

    /// Two channels on one loop.
    func twoChannels() -> (EmbeddedChannel, EmbeddedChannel) {
        let channel = EmbeddedChannel()
        return (channel, EmbeddedChannel(loop: channel.embeddedEventLoop))
    }

    /// A subscriber's queue and its sink on `channel`.
    func subscriber(on channel: EmbeddedChannel) -> (SubscriberQueue, ChannelSink) {
        (SubscriberQueue(limits: .init(events: 10, bytes: 1 << 20)), ChannelSink(channel: channel))
    }

    /// The writer of `loop` (whose sinks wait for it when they stop), made with drains that each
    /// take `cpu` of CPU time (and no time on the loop's clock, which only the test moves).
    func writer(on loop: any EventLoop, drainsTaking cpu: TimeAmount) -> LoopWriter {
        let clock = NIOLockedValueBox(TimeAmount.zero)
        return LoopWriter.forLoop(loop) { clock.withLockedValue { $0 = $0 + cpu; return $0 } }
    }

    @Test func aDrainWaitsForMoreEventsAndASinkStopsOnlyAfterWhatWasHandedOver() throws {
        let (channel, other) = self.twoChannels()
        let loop = channel.embeddedEventLoop
        let (queue, sink) = self.subscriber(on: channel)
        let (otherQueue, otherSink) = self.subscriber(on: other)
        let both = [(queue, sink), (otherQueue, otherSink)]
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))
        let stopped = NIOLockedValueBox(false)
        sink.done.futureResult.whenSuccess { stopped.withLockedValue { $0 = true } }

        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: both)
        loop.run()
        #expect(try self.written(channel) == ["one"], "the first drain runs at once")
        #expect(try self.written(other) == ["one"])

        // The next waits for more events to share its writes (see `LoopWriter`).
        writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: both)
        sink.stop()
        loop.run()
        #expect(try self.written(channel).isEmpty)
        #expect(!stopped.withLockedValue { $0 })

        loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(channel) == ["two"], "written before the sink stops")
        #expect(try self.written(other) == ["two"])
        #expect(stopped.withLockedValue { $0 })

        writer.enqueue(EncodedEvent(ByteBuffer(string: "three")), to: both)
        loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(channel).isEmpty, "nothing after the sink stopped")
        #expect(try self.written(other) == ["three"])
        otherSink.stop()
        loop.run()
    }

    /// An app's own event loops shut down with a drain scheduled: what waits for its writes (a
    /// publisher held back by the flow control, a sink stopping) goes on rather than hang.
    @Test func whatWaitsForADrainGoesOnWhenTheLoopShutsDownFirst() throws {
        let (channel, other) = self.twoChannels()
        let loop = channel.embeddedEventLoop
        let (queue, sink) = self.subscriber(on: channel)
        let (otherQueue, otherSink) = self.subscriber(on: other)
        let both = [(queue, sink), (otherQueue, otherSink)]
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))
        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: both)
        loop.run()
        #expect(try self.written(channel) == ["one"])

        writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: both)  // the drain waits (see above)
        let afterWrites = NIOLockedValueBox(false)
        writer.afterWrites { afterWrites.withLockedValue { $0 = true } }
        let stopped = NIOLockedValueBox(false)
        sink.done.futureResult.whenSuccess { stopped.withLockedValue { $0 = true } }
        sink.stop()
        otherSink.stop()
        loop.run()
        #expect(!afterWrites.withLockedValue { $0 } && !stopped.withLockedValue { $0 })
        try loop.syncShutdownGracefully()
        #expect(afterWrites.withLockedValue { $0 }, "answered, though nothing was written")
        #expect(stopped.withLockedValue { $0 })
        #expect(try self.written(channel).isEmpty)
    }

    @Test func anEventForOneSubscriberDoesNotWait() throws {
        let (channel, other) = self.twoChannels()
        let loop = channel.embeddedEventLoop
        let (queue, sink) = self.subscriber(on: channel)
        let (otherQueue, otherSink) = self.subscriber(on: other)
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))

        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: [(queue, sink), (otherQueue, otherSink)])
        loop.run()
        #expect(try self.written(channel) == ["one"])

        // After a drain that took some time, an event for one subscriber is written at once: there
        // is no other to share its write with.
        writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: [(queue, sink)])
        loop.run()
        #expect(try self.written(channel) == ["two"])

        // Events that come while it waits go with it.
        writer.enqueue(EncodedEvent(ByteBuffer(string: "three")), to: [(queue, sink), (otherQueue, otherSink)])
        writer.enqueue(EncodedEvent(ByteBuffer(string: "four")), to: [(otherQueue, otherSink)])
        loop.run()
        #expect(try self.written(other) == ["one"], "waits for more")
        loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(channel) == ["three"])
        #expect(try self.written(other) == ["three", "four"])
        sink.stop()
        otherSink.stop()
        loop.run()
    }

    /// Two subscribers on two channels of one loop, and the loop's writer.
    struct TwoSubscribers {
        let channel: EmbeddedChannel
        let other: EmbeddedChannel
        let both: [(SubscriberQueue, ChannelSink)]
        let writer: LoopWriter
        var loop: EmbeddedEventLoop { self.channel.embeddedEventLoop }

        /// Queues `event` for both; whether the writer is behind.
        @discardableResult
        func send(_ event: String) -> Bool {
            self.writer.enqueue(EncodedEvent(ByteBuffer(string: event)), to: self.both)
        }

        func stop() {
            for (_, sink) in self.both { sink.stop() }
            self.loop.run()
        }
    }

    /// Two subscribers, after the first drain of a writer whose drains take `cpu` of CPU time: it
    /// ran at once, and the writer is busy until the test moves the loop's clock on.
    func afterAFirstDrain(taking cpu: TimeAmount) throws -> TwoSubscribers {
        let (channel, other) = self.twoChannels()
        let writer = self.writer(on: channel.embeddedEventLoop, drainsTaking: cpu)
        let subscribers = TwoSubscribers(
            channel: channel, other: other, both: [self.subscriber(on: channel), self.subscriber(on: other)], writer: writer
        )
        subscribers.send("one")
        subscribers.loop.run()
        #expect(try self.written(channel) == ["one"], "nothing to wait for before the first drain")
        #expect(try self.written(other) == ["one"])
        return subscribers
    }

    @Test(arguments: [(Int64(10), Int64(30)), (100, 200)])
    func aBusyWriterWaitsThreeTimesTheCPUTimeOfItsLastDrainAtMostTheMaximumHold(cpu: Int64, wait: Int64) throws {
        #expect(LoopWriter.maximumHold == .milliseconds(200))
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(cpu))
        subscribers.send("two")
        subscribers.loop.advanceTime(by: .milliseconds(wait - 1))
        #expect(try self.written(subscribers.channel).isEmpty)
        subscribers.send("three")
        subscribers.loop.advanceTime(by: .milliseconds(1))
        #expect(try self.written(subscribers.channel) == ["two", "three"])
        #expect(try self.written(subscribers.other) == ["two", "three"])
        subscribers.stop()
    }

    @Test func anIdleWriterWaitsAtMostTheMaximumDelayAndIsBusyAgainAfterADrain() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        subscribers.send("two")
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two"], "no wait: the last drain took no time on the clock")

        subscribers.send("three")
        subscribers.loop.advanceTime(by: .milliseconds(29))
        #expect(try self.written(subscribers.channel).isEmpty, "busy: three times the 10 ms of CPU time of the last drain")
        subscribers.loop.advanceTime(by: .milliseconds(1))
        #expect(try self.written(subscribers.channel) == ["three"])
        subscribers.stop()
    }

    /// An event that comes while a drain runs finds the writer busy, however long ago the drain
    /// before it ended.
    @Test func aWriterIsBusyWhileADrainRuns() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        subscribers.send("two")
        // Runs in the drain of "two", as a publisher held back by the flow control does.
        subscribers.writer.afterWrites { subscribers.send("three") }
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two"])
        subscribers.loop.advanceTime(by: .milliseconds(29))
        #expect(try self.written(subscribers.channel).isEmpty)
        subscribers.loop.advanceTime(by: .milliseconds(1))
        #expect(try self.written(subscribers.channel) == ["three"])
        subscribers.stop()
    }

    /// While a drain waits by choice, the events queued do not make the writer behind (a publisher
    /// would wait for a loop that has nothing to do), up to the maximum held.
    @Test func aWriterWaitingByChoiceIsNotBehindUntilTheMaximumOfEventsHeld() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        #expect(LoopWriter.maximumEventsHeld > LoopWriter.maximumQueuedEvents)
        let events = (0...LoopWriter.maximumEventsHeld).map { "e\($0)" }
        for event in events.dropLast() { #expect(!subscribers.send(event), "\(event)") }
        #expect(subscribers.send(events.last!), "behind")
        subscribers.loop.advanceTime(by: .milliseconds(30))
        #expect(try self.written(subscribers.channel) == events)

        // With no wait (after 200 ms idle), the writer is behind at the usual maximum.
        let late = (0...LoopWriter.maximumQueuedEvents).map { "late\($0)" }
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        for event in late.dropLast() { #expect(!subscribers.send(event), "\(event)") }
        #expect(subscribers.send(late.last!), "behind")
        subscribers.loop.run()
        #expect(try self.written(subscribers.other) == events + late)
        subscribers.stop()
    }

    @Test func aWriterIsBehindWhileTheMaximumBacklogOfWritesWaitsForTheLoop() throws {
        let loop = EmbeddedEventLoop()
        let channels = (0..<LoopWriter.maximumBacklog).map { _ in EmbeddedChannel(loop: loop) }
        let targets = channels.map(self.subscriber(on:))
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))

        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: Array(targets.dropFirst())))
        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: [targets[0]]), "one write short of the backlog")
        #expect(writer.enqueue(EncodedEvent(ByteBuffer(string: "three")), to: [targets[0]]), "the backlog waits for the loop")
        let written = NIOLockedValueBox(false)
        writer.afterWrites { written.withLockedValue { $0 = true } }
        #expect(!written.withLockedValue { $0 })
        loop.run()
        #expect(try self.written(channels[0]) == ["two", "three"])
        #expect(try self.written(channels[1]) == ["one"])
        #expect(written.withLockedValue { $0 }, "once all are written")
        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "four")), to: targets), "caught up")
        loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(channels[0]) == ["four"])
        for (_, sink) in targets { sink.stop() }
        loop.run()
    }

    @Test func aWriterIsBehindWhileTheMaximumOfEventsWaitsForTheLoopHoweverFewTheirWrites() throws {
        let channel = EmbeddedChannel()
        let loop = channel.embeddedEventLoop
        let (queue, sink) = self.subscriber(on: channel)
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))
        let events = (0...LoopWriter.maximumQueuedEvents).map { "e\($0)" }
        for event in events.dropLast() {
            #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: event)), to: [(queue, sink)]), "\(event)")
        }
        #expect(writer.enqueue(EncodedEvent(ByteBuffer(string: events.last!)), to: [(queue, sink)]), "the events wait for the loop")
        let written = NIOLockedValueBox(false)
        writer.afterWrites { written.withLockedValue { $0 = true } }
        loop.run()
        #expect(try self.written(channel) == events)
        #expect(written.withLockedValue { $0 }, "once all are written")
        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "next")), to: [(queue, sink)]), "caught up")
        sink.stop()
        loop.run()
    }

    @Test func aRunOfEventsGoesToASinkOverTLSAsOneBufferAndToAPlainOneAsItIs() throws {
        let plain = EmbeddedChannel()
        let loop = plain.embeddedEventLoop
        // A TLS handler, which the sink finds, and a recorder in front of it, which takes the
        // writes before they are encrypted.
        let context = try NIOSSLContext(configuration: HubTLSTests.serverTLS())
        let recorder = BodyRecorder()
        let tls = EmbeddedChannel(handlers: [NIOSSLServerHandler(context: context), recorder], loop: loop)
        let (plainQueue, plainSink) = self.subscriber(on: plain)
        let (tlsQueue, tlsSink) = self.subscriber(on: tls)
        #expect(!plainSink.isOverTLS && tlsSink.isOverTLS)
        let both = [(plainQueue, plainSink), (tlsQueue, tlsSink)]
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))

        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: both)
        loop.run()
        // The next drain waits, and the events that come meanwhile go in it together.
        for event in ["two", "three", "four"] { writer.enqueue(EncodedEvent(ByteBuffer(string: event)), to: both) }
        loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(plain) == ["one", "two", "three", "four"], "each event's own buffer")
        #expect(recorder.bodies.withLockedValue { $0 } == ["one", "twothreefour"], "a record for the run")
        plainSink.stop()
        tlsSink.stop()
        loop.run()
    }
}

/// Takes the response parts written to its channel, and records the bodies.
private final class BodyRecorder: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = HTTPResponsePart
    let bodies = NIOLockedValueBox<[String]>([])

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .body(let bytes) = Self.unwrapOutboundIn(data) {
            self.bodies.withLockedValue { $0.append(String(buffer: bytes)) }
        }
        promise?.succeed()
    }
}
