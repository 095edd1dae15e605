//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import SSENIO

/// A streaming `text/event-stream` response: return it from a Hummingbird route.
///
/// ```swift
/// router.get("events") { request, _ in
///     EventStream(prices.map { try ServerSentEvent(type: "price", data: $0.json, id: $0.id) })
/// }
/// ```
///
/// It sets `Content-Type: text/event-stream`, `Cache-Control: no-cache, no-transform` and
/// `X-Accel-Buffering: no` (so that nginx does not buffer), sends no content length, opens the
/// stream with a comment at once, encodes each event once straight into the outgoing buffer, sends
/// keep-alive comments when idle, and cancels the iteration of `events` as soon as the client goes
/// away. Use ``Hummingbird/Request/lastEventID`` to resume where a reconnecting client left off.
public struct EventStream<Events: AsyncSequence & Sendable>: ResponseGenerator, Sendable
where Events.Element == ServerSentEvent {
    /// The events to send.
    public let events: Events
    /// The keep-alive comments, or `nil` for none.
    public let keepAlive: KeepAlive?
    private let clock: any Clock<Duration>

    /// A response that streams `events`, with a keep-alive comment after 15 s of silence unless
    /// told otherwise.
    public init(_ events: Events, keepAlive: KeepAlive? = KeepAlive()) {
        self.init(events, keepAlive: keepAlive, clock: ContinuousClock())
    }

    init(_ events: Events, keepAlive: KeepAlive?, clock: some Clock<Duration>) {
        self.events = events
        self.keepAlive = keepAlive
        self.clock = clock
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let events = self.events
        let keepAlive = self.keepAlive
        let clock = self.clock
        return Response(
            status: .ok,
            headers: [
                .contentType: "text/event-stream",
                .cacheControl: "no-cache, no-transform",
                .xAccelBuffering: "no",
            ],
            body: ResponseBody { writer in
                do {
                    try await request.body.consumeWithCancellationOnInboundClose { _ in
                        try await Self.write(events, keepAlive: keepAlive, clock: clock, to: &writer)
                    }
                } catch is CancellationError {
                    return  // the client went away: nothing more to send, nowhere to send it
                }
                try await writer.finish(nil)
            }
        )
    }

    private static func write<C: Clock<Duration>>(
        _ events: Events,
        keepAlive: KeepAlive?,
        clock: C,
        to writer: inout any ResponseBodyWriter
    ) async throws {
        try await EventStreamWriter.write(events, keepAlive: keepAlive, clock: clock) { buffer in
            try await writer.write(buffer)
        }
    }
}

extension Request {
    /// The last event ID a reconnecting client sent: the `Last-Event-ID` header, or else the
    /// `lastEventID` query parameter (for clients that cannot set headers). `nil` when neither
    /// is there or the value is empty.
    public var lastEventID: String? {
        self.lastEventID(query: self.uri.queryParameters)
    }

    /// ``lastEventID``, from the request's query parameters `query` (parsed only if need be), for
    /// a caller that parses them once for several of them.
    package func lastEventID(query: @autoclosure () -> FlatDictionary<Substring, Substring>) -> String? {
        if let header = self.headers[.lastEventID], !header.isEmpty { return header }
        if let value = query()["lastEventID"], !value.isEmpty { return String(value) }
        return nil
    }
}

extension HTTPField.Name {
    /// `Last-Event-ID`: sent by a reconnecting client; a Mercure hub answers with it too.
    public static let lastEventID = HTTPField.Name("Last-Event-ID")!
    /// `X-Accel-Buffering`: `no` stops nginx from buffering a stream.
    public static let xAccelBuffering = HTTPField.Name("X-Accel-Buffering")!
}
