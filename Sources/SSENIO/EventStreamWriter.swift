//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import NIOCore
public import SSECore
import AsyncAlgorithms
import NIOConcurrencyHelpers

/// Comment lines sent on an idle event stream, so that proxies and load balancers (nginx and most
/// cloud ones cut idle connections after 60 s) keep it open and clients see it alive.
public struct KeepAlive: Sendable, Hashable {
    /// How long the stream may stay idle before a comment goes out. Every event postpones it.
    /// An interval that is not positive sends no comment, as no keep-alive does (rather than
    /// comments as fast as the client takes them).
    public var interval: Duration
    /// The comment's text; empty sends a bare `:` line.
    public var comment: String

    /// A keep-alive comment after `interval` of silence (15 s by default).
    public init(interval: Duration = .seconds(15), comment: String = "") {
        self.interval = interval
        self.comment = comment
    }
}

/// Writes an event stream: what the Hummingbird and Vapor helpers share.
///
/// The stream opens with a `:` comment line at once, so that clients and proxies see it open
/// before the first event. Each event is encoded once, straight into the buffer handed to
/// `write`. When no event has gone out for the keep-alive interval, a keep-alive comment does.
///
/// Cancelling the calling task (as the helpers do when the client goes away) cancels the
/// iteration of `events` promptly; an error thrown by `events` or by `write` ends the stream and
/// is rethrown.
public enum EventStreamWriter {
    /// Writes `events` through `write` until they end, each encoded once into its own buffer.
    ///
    /// - Parameters:
    ///   - events: The events to send.
    ///   - keepAlive: The keep-alive comments, or `nil` for none.
    ///   - allocator: Allocates the buffers handed to `write`.
    ///   - clock: Times the keep-alive; tests pass a manual clock.
    ///   - write: Sends one buffer to the client.
    public static func write<Events: AsyncSequence & Sendable, C: Clock<Duration>>(
        _ events: Events,
        keepAlive: KeepAlive?,
        allocator: ByteBufferAllocator = ByteBufferAllocator(),
        clock: C = ContinuousClock(),
        to write: (ByteBuffer) async throws -> Void
    ) async throws where Events.Element == ServerSentEvent {
        let encoded = events.map { allocator.buffer(encoding: $0) }
        try await Self.write(encoded: encoded, keepAlive: keepAlive, allocator: allocator, clock: clock, to: write)
    }

    /// Writes already encoded events (for example bytes encoded once and shared by many
    /// subscribers) through `write` until they end, with the opening comment and keep-alive.
    public static func write<Encoded: AsyncSequence & Sendable, C: Clock<Duration>>(
        encoded events: Encoded,
        keepAlive: KeepAlive?,
        allocator: ByteBufferAllocator = ByteBufferAllocator(),
        clock: C = ContinuousClock(),
        to write: (ByteBuffer) async throws -> Void
    ) async throws where Encoded.Element == ByteBuffer {
        let openingComment = ServerSentEvent.encodedComment()
        var opening = allocator.buffer(capacity: openingComment.count)
        opening.writeBytes(openingComment)
        try await write(opening)

        let keepAliveBuffer = keepAlive.map { keepAlive in
            let bytes = ServerSentEvent.encodedComment(keepAlive.comment)
            var buffer = allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            return buffer
        }
        let channel = AsyncThrowingChannel<ByteBuffer?, any Error>()  // nil: a keep-alive
        let lastWrite = NIOLockedValueBox(clock.now)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await buffer in events {
                        await channel.send(buffer)
                    }
                    channel.finish()
                } catch {
                    channel.fail(error)
                }
            }
            if let keepAlive, keepAlive.interval > .zero {
                group.addTask {
                    while true {
                        let interval = keepAlive.interval.cappedAtACentury
                        let deadline = lastWrite.withLockedValue { $0 }.advanced(by: interval)
                        try await clock.sleep(until: deadline, tolerance: nil)
                        let idle = lastWrite.withLockedValue { last -> Bool in
                            guard last.advanced(by: interval) <= clock.now else { return false }
                            last = clock.now
                            return true
                        }
                        if idle { await channel.send(nil) }
                    }
                }
            }
            defer { group.cancelAll() }
            for try await item in channel {
                if let buffer = item ?? keepAliveBuffer {
                    try await write(buffer)
                }
                lastWrite.withLockedValue { $0 = clock.now }
            }
            try Task.checkCancellation()
        }
    }
}
