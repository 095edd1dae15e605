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

    @Test func aDrainWaitsAsLongAsTheLastTookAndASinkStopsOnlyAfterWhatWasHandedOver() throws {
        let channel = EmbeddedChannel()
        let loop = channel.embeddedEventLoop
        let sink = ChannelSink(channel: channel)
        let queue = SubscriberQueue(limits: .init(events: 10, bytes: 1 << 20))
        let writer = LoopWriter.forLoop(loop)
        let stopped = NIOLockedValueBox(false)
        sink.done.futureResult.whenSuccess { stopped.withLockedValue { $0 = true } }

        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: [(queue, sink)])
        loop.run()
        #expect(try self.written(channel) == ["one"], "the first drain runs at once")

        // The next waits for more events to share its writes, as long as the last drain took.
        writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: [(queue, sink)])
        sink.stop()
        loop.run()
        #expect(try self.written(channel).isEmpty)
        #expect(!stopped.withLockedValue { $0 })

        loop.advanceTime(by: LoopWriter.maximumDelay)
        #expect(try self.written(channel) == ["two"], "written before the sink stops")
        #expect(stopped.withLockedValue { $0 })

        writer.enqueue(EncodedEvent(ByteBuffer(string: "three")), to: [(queue, sink)])
        loop.advanceTime(by: LoopWriter.maximumDelay)
        #expect(try self.written(channel).isEmpty, "nothing after the sink stopped")
    }
}
