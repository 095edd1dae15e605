//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import AsyncHTTPClient
public import Logging
public import NIOHTTP1
public import NIOSSL
public import SSECore
import AsyncAlgorithms
import NIOConcurrencyHelpers
import NIOCore

/// A client for a server-sent event stream that behaves like a browser's `EventSource`, and
/// goes further where server-to-server users need it. Works on Linux and Apple platforms.
///
/// Iterate it to connect; the loop ends when the server answers 204, when you call
/// ``close()``, or when the task is cancelled, and throws an ``EventSourceError`` when the
/// source fails for good:
///
/// ```swift
/// let source = EventSource(url: "https://example.com/events")
/// for try await event in source {
///     print(event.type, event.data, event.id ?? "")
/// }
/// ```
///
/// Like a browser's, it sends `Accept: text/event-stream`, `Cache-Control: no-cache` and, when it
/// has one, `Last-Event-ID`; it opens only on a 200 with `Content-Type: text/event-stream`, fails
/// without reconnecting on any other answer, follows redirects, and reconnects after the
/// reconnection time (which a `retry` field sets) when the stream ends or the network fails.
/// Beyond a browser: exponential back-off with jitter, a read timeout that catches a stalled
/// stream, headers recomputed on every connection, a method and a body, a limit on attempts, and
/// gzip. See ``Configuration``.
///
/// One connection at a time, and one consumer: iterate the source (or its ``outputs``) once.
public final class EventSource: AsyncSequence, Sendable {
    public typealias Element = ServerSentEvent

    /// How an ``EventSource`` connects and reconnects. The defaults are safe for a naive user.
    public struct Configuration: Sendable {
        /// The request method. `GET`, as a browser; `POST` for APIs that stream their answer.
        public var method: HTTPMethod = .GET
        /// The request body, sent on every connection.
        public var body: [UInt8]?
        /// Headers sent on every connection.
        public var headers: HTTPHeaders = [:]
        /// Called before every connection; the headers it returns replace those of the same name
        /// in ``headers``. For tokens that expire. If it throws, the attempt counts as failed.
        public var headerProvider: (@Sendable () async throws -> HTTPHeaders)?
        /// The last event ID to start from, sent as `Last-Event-ID` on the first connection.
        public var lastEventID: String = ""
        /// The reconnection time until a `retry` field sets another. Browsers use 3 s.
        public var reconnectionTime: Duration = .seconds(3)
        /// The longest wait between attempts that back-off can reach. Back-off starts from the
        /// reconnection time, or from 100 ms when that is shorter (`retry: 0`, say), so that failures
        /// in a row never make a busy loop.
        public var maximumReconnectionDelay: Duration = .seconds(30)
        /// A connection that stays open this long resets the back-off.
        public var backoffResetInterval: Duration = .seconds(60)
        /// How many reconnections in a row may fail to open a stream before the source gives up
        /// with ``EventSourceError/Code/attemptsExhausted``. `nil` (the default) tries forever, as
        /// a browser; `0` never reconnects: the source finishes when the stream ends. A stream
        /// that opens starts the count again.
        public var maximumAttempts: Int?
        /// How long to wait for the response head on each attempt; and then, when the server
        /// refuses, for the start of the body that says why (``EventSourceError/reason``).
        public var connectTimeout: Duration = .seconds(30)
        /// How long the stream may stay silent (no byte, not even a keep-alive comment) before
        /// the source drops the connection and reconnects. `nil` waits forever.
        public var readTimeout: Duration? = .seconds(300)
        /// The parser's limits.
        public var parser: ServerSentEventParser.Configuration = .init()
        /// The TLS configuration of `https` connections, for example with a certificate to trust
        /// besides the system's (`additionalTrustRoots`) or a client certificate. `nil` (the
        /// default) trusts the system's certificates. Not used with a client you pass to the
        /// source, which has its own.
        public var tlsConfiguration: TLSConfiguration?

        /// Creates a configuration with the defaults.
        public init() {}
    }

    /// Where the source is, as a browser's `readyState`.
    public enum State: Sendable, Hashable {
        /// Connecting, or waiting to reconnect.
        case connecting
        /// A stream is open.
        case open
        /// Closed for good.
        case closed
    }

    /// The URL of the stream.
    public let url: String
    /// The configuration.
    public let configuration: Configuration

    let httpClient: HTTPClient?
    let logger: Logger
    private let clock: any Clock<Duration>
    private let channel = AsyncThrowingChannel<ServerSentEventParser.Output, any Error>()
    private let shared: NIOLockedValueBox<Shared>

    private struct Shared {
        var state: State = .connecting
        var lastEventID: String
        var reconnectionTime: Duration
        var task: Task<Void, Never>?
        var started = false
    }

    /// Creates a source; nothing connects until you iterate it.
    ///
    /// - Parameters:
    ///   - url: An `http` or `https` URL.
    ///   - configuration: How to connect and reconnect.
    ///   - httpClient: The client to use. By default the source makes one of its own that follows
    ///     redirects, decompresses gzip and does not retry a connection that cannot be made (the
    ///     source backs off and reconnects itself), and shuts it down when it closes. A client you
    ///     pass is used as configured (decompression needs `decompression: .enabled`; by default
    ///     AsyncHTTPClient retries such a connection until the connect timeout) and not shut down.
    ///   - logger: Where reconnections are logged (at `info`), and the rest at `debug`; a failure
    ///     that ends the source is thrown to its reader.
    public convenience init(
        url: String,
        configuration: Configuration = .init(),
        httpClient: HTTPClient? = nil,
        logger: Logger = Logger(label: "herald.event-source")
    ) {
        self.init(url: url, configuration: configuration, httpClient: httpClient, logger: logger, clock: ContinuousClock())
    }

    /// Creates a source that waits on `clock`: tests pass a manual clock.
    init(
        url: String,
        configuration: Configuration,
        httpClient: HTTPClient?,
        logger: Logger,
        clock: some Clock<Duration>
    ) {
        self.url = url
        self.configuration = configuration
        self.httpClient = httpClient
        self.logger = logger
        self.clock = clock
        self.shared = NIOLockedValueBox(
            Shared(lastEventID: configuration.lastEventID, reconnectionTime: configuration.reconnectionTime)
        )
    }

    /// Where the source is now.
    public var state: State {
        self.shared.withLockedValue { $0.state }
    }

    /// The last event ID, sent as `Last-Event-ID` on the next connection.
    public var lastEventID: String {
        self.shared.withLockedValue { $0.lastEventID }
    }

    /// The reconnection time, as the last `retry` field set it.
    public var reconnectionTime: Duration {
        self.shared.withLockedValue { $0.reconnectionTime }
    }

    /// Closes the source: the connection is dropped, no reconnection follows, and the iteration
    /// ends without an error. Safe to call from any task, any number of times.
    public func close() {
        let task = self.shared.withLockedValue { shared in
            shared.state = .closed
            shared.started = true
            return shared.task
        }
        task?.cancel()
        self.channel.finish()
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(outputs: self.outputs.makeAsyncIterator())
    }

    /// Everything the stream carries in order, `retry` fields included: for when you need to
    /// see a `retry` that no event follows. Iterate either this or the source itself, not both.
    public var outputs: Outputs {
        self.start()
        return Outputs(source: self)
    }

    /// The iterator of an ``EventSource``: the events of ``outputs``.
    public struct AsyncIterator: AsyncIteratorProtocol {
        private var outputs: Outputs.AsyncIterator

        init(outputs: Outputs.AsyncIterator) {
            self.outputs = outputs
        }

        public mutating func next() async throws -> ServerSentEvent? {
            while let output = try await self.outputs.next() {
                if case .event(let event) = output { return event }
            }
            return nil
        }
    }

    /// The outputs of an ``EventSource``: events and `retry` fields, in stream order.
    public struct Outputs: AsyncSequence, Sendable {
        public typealias Element = ServerSentEventParser.Output
        let source: EventSource

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(lifetime: Lifetime(source: self.source), base: self.source.channel.makeAsyncIterator())
        }

        /// The iterator of ``Outputs``. Dropping it closes the source; so does cancelling the
        /// task that waits in ``next()``.
        public struct AsyncIterator: AsyncIteratorProtocol {
            private let lifetime: Lifetime
            private var base: AsyncThrowingChannel<ServerSentEventParser.Output, any Error>.Iterator

            init(lifetime: Lifetime, base: AsyncThrowingChannel<ServerSentEventParser.Output, any Error>.Iterator) {
                self.lifetime = lifetime
                self.base = base
            }

            public mutating func next() async throws -> ServerSentEventParser.Output? {
                let source = self.lifetime.source
                var base = self.base
                defer { self.base = base }
                return try await withTaskCancellationHandler {
                    try await base.next()
                } onCancel: {
                    source.close()
                }
            }
        }
    }

    /// Closes the source when the last iterator goes away, so a dropped loop leaks no connection.
    final class Lifetime: Sendable {
        let source: EventSource

        init(source: EventSource) {
            self.source = source
        }

        deinit {
            self.source.close()
        }
    }

    private func start() {
        let start = self.shared.withLockedValue { shared in
            defer { shared.started = true }
            return !shared.started
        }
        guard start else { return }
        let task = Task { await self.run(clock: self.clock) }
        self.shared.withLockedValue { shared in
            shared.task = task
            if shared.state == .closed { task.cancel() }
        }
    }

    func setState(_ state: State) {
        self.shared.withLockedValue { shared in
            if shared.state != .closed { shared.state = state }
        }
    }

    func update(lastEventID: String, reconnectionTime: Duration) {
        self.shared.withLockedValue { shared in
            shared.lastEventID = lastEventID
            shared.reconnectionTime = reconnectionTime
        }
    }

    func send(_ output: ServerSentEventParser.Output) async {
        await self.channel.send(output)
    }

    func finish(throwing error: (any Error)?) {
        if let error { self.channel.fail(error) } else { self.channel.finish() }
    }

    var isClosed: Bool {
        self.shared.withLockedValue { $0.state == .closed }
    }
}
