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

    @Test func aDrainWaitsAsLongAsTheLastTookAndASinkStopsOnlyAfterWhatWasHandedOver() throws {
        let (channel, other) = self.twoChannels()
        let loop = channel.embeddedEventLoop
        let (queue, sink) = self.subscriber(on: channel)
        let (otherQueue, otherSink) = self.subscriber(on: other)
        let both = [(queue, sink), (otherQueue, otherSink)]
        let writer = LoopWriter.forLoop(loop)
        let stopped = NIOLockedValueBox(false)
        sink.done.futureResult.whenSuccess { stopped.withLockedValue { $0 = true } }

        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: both)
        loop.run()
        #expect(try self.written(channel) == ["one"], "the first drain runs at once")
        #expect(try self.written(other) == ["one"])

        // The next waits for more events to share its writes, as long as the last drain took.
        writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: both)
        sink.stop()
        loop.run()
        #expect(try self.written(channel).isEmpty)
        #expect(!stopped.withLockedValue { $0 })

        loop.advanceTime(by: LoopWriter.maximumDelay)
        #expect(try self.written(channel) == ["two"], "written before the sink stops")
        #expect(try self.written(other) == ["two"])
        #expect(stopped.withLockedValue { $0 })

        writer.enqueue(EncodedEvent(ByteBuffer(string: "three")), to: both)
        loop.advanceTime(by: LoopWriter.maximumDelay)
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
        let writer = LoopWriter.forLoop(loop)  // the sinks'
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
        let writer = LoopWriter.forLoop(loop)

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
        #expect(try self.written(other) == ["one"], "waits as long as the last drain took")
        loop.advanceTime(by: LoopWriter.maximumDelay)
        #expect(try self.written(channel) == ["three"])
        #expect(try self.written(other) == ["three", "four"])
        sink.stop()
        otherSink.stop()
        loop.run()
    }

    @Test func aWriterIsBehindWhileTheMaximumBacklogOfWritesWaitsForTheLoop() throws {
        let loop = EmbeddedEventLoop()
        let channels = (0..<LoopWriter.maximumBacklog).map { _ in EmbeddedChannel(loop: loop) }
        let targets = channels.map(self.subscriber(on:))
        let writer = LoopWriter.forLoop(loop)

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
        loop.advanceTime(by: LoopWriter.maximumDelay)
        #expect(try self.written(channels[0]) == ["four"])
        for (_, sink) in targets { sink.stop() }
        loop.run()
    }

    @Test func aWriterIsBehindWhileTheMaximumOfEventsWaitsForTheLoopHoweverFewTheirWrites() throws {
        let channel = EmbeddedChannel()
        let loop = channel.embeddedEventLoop
        let (queue, sink) = self.subscriber(on: channel)
        let writer = LoopWriter.forLoop(loop)
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
        let writer = LoopWriter.forLoop(loop)

        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: both)
        loop.run()
        // The next drain waits (as long as the last took), and the events that come meanwhile go
        // in it together.
        for event in ["two", "three", "four"] { writer.enqueue(EncodedEvent(ByteBuffer(string: event)), to: both) }
        loop.advanceTime(by: LoopWriter.maximumDelay)
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
