//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import SSECore

struct ChunkFailure: Error, Equatable {}

@Suite("AsyncSequence adapter")
struct SequenceTests {
    func chunks(_ chunks: [[UInt8]], thenThrow: Bool = false) -> AsyncThrowingStream<[UInt8], any Error> {
        AsyncThrowingStream { continuation in
            for chunk in chunks { continuation.yield(chunk) }
            continuation.finish(throwing: thenThrow ? ChunkFailure() : nil)
        }
    }

    @Test func eventsFromChunksInAnySize() async throws {
        let stream = Array("retry: 10\nid: 1\ndata: a\n\ndata: b\r\n\r\ndata: unfinished".utf8)
        for size in [1, 2, 5, stream.count] {
            let pieces = stride(from: 0, to: stream.count, by: size).map { Array(stream[$0..<min($0 + size, stream.count)]) }
            var received: [ServerSentEvent] = []
            for try await event in self.chunks(pieces).serverSentEvents() {
                received.append(event)
            }
            #expect(
                received == [
                    ServerSentEvent(validatedType: "message", data: "a", id: "1", retry: .milliseconds(10)),
                    ServerSentEvent(validatedType: "message", data: "b", id: "1", retry: nil),
                ],
                "chunks of \(size)"
            )
        }
    }

    @Test func anErrorOfTheSourceComesAfterTheEventsBeforeIt() async throws {
        var iterator = self.chunks([Array("data: a\n\n".utf8)], thenThrow: true).serverSentEvents().makeAsyncIterator()
        #expect(try await iterator.next()?.data == "a")
        await #expect(throws: ChunkFailure.self) { try await iterator.next() }
        #expect(try await iterator.next() == nil, "finished after an error")
    }

    @Test func aLimitErrorComesAfterTheEventsOfTheSameChunk() async throws {
        let chunk = Array("data: a\n\ndata: b\n\ndata: 0123456789abcdef\n\n".utf8)
        let events = self.chunks([chunk, Array("data: c\n\n".utf8)])
            .serverSentEvents(configuration: .init(maximumEventSize: 8))
        var iterator = events.makeAsyncIterator()
        #expect(try await iterator.next()?.data == "a")
        #expect(try await iterator.next()?.data == "b")
        await #expect(throws: ServerSentEventError.eventTooLarge) { try await iterator.next() }
        #expect(try await iterator.next() == nil)
    }

    @Test func worksWithAnyChunkType() async throws {
        let slices = AsyncStream<ArraySlice<UInt8>> { continuation in
            continuation.yield(Array("data: x\n\n".utf8)[...])
            continuation.finish()
        }
        var received: [String] = []
        for try await event in slices.serverSentEvents() { received.append(event.data) }
        #expect(received == ["x"])
    }
}
