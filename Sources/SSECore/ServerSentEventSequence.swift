//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

extension AsyncSequence where Element: Sequence<UInt8> {
    /// The server-sent events in this sequence of byte chunks, parsed by a ``ServerSentEventParser``.
    ///
    /// Works with any source of chunks: `[UInt8]`, `ArraySlice<UInt8>`, `Data`, a NIO
    /// `ByteBuffer`'s `readableBytesView`. When the chunks end, the unfinished event is dropped.
    ///
    /// ```swift
    /// for try await event in response.body.map(\.readableBytesView).serverSentEvents() {
    ///     print(event.type, event.data)
    /// }
    /// ```
    ///
    /// A `retry` field reaches you as the ``ServerSentEvent/retry`` of the event in its block; use
    /// the parser directly to see `retry` fields in blocks without data.
    @inlinable
    public func serverSentEvents(
        configuration: ServerSentEventParser.Configuration = .init()
    ) -> ServerSentEventSequence<Self> {
        ServerSentEventSequence(base: self, configuration: configuration)
    }
}

/// An asynchronous sequence of the events in an asynchronous sequence of byte chunks.
///
/// Made by ``_Concurrency/AsyncSequence/serverSentEvents(configuration:)``. It throws what the
/// chunks throw and ``ServerSentEventError/eventTooLarge``.
public struct ServerSentEventSequence<Base: AsyncSequence>: AsyncSequence where Base.Element: Sequence<UInt8> {
    public typealias Element = ServerSentEvent

    @usableFromInline let base: Base
    @usableFromInline let configuration: ServerSentEventParser.Configuration

    @inlinable
    init(base: Base, configuration: ServerSentEventParser.Configuration) {
        self.base = base
        self.configuration = configuration
    }

    @inlinable
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: self.base.makeAsyncIterator(), parser: ServerSentEventParser(configuration: self.configuration))
    }

    /// The iterator of a ``ServerSentEventSequence``.
    public struct AsyncIterator: AsyncIteratorProtocol {
        // Inlinable, like the operators of swift-async-algorithms, so that it is specialised for
        // the caller's chunk type: this loop runs once per event.
        @usableFromInline var base: Base.AsyncIterator?
        @usableFromInline var parser: ServerSentEventParser
        @usableFromInline var ready: [ServerSentEvent] = []
        @usableFromInline var readyIndex = 0
        /// An error to throw once the events parsed before it have been returned.
        @usableFromInline var failure: (any Error)?

        @inlinable
        init(base: Base.AsyncIterator, parser: ServerSentEventParser) {
            self.base = base
            self.parser = parser
        }

        @inlinable
        public mutating func next() async throws -> ServerSentEvent? {
            while true {
                if self.readyIndex < self.ready.count {
                    defer { self.readyIndex += 1 }
                    return self.ready[self.readyIndex]
                }
                self.ready.removeAll(keepingCapacity: true)
                self.readyIndex = 0
                if let failure = self.failure {
                    self.failure = nil
                    throw failure
                }
                // The iterator stays finished (`base == nil`) if anything below throws.
                guard var base = self.base else { return nil }
                self.base = nil
                guard let chunk = try await base.next() else {
                    self.parser.finish()
                    return nil
                }
                var ready: [ServerSentEvent] = []
                swap(&ready, &self.ready)
                do {
                    try self.parser.parse(chunk) { output in
                        if case .event(let event) = output { ready.append(event) }
                    }
                    self.base = base
                } catch {
                    self.failure = error
                }
                swap(&ready, &self.ready)
            }
        }
    }
}

extension ServerSentEventSequence: Sendable where Base: Sendable {}
