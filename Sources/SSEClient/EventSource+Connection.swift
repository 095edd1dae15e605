//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPCompression
import SSECore

extension EventSource {
    /// How one connection attempt ended.
    enum Attempt {
        /// 204: stop for good, without an error.
        case finished
        /// A failure that ends the source: a bad status or content type, an invalid URL.
        case failed(any Error)
        /// The stream ended (`nil`) or the network failed: reconnect, if the policy allows.
        case lost((any Error)?)
    }

    /// The connection loop, run by one task per source until it closes.
    func run<C: Clock<Duration>>(clock: C) async {
        let ownsClient = self.httpClient == nil
        let client = self.httpClient ?? HTTPClient(
            eventLoopGroup: HTTPClient.defaultEventLoopGroup,
            configuration: {
                var configuration = HTTPClient.Configuration(
                    redirectConfiguration: .follow(max: 10, allowCycles: false),
                    timeout: .init(connect: .init(self.configuration.connectTimeout)),
                    decompression: .enabled(limit: .none)
                )
                configuration.tlsConfiguration = self.configuration.tlsConfiguration
                // The source backs off and reconnects itself: a connection that cannot be made
                // fails the attempt at once (which the source reports), rather than being tried
                // again in silence until the connect timeout.
                configuration.connectionPool.retryConnectionEstablishment = false
                return configuration
            }()
        )
        var machine = ReconnectionStateMachine<C.Instant>(
            policy: .init(
                reconnectionTime: self.configuration.reconnectionTime,
                maximumDelay: self.configuration.maximumReconnectionDelay,
                resetInterval: self.configuration.backoffResetInterval,
                maximumAttempts: self.configuration.maximumAttempts
            )
        )
        var parser = ServerSentEventParser(
            configuration: self.configuration.parser,
            lastEventID: self.configuration.lastEventID
        )
        var generator = SystemRandomNumberGenerator()
        var failure: (any Error)?

        attempts: while !Task.isCancelled, !self.isClosed {
            self.setState(.connecting)
            let attempt = await self.connect(client: client, ownsClient: ownsClient, parser: &parser, machine: &machine, clock: clock)
            parser.finish()
            self.update(lastEventID: parser.lastEventID, reconnectionTime: machine.reconnectionTime)
            switch attempt {
            case .finished:
                self.logger.debug("server answered 204: closing", metadata: ["url": "\(self.url)"])
                break attempts
            case .failed(let error):
                self.logger.debug("failed: closing", metadata: ["url": "\(self.url)", "error": "\(error)"])  // (thrown to the reader)
                failure = error
                break attempts
            case .lost(let error):
                if Task.isCancelled || self.isClosed { break attempts }
                switch machine.connectionLost(at: clock.now, using: &generator) {
                case .giveUp:
                    if error == nil, self.configuration.maximumAttempts == 0 {
                        break attempts  // not reconnecting was asked for: the stream just ended
                    }
                    let attempts = machine.attemptsSinceOpen
                    failure = EventSourceError(
                        .attemptsExhausted,
                        underlying: error,
                        detail: attempts == 0
                            ? "one connection to \(self.url), with reconnection off"
                            : "\(attempts) reconnection attempt\(attempts == 1 ? "" : "s") to \(self.url)"
                    )
                    break attempts
                case .reconnect(after: let delay):
                    self.setState(.connecting)  // while it waits too, as a browser's readyState
                    self.logger.info(
                        "reconnecting",
                        metadata: [
                            "url": "\(self.url)", "delay": "\(delay)", "error": "\(error.map { describe(networkError: $0) } ?? "stream ended")",
                            "last-event-id": "\(parser.lastEventID)",
                        ]
                    )
                    do {
                        try await clock.sleep(for: delay.cappedAtACentury)
                    } catch {
                        break attempts  // cancelled: closing
                    }
                }
            }
        }
        self.setState(.closed)
        if ownsClient {
            try? await client.shutdown()
        }
        self.finish(throwing: failure)
    }

    /// One attempt: connect, check the response, and read the stream until it ends.
    private func connect<C: Clock<Duration>>(
        client: HTTPClient,
        ownsClient: Bool,
        parser: inout ServerSentEventParser,
        machine: inout ReconnectionStateMachine<C.Instant>,
        clock: C
    ) async -> Attempt {
        guard Self.isHTTPURL(self.url) else {
            return .failed(EventSourceError(.invalidURL, detail: "\(self.url): only http and https URLs can be streamed"))
        }
        var request = HTTPClientRequest(url: self.url)
        request.method = self.configuration.method
        request.headers = self.configuration.headers
        if let provider = self.configuration.headerProvider {
            do {
                for (name, value) in try await provider() {
                    request.headers.replaceOrAdd(name: name, value: value)
                }
            } catch {
                return .lost(error)
            }
        }
        request.headers.replaceOrAdd(name: "Accept", value: "text/event-stream")
        request.headers.replaceOrAdd(name: "Cache-Control", value: "no-cache")
        if parser.lastEventID.isEmpty {
            request.headers.remove(name: "Last-Event-ID")
        } else {
            request.headers.replaceOrAdd(name: "Last-Event-ID", value: parser.lastEventID)
        }
        if ownsClient, !request.headers.contains(name: "Accept-Encoding") {
            request.headers.add(name: "Accept-Encoding", value: "gzip, deflate")
        }
        if let body = self.configuration.body {
            request.body = .bytes(body)
        }

        let response: HTTPClientResponse
        do {
            response = try await client.execute(
                request,
                deadline: .now() + TimeAmount(self.configuration.connectTimeout.cappedAtACentury),
                logger: self.logger
            )
        } catch let error as HTTPClientError where [.invalidURL, .emptyHost, .emptyScheme].contains(error) {
            return .failed(EventSourceError(.invalidURL, underlying: error, detail: self.url))
        } catch let error as HTTPClientError where Self.isInvalidHeader(error) {
            return .failed(EventSourceError(.invalidHeader, underlying: error, detail: self.url))
        } catch {
            return .lost(error)
        }

        guard response.status == .ok else {
            if response.status == .noContent { return .finished }
            let reason = await Self.reason(in: response, within: self.configuration.connectTimeout, clock: clock)
            return .failed(
                EventSourceError(.unexpectedStatus, status: Int(response.status.code), reason: reason, detail: self.url)
            )
        }
        let contentType = response.headers.first(name: "Content-Type")
        guard Self.isEventStream(contentType) else {
            return .failed(
                EventSourceError(.unexpectedContentType, status: 200, contentType: contentType, detail: self.url)
            )
        }

        machine.opened(at: clock.now)
        self.setState(.open)
        self.logger.debug("stream open", metadata: ["url": "\(self.url)"])
        let end = await self.read(response.body, parser: parser, clock: clock)
        parser = end.parser
        if let retry = end.retry { machine.retryReceived(retry) }
        if let error = end.error as? ServerSentEventError {
            return .failed(error)  // an event over the limit would come back on every reconnection
        }
        return .lost(end.error)
    }

    /// How reading a stream ended: the parser (with its last event ID), the last `retry`, and the
    /// error, if it did not end cleanly.
    struct StreamEnd: Sendable {
        var parser: ServerSentEventParser
        var retry: Duration?
        var error: (any Error)?
    }

    struct ReadTimeout: Error, CustomStringConvertible {
        let timeout: Duration
        var description: String { "no bytes for \(self.timeout): the stream stalled" }
    }

    /// Reads the body into the channel; a watchdog ends the read when the server stays silent
    /// for longer than the read timeout. Time spent waiting for a slow consumer does not count.
    private func read<C: Clock<Duration>>(
        _ body: HTTPClientResponse.Body,
        parser: ServerSentEventParser,
        clock: C
    ) async -> StreamEnd {
        // When the reader started waiting for bytes; `nil` while it hands events to the consumer.
        let waitingSince = NIOLockedValueBox<C.Instant?>(clock.now)
        let end = NIOLockedValueBox<StreamEnd?>(nil)
        // Each child tells whether the watchdog fired; the reader's result comes back in `end`. Not
        // as the payload of an enum of both children's results: built for release with Swift
        // 6.3.1, that gave a garbage error to `connect` now and then when `close()` ended both at
        // once, and `herald listen --timeout` crashed in 37 of 60 runs on a loaded machine.
        let stalled = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                let result = await self.readEvents(body, parser: parser, waitingSince: waitingSince, clock: clock)
                end.withLockedValue { $0 = result }
                return false
            }
            if let timeout = self.configuration.readTimeout {
                group.addTask { await Self.watch(waitingSince, timeout: timeout, clock: clock) }
            }
            var stalled = false
            while let fired = await group.next() {
                stalled = stalled || fired
                group.cancelAll()
            }
            return stalled
        }
        var result = end.withLockedValue { $0 }!
        if stalled, let timeout = self.configuration.readTimeout {
            result.error = ReadTimeout(timeout: timeout)
        }
        return result
    }

    private func readEvents<C: Clock<Duration>>(
        _ body: HTTPClientResponse.Body,
        parser: ServerSentEventParser,
        waitingSince: NIOLockedValueBox<C.Instant?>,
        clock: C
    ) async -> StreamEnd {
        var end = StreamEnd(parser: parser)
        var outputs: [ServerSentEventParser.Output] = []
        do {
            for try await chunk in body {
                waitingSince.withLockedValue { $0 = nil }
                try end.parser.parse(chunk.readableBytesView) { output in
                    if case .retry(let retry) = output { end.retry = retry }
                    outputs.append(output)
                }
                self.update(lastEventID: end.parser.lastEventID, reconnectionTime: end.retry ?? self.reconnectionTime)
                for output in outputs {
                    await self.send(output)
                }
                outputs.removeAll(keepingCapacity: true)
                try Task.checkCancellation()
                waitingSince.withLockedValue { $0 = clock.now }
            }
        } catch {
            end.error = error
        }
        return end
    }

    /// Waits until the reader has waited for bytes for `timeout`: returns `true` then, `false`
    /// if cancelled first.
    private static func watch<C: Clock<Duration>>(
        _ waitingSince: NIOLockedValueBox<C.Instant?>,
        timeout: Duration,
        clock: C
    ) async -> Bool {
        while true {
            let deadline = (waitingSince.withLockedValue { $0 } ?? clock.now).advanced(by: timeout.cappedAtACentury)
            do {
                try await clock.sleep(until: deadline, tolerance: nil)
            } catch {
                return false
            }
            if let since = waitingSince.withLockedValue({ $0 }), since.duration(to: clock.now) >= timeout {
                return true
            }
        }
    }

    /// The start of a refusal's body as its reason (see ``EventSourceError/reason(fromBody:contentType:)``),
    /// read for at most `timeout`, so that a server which never ends its body cannot hold the source.
    static func reason<C: Clock<Duration>>(
        in response: HTTPClientResponse,
        within timeout: Duration,
        clock: C
    ) async -> String? {
        let contentType = response.headers.first(name: "Content-Type")
        guard EventSourceError.isText(contentType) else { return nil }
        // Filled by the reader as it goes, so that a timeout keeps what came before it.
        let received = NIOLockedValueBox<[UInt8]>([])
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await chunk in response.body {
                        let full = received.withLockedValue { bytes in
                            bytes += chunk.readableBytesView.prefix(EventSourceError.reasonLimit - bytes.count)
                            return bytes.count == EventSourceError.reasonLimit
                        }
                        if full { break }
                    }
                } catch {
                    // The connection failed or the time ran out: keep what came.
                }
            }
            group.addTask { try? await clock.sleep(for: timeout.cappedAtACentury) }
            await group.next()
            group.cancelAll()
        }
        return EventSourceError.reason(fromBody: received.withLockedValue { $0 }, contentType: contentType)
    }

    /// Whether a `Content-Type` is `text/event-stream`, parameters (such as `charset`) allowed.
    static func isEventStream(_ contentType: String?) -> Bool {
        contentType.map(mediaType(of:)) == "text/event-stream"
    }

    /// Whether AsyncHTTPClient refused to send the request for one of its headers (its error's
    /// short description is stable, and carries none of the headers).
    static func isInvalidHeader(_ error: HTTPClientError) -> Bool {
        error.shortDescription == "Invalid header field names" || error.shortDescription == "Invalid header field values"
    }

    static func isHTTPURL(_ url: String) -> Bool {
        let lowered = url.lowercased()
        return lowered.hasPrefix("http://") || lowered.hasPrefix("https://")
    }
}

/// The media type of a `Content-Type` value, in lower case: `text/plain` for
/// `Text/Plain; charset=utf-8`.
func mediaType(of contentType: String) -> String {
    var type = contentType.prefix { $0 != ";" }
    while let first = type.first, first == " " || first == "\t" { type.removeFirst() }
    while let last = type.last, last == " " || last == "\t" { type.removeLast() }
    return type.lowercased()
}
