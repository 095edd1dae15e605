//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import SSENIO
public import Vapor

/// A streaming `text/event-stream` response: return it from a Vapor route.
///
/// ```swift
/// app.get("events") { request in
///     EventStream(prices.map { try ServerSentEvent(type: "price", data: $0.json, id: $0.id) })
/// }
/// ```
///
/// The same name and shape as HummingbirdSSE's: it sets `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache, no-transform` and `X-Accel-Buffering: no`, sends no content length,
/// opens the stream with a comment at once, encodes each event once straight into the outgoing
/// buffer, and sends keep-alive comments when idle.
///
/// One limit comes from Vapor 4: a route is not told when its client goes away. The stream
/// notices at its next write, an event or a keep-alive comment, and then cancels the iteration of
/// `events`; so a client that leaves is noticed within one keep-alive interval (15 s by default).
public struct EventStream<Events: AsyncSequence & Sendable>: AsyncResponseEncodable, Sendable
where Events.Element == ServerSentEvent {
    /// The events to send.
    public let events: Events
    /// The keep-alive comments, or `nil` for none (then a departed client is only noticed at the
    /// next event).
    public let keepAlive: KeepAlive?

    /// A response that streams `events`, with a keep-alive comment after 15 s of silence unless
    /// told otherwise.
    public init(_ events: Events, keepAlive: KeepAlive? = KeepAlive()) {
        self.events = events
        self.keepAlive = keepAlive
    }

    public func encodeResponse(for request: Request) async throws -> Response {
        var headers = HTTPHeaders()
        headers.replaceOrAdd(name: .contentType, value: "text/event-stream")
        headers.replaceOrAdd(name: .cacheControl, value: "no-cache, no-transform")
        headers.replaceOrAdd(name: "X-Accel-Buffering", value: "no")
        let events = self.events
        let keepAlive = self.keepAlive
        let allocator = request.byteBufferAllocator
        return Response(
            status: .ok,
            headers: headers,
            body: .init(managedAsyncStream: { writer in
                try await EventStreamWriter.write(events, keepAlive: keepAlive, allocator: allocator) { buffer in
                    try await writer.writeBuffer(buffer)
                }
            })
        )
    }
}

extension Request {
    /// The last event ID a reconnecting client sent: the `Last-Event-ID` header, or else the
    /// `lastEventID` query parameter (for clients that cannot set headers). `nil` when neither
    /// is there or the value is empty.
    public var lastEventID: String? {
        if let header = self.headers.first(name: "Last-Event-ID"), !header.isEmpty { return header }
        if let query = self.query[String.self, at: "lastEventID"], !query.isEmpty { return query }
        return nil
    }
}
