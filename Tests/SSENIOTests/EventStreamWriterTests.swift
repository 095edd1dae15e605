//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import HeraldTestSupport
import NIOConcurrencyHelpers
import NIOCore
import SSECore
import SSENIO
import Testing

struct Failure: Error, Equatable {}

/// What a writer sent, as text, shared with the test.
final class Written: Sendable {
    private let box = NIOLockedValueBox<[String]>([])
    var pieces: [String] { self.box.withLockedValue { $0 } }

    func append(_ buffer: ByteBuffer) {
        self.box.withLockedValue { $0.append(String(buffer: buffer)) }
    }

    /// Waits (at most 10 s) until `count` pieces have been written.
    func wait(for count: Int) async throws {
        for _ in 0..<2000 where self.pieces.count < count {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(self.pieces.count >= count, "timed out waiting for \(count) writes: \(self.pieces)")
    }
}

@Suite("EventStreamWriter")
struct EventStreamWriterTests {
    @Test func writeServerSentEventWritesTheEncoding() throws {
        let event = try ServerSentEvent(type: "t", data: "a\nb", id: "1", retry: .seconds(1))
        var buffer = ByteBuffer(string: "x")
        let written = buffer.writeServerSentEvent(event)
        var expected: [UInt8] = Array("x".utf8)
        event.encode(into: &expected)
        #expect(written == expected.count - 1)
        #expect(Array(buffer.readableBytesView) == expected)
        let exact = ByteBufferAllocator().buffer(encoding: event)
        #expect(Array(exact.readableBytesView) == Array(expected.dropFirst()))
        #expect(exact.readableBytes == event.encodedByteCount)
    }

    @Test func opensWithACommentThenSendsEachEventThenEnds() async throws {
        let written = Written()
        let events = [ServerSentEvent(data: "one"), try ServerSentEvent(type: "x", data: "two", id: "2")]
        try await EventStreamWriter.write(events.async, keepAlive: KeepAlive()) { written.append($0) }
        #expect(written.pieces == [":\n", "data: one\n\n", "id: 2\nevent: x\ndata: two\n\n"])
    }

    @Test func keepAliveCommentsGoOutWhenIdleAndEventsPostponeThem() async throws {
        let clock = ManualClock()
        let written = Written()
        let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
        let writer = Task {
            try await EventStreamWriter.write(events, keepAlive: KeepAlive(interval: .seconds(15), comment: "ping"), clock: clock) {
                written.append($0)
            }
        }
        try await written.wait(for: 1)
        while clock.sleepingUntil.isEmpty { try await Task.sleep(for: .milliseconds(2)) }
        clock.advance(by: .seconds(15))
        try await written.wait(for: 2)
        #expect(written.pieces.last == ": ping\n")

        // An event at 10 s into the next interval postpones the keep-alive to 15 s after it.
        clock.advance(by: .seconds(10))
        continuation.yield(ServerSentEvent(data: "news"))
        try await written.wait(for: 3)
        // The keep-alive task wakes at the old deadline, finds the stream busy and sleeps again.
        while clock.sleepingUntil.first != clock.now.advanced(by: .seconds(5)) { try await Task.sleep(for: .milliseconds(2)) }
        clock.advance(by: .seconds(5))
        while clock.sleepingUntil.first != clock.now.advanced(by: .seconds(10)) { try await Task.sleep(for: .milliseconds(2)) }
        #expect(written.pieces.count == 3, "no keep-alive only 5 s after an event")
        clock.advance(by: .seconds(10))
        try await written.wait(for: 4)
        #expect(written.pieces == [":\n", ": ping\n", "data: news\n\n", ": ping\n"])
        continuation.finish()
        try await writer.value
    }

    /// No keep-alive, or one whose interval is not positive (which would otherwise send comments
    /// as fast as they are taken): only the events go out.
    @Test(arguments: [nil, KeepAlive(interval: .zero), KeepAlive(interval: .seconds(-1))])
    func withoutKeepAliveNothingButEvents(_ keepAlive: KeepAlive?) async throws {
        let clock = ManualClock()
        let written = Written()
        let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
        let writer = Task {
            try await EventStreamWriter.write(events, keepAlive: keepAlive, clock: clock) { written.append($0) }
        }
        try await written.wait(for: 1)
        try await Task.sleep(for: .milliseconds(20))  // time enough for comments that should not go out
        clock.advance(by: .seconds(3600))
        continuation.yield(ServerSentEvent(data: "late"))
        continuation.finish()
        try await writer.value
        #expect(written.pieces == [":\n", "data: late\n\n"])
        #expect(clock.sleepingUntil.isEmpty)
    }

    /// An interval longer than a clock counts (some 292 years) waits "for ever", on the real clock.
    @Test func aKeepAliveOfCenturiesSendsNone() async throws {
        let written = Written()
        let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
        let writer = Task {
            try await EventStreamWriter.write(events, keepAlive: KeepAlive(interval: .seconds(Int64.max))) { written.append($0) }
        }
        try await written.wait(for: 1)
        try await Task.sleep(for: .milliseconds(20))
        continuation.yield(ServerSentEvent(data: "news"))
        continuation.finish()
        try await writer.value
        #expect(written.pieces == [":\n", "data: news\n\n"])
    }

    @Test func anErrorOfTheEventsEndsTheStreamAfterTheEventsBeforeIt() async throws {
        let written = Written()
        let events = AsyncThrowingStream<ServerSentEvent, any Error> { continuation in
            continuation.yield(ServerSentEvent(data: "before"))
            continuation.finish(throwing: Failure())
        }
        await #expect(throws: Failure.self) {
            try await EventStreamWriter.write(events, keepAlive: KeepAlive()) { written.append($0) }
        }
        #expect(written.pieces == [":\n", "data: before\n\n"])
    }

    @Test func cancellingTheWriterCancelsTheEvents() async throws {
        let terminated = NIOLockedValueBox(false)
        let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
        continuation.onTermination = { _ in terminated.withLockedValue { $0 = true } }
        let written = Written()
        let writer = Task {
            try await EventStreamWriter.write(events, keepAlive: KeepAlive()) { written.append($0) }
        }
        continuation.yield(ServerSentEvent(data: "x"))
        try await written.wait(for: 2)
        writer.cancel()
        await #expect(throws: CancellationError.self) { try await writer.value }
        #expect(terminated.withLockedValue { $0 }, "the producing sequence saw the cancellation")
    }
}
