//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdSSE
public import SSENIO

extension Hub {
    /// How the hub's HTTP endpoints behave.
    public struct HTTPConfiguration: Sendable {
        /// A comment on idle subscriptions (15 s by default, under the 60 s idle timeouts of
        /// proxies); `nil` for none.
        public var heartbeat: KeepAlive? = KeepAlive()
        /// The largest publish request body, in bytes; larger ones get 413.
        public var maximumPublishSize = 1 << 20
        /// The most `topic` parameters one subscription may have.
        public var maximumTopicsPerSubscription = 64

        /// Creates a configuration with the defaults.
        public init() {}
    }

    /// Adds the Mercure endpoints, `GET` and `POST /.well-known/mercure`, and `/healthz`.
    public func addRoutes<Context: RequestContext>(to router: Router<Context>, configuration: HTTPConfiguration = .init()) {
        router.get("/.well-known/mercure") { request, context in
            try await self.subscribeResponse(request, context: context, configuration: configuration)
        }
        router.post("/.well-known/mercure") { request, context in
            try await self.publishResponse(request, context: context, configuration: configuration)
        }
        router.get("/healthz") { _, _ in "ok\n" }
    }

    private func subscribeResponse(
        _ request: Request,
        context: some RequestContext,
        configuration: HTTPConfiguration
    ) async throws -> Response {
        let topics = request.uri.queryParameters[values: "topic"].map(String.init)
        guard !topics.isEmpty else {
            throw HTTPError(.badRequest, message: "missing 'topic' query parameter: say which topics to subscribe to")
        }
        guard topics.count <= configuration.maximumTopicsPerSubscription else {
            throw HTTPError(.badRequest, message: "too many 'topic' parameters: at most \(configuration.maximumTopicsPerSubscription)")
        }
        // `Last-Event-ID` wins over the `lastEventID` query parameter.
        let (events, resumption) = try await self.subscribe(topics.map(TopicSelector.init), lastEventID: request.lastEventID)
        var headers: HTTPFields = [
            .contentType: "text/event-stream",
            .cacheControl: "private, no-cache, no-store, must-revalidate, max-age=0",
            .xAccelBuffering: "no",
        ]
        if let resumption { headers[.lastEventID] = resumption.lastEventID }
        let heartbeat = configuration.heartbeat
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                do {
                    try await request.body.consumeWithCancellationOnInboundClose { _ in
                        try await EventStreamWriter.write(encoded: events, keepAlive: heartbeat) { buffer in
                            try await writer.write(buffer)
                        }
                    }
                } catch is CancellationError {
                    return
                }
                try await writer.finish(nil)
            }
        )
    }

    private func publishResponse(
        _ request: Request,
        context: some RequestContext,
        configuration: HTTPConfiguration
    ) async throws -> Response {
        let contentType = request.headers[.contentType]?.lowercased() ?? ""
        guard contentType.hasPrefix("application/x-www-form-urlencoded") else {
            throw HTTPError(
                .unsupportedMediaType,
                message: "publish with Content-Type application/x-www-form-urlencoded, not '\(contentType)'"
            )
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: configuration.maximumPublishSize)
        } catch {
            throw HTTPError(.contentTooLarge, message: "the update is larger than \(configuration.maximumPublishSize) bytes")
        }
        let update: Update
        do {
            update = try Update(form: Array(body.readableBytesView), makeID: Self.makeID)
        } catch {
            throw HTTPError(.badRequest, message: error.description)
        }
        do {
            try await self.publish(update)
        } catch let error as EventStoreError where error == .duplicateID {
            throw HTTPError(.conflict, message: "an update with id '\(update.id)' was already published")
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: update.id))
        )
    }

    /// A unique, time-ordered `urn:uuid:` (a version 7 UUID: milliseconds since 1970, then random).
    static func makeID() -> String {
        let milliseconds = UInt64(Date().timeIntervalSince1970 * 1000)
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: milliseconds >> (8 * (5 - index))) }
        var generator = SystemRandomNumberGenerator()
        for index in 6..<16 { bytes[index] = generator.next() }
        bytes[6] = (bytes[6] & 0x0F) | 0x70  // version 7
        bytes[8] = (bytes[8] & 0x3F) | 0x80  // RFC 4122 variant
        let hex = bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        let parts = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20)]
        return "urn:uuid:" + parts.joined(separator: "-")
    }
}

extension String {
    fileprivate func leftPadded(to length: Int) -> String {
        String(repeating: "0", count: max(0, length - self.count)) + self
    }
}

