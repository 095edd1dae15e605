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
import ServiceLifecycle
import HummingbirdCore
import HummingbirdSSE
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SSECore
public import SSENIO

extension Hub {
    /// How the hub's HTTP endpoints behave.
    public struct HTTPConfiguration: Sendable {
        /// A comment on idle subscriptions (15 s by default, under the 60 s idle timeouts of
        /// proxies); `nil` for none.
        public var heartbeat: KeepAlive? = KeepAlive()
        /// Whether each write to an HTTP/1 subscriber leaves at once (`TCP_NODELAY`). Off by
        /// default, as in nginx and Nchan: while earlier bytes are still unacknowledged, the kernel
        /// merges the events written meanwhile into one packet, which under load costs far less
        /// CPU per delivery (about 40 % less in `docs/PERFORMANCE.md`) and can hold an event back
        /// until the client acknowledges the previous one: one round trip, or the client's delayed
        /// acknowledgement (up to 40 ms on Linux, 200 ms on Windows). An event that follows a quiet
        /// moment leaves at once either way. Turn it on when events come in bursts and every
        /// millisecond counts. (HTTP/2 connections, shared with other requests, and requests that
        /// say `Connection: close` always send at once.)
        public var tcpNoDelay = false
        /// How long one write to a subscriber may wait for the client to take the bytes before
        /// the subscriber is cut (it reconnects and resumes from the history).
        public var writeTimeout: Duration = .seconds(30)
        /// The largest publish request body, in bytes; larger ones get 413.
        public var maximumPublishSize = 1 << 20
        /// The most `topic` parameters one subscription may have.
        public var maximumTopicsPerSubscription = 64
        /// The key that verifies publishers' tokens; without one, publishing is refused.
        public var publisherKey: JWTKey?
        /// The key that verifies subscribers' tokens; without one, only anonymous subscriptions
        /// are possible (if allowed), and private updates go to no one.
        public var subscriberKey: JWTKey?
        /// Whether subscribers without a token may subscribe (they receive public updates only).
        public var allowsAnonymousSubscribers = false
        /// The origins from which a browser may publish with the `mercureAuthorization` cookie;
        /// the `Origin` (or `Referer`) of such a request must be one of them.
        public var publishOrigins: [String] = []
        /// The origins whose pages may use the hub (with credentials); others get no CORS headers.
        public var corsOrigins: [String] = []
        /// The dashboard served at `/`, if any.
        public var dashboard: Dashboard?

        /// Creates a configuration with the defaults.
        public init() {}

        /// Throws the first setting the routes cannot work with: an origin that no browser's
        /// `Origin` would ever match, a time or a limit that is not positive.
        func check() throws(ConfigurationError) {
            if let heartbeat, heartbeat.interval <= .zero {
                throw ConfigurationError("heartbeat's interval must be positive (it is \(heartbeat.interval)); nil sends no heartbeat")
            }
            guard self.writeTimeout > .zero else {
                throw ConfigurationError("writeTimeout must be positive (it is \(self.writeTimeout))")
            }
            guard self.maximumPublishSize > 0 else {
                throw ConfigurationError("maximumPublishSize must be at least 1 (it is \(self.maximumPublishSize))")
            }
            guard self.maximumTopicsPerSubscription > 0 else {
                throw ConfigurationError("maximumTopicsPerSubscription must be at least 1 (it is \(self.maximumTopicsPerSubscription))")
            }
            for (name, origins) in [("publishOrigins", self.publishOrigins), ("corsOrigins", self.corsOrigins)] {
                for origin in origins {
                    if let why = Self.whyNotAnOrigin(origin) { throw ConfigurationError("\(name): \(why)") }
                }
            }
        }

        /// Why `text` is not an origin as a browser's `Origin` header serializes it; `nil` when
        /// it is one. (The hub compares origins as strings, so any other spelling would never
        /// match.)
        package static func whyNotAnOrigin(_ text: String) -> String? {
            if text == "*" {
                return "'*' is not taken: the hub allows credentials, so each origin is listed."
            }
            if let url = URL(string: text), let scheme = url.scheme, let host = url.host, !host.isEmpty {
                let defaultPort = ["http": 80, "https": 443][scheme]
                let port = url.port.flatMap { $0 == defaultPort ? nil : ":\($0)" } ?? ""
                if text == scheme + "://" + (host.contains(":") ? "[\(host)]" : host) + port && text == text.lowercased() { return nil }
            }
            return "'\(text)' is not an origin as a browser sends it: scheme://host, then :port unless it is the scheme's "
                + "default, in lower case, with no path (not even '/'), such as https://app.example.com."
        }
    }

    /// A configuration the hub cannot work with, said so that it can be fixed.
    public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
        /// What is wrong, naming the setting.
        public let description: String

        init(_ description: String) {
            self.description = description
        }
    }

    /// Adds the Mercure endpoints, `GET` and `POST /.well-known/mercure` (and the subscriptions
    /// API when the hub tracks subscriptions), the dashboard at `/` if configured, and `/healthz`.
    /// They answer a request they refuse with its status and the reason as a line of plain text.
    ///
    /// - Throws: ``ConfigurationError`` for a setting the routes cannot work with (an origin
    ///   spelled as no browser sends it, a time or a limit that is not positive), and
    ///   ``JWTKeyError`` when a configured key cannot be used (a PEM that does not parse, say).
    public func addRoutes<Context: RequestContext>(
        to router: Router<Context>,
        configuration: HTTPConfiguration = .init()
    ) async throws {
        try configuration.check()
        let authorizer = Authorizer(
            publisher: try await configuration.publisherKey.asyncMap(TokenVerifier.init),
            subscriber: try await configuration.subscriberKey.asyncMap(TokenVerifier.init),
            configuration: configuration
        )
        self.mercureRoute.withLockedValue { $0 = authorizer }
        if !configuration.corsOrigins.isEmpty {
            router.add(middleware: CORSAllowList(origins: configuration.corsOrigins))
        }
        router.get("/.well-known/mercure") { request, context in
            // In a task of its own: a task keeps the memory of its deepest call stack until it
            // ends, and the connection's task lives as long as the subscription; this one's
            // (checking the token, reading the replay) goes when it returns, 3.5 KB a subscriber.
            // (Not `async let`: its child would live in the connection task's memory.)
            let work = Task { try await self.subscribeResponse(request, context: context, authorizer: authorizer, configuration: configuration) }
            return try await withTaskCancellationHandler { try await work.value } onCancel: { work.cancel() }
        }
        router.post("/.well-known/mercure") { request, context in
            try await self.publishResponse(request, context: context, authorizer: authorizer, configuration: configuration)
        }
        if self.configuration.tracksSubscriptions {
            self.addSubscriptionsRoutes(to: router, authorizer: authorizer)
        }
        configuration.dashboard?.addRoute(to: router)
        router.get("/healthz") { _, _ in "ok\n" }
    }

    /// Checks a subscribe request and opens its subscription: the subscription, and the headers
    /// of its response. Throws the ``HubRefusal`` to answer instead.
    func openSubscription(
        _ request: Request,
        authorizer: Authorizer,
        configuration: HTTPConfiguration
    ) async throws -> (Subscription, HTTPFields) {
        let query = request.uri.queryParameters  // parsed once, for the token, the topics and the ID
        let claims = try await authorizer.subscriber(request, query: query)
        let selectors = try Self.selectors(query, configuration: configuration)
        // `Last-Event-ID` wins over the `lastEventID` query parameter.
        let (events, resumption): (Subscription, Resumption?)
        do {
            (events, resumption) = try await self.subscribe(selectors, lastEventID: request.lastEventID(query: query), claims: claims)
        } catch {
            throw self.historyUnavailable(error, doing: "read the updates to replay")
        }
        var headers = Self.eventStreamHeaders
        if let resumption { headers[.lastEventID] = resumption.lastEventID }
        return (events, headers)
    }

    /// Opens the subscription of a subscribe request as ``openSubscription(_:authorizer:configuration:)``
    /// does, when that needs no waiting: with no `Last-Event-ID` (no replay), an anonymous
    /// subscriber or a token accepted before, and subscriptions not tracked. `nil` when it needs
    /// ``openSubscription(_:authorizer:configuration:)``; throws when the route must answer.
    func openSubscriptionNow(
        _ request: Request,
        authorizer: Authorizer,
        configuration: HTTPConfiguration
    ) throws -> (Subscription, HTTPFields)? {
        let query = request.uri.queryParameters  // parsed once, for the token, the topics and the ID
        guard request.lastEventID(query: query) == nil, !self.configuration.tracksSubscriptions,
            let claims = try authorizer.knownSubscriber(request, query: query)
        else { return nil }
        let selectors = try Self.selectors(query, configuration: configuration)
        return (self.subscribeNow(selectors, claims: claims), Self.eventStreamHeaders)
    }

    /// The headers of a subscription's response, but for `Last-Event-ID`.
    private static let eventStreamHeaders: HTTPFields = [
        .contentType: "text/event-stream",
        .cacheControl: "private, no-cache, no-store, must-revalidate, max-age=0",
        .xAccelBuffering: "no",
    ]

    /// The topic selectors of a subscribe request, whose query parameters are `query`; throws 400
    /// when there are none, or too many.
    private static func selectors(
        _ query: FlatDictionary<Substring, Substring>,
        configuration: HTTPConfiguration
    ) throws -> [TopicSelector] {
        let topics = query[values: "topic"]
        guard !topics.isEmpty else {
            throw HubRefusal(.badRequest, reason: "missing 'topic' query parameter: say which topics to subscribe to")
        }
        guard topics.count <= configuration.maximumTopicsPerSubscription else {
            throw HubRefusal(.badRequest, reason: "too many 'topic' parameters: at most \(configuration.maximumTopicsPerSubscription)")
        }
        return topics.map { TopicSelector(String($0)) }
    }

    private func subscribeResponse(
        _ request: Request,
        context: some RequestContext,
        authorizer: Authorizer,
        configuration: HTTPConfiguration
    ) async throws -> Response {
        let (events, headers) = try await self.openSubscription(request, authorizer: authorizer, configuration: configuration)
        let channel = (context as? HubRequestContext)?.channel
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                if let channel, !Self.closesAfterResponse(request.headers), try await Self.isHTTP1(channel) {
                    // The hub writes the events from here on, and the response ends when the
                    // subscription does: this task returns now (see `ResponseEndHolder`).
                    try await writer.write(contentsOf: [ByteBuffer(bytes: ServerSentEvent.encodedComment())] + events.replay)
                    try await channel.eventLoop.submit { self.detach(events, on: channel, configuration: configuration) }.get()
                    try await writer.finish(nil)
                    return
                }
                do {
                    // On SIGTERM the stream ends cleanly, so that the server can stop and clients
                    // reconnect (to another node) and resume with Last-Event-ID.
                    try await withGracefulShutdownHandler {
                        try await request.body.consumeWithCancellationOnInboundClose { _ in
                            // From the connection's event loop, when the context knows it: a
                            // write then goes straight to the channel.
                            try await onEventLoop(channel?.eventLoop) {
                                try await self.stream(events, to: channel, configuration: configuration) { batch in
                                    try await writer.write(contentsOf: batch)
                                }
                            }
                        }
                    } onGracefulShutdown: {
                        events.finish()
                    }
                } catch is CancellationError {
                    return  // the client went away, or did not read in time
                }
                try await writer.finish(nil)
            }
        )
    }

    /// Whether the client asked for its connection to close after the response.
    static func closesAfterResponse(_ headers: HTTPFields) -> Bool {
        headers.value(of: .connection)?.lowercased().contains("close") ?? false
    }

    /// Whether `channel` speaks HTTP/1 (its pipeline has NIO's response encoder).
    private static func isHTTP1(_ channel: any Channel) async throws -> Bool {
        try await channel.eventLoop.submit {
            (try? channel.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)) != nil
        }.get()
    }

    /// Holds back the end of the server's response (see ``ResponseEndHolder``) and hands an
    /// HTTP/1 subscriber's channel to the hub's direct writes, so that the server's handler can
    /// return at once. Call on the channel's event loop, once the head, the opening comment and
    /// the replay are written.
    private func detach(_ events: Subscription, on channel: any Channel, configuration: HTTPConfiguration) {
        let pipeline = channel.pipeline.syncOperations
        guard let encoder = try? pipeline.context(handlerType: HTTPResponseEncoder.self) else { return }
        let holder = ResponseEndHolder { events.finish() }
        guard (try? pipeline.addHandler(holder, position: .after(encoder.handler))) != nil else { return }
        self.writeDirectly(events, to: channel, noDelay: true, configuration: configuration) { holder.release() }
    }

    /// Hands an HTTP/1 subscriber's channel to the hub's direct writes. When the subscription
    /// ends, `end` ends the response, or, when the subscriber was cut, the connection closes; and
    /// the subscription ends when the connection closes. Call on the channel's event loop, once
    /// the head, the opening comment and the replay are written. `noDelay` says whether the
    /// connection has `TCP_NODELAY` on now.
    func writeDirectly(
        _ events: Subscription,
        to channel: any Channel,
        noDelay: Bool,
        configuration: HTTPConfiguration,
        end: @escaping () -> Void
    ) {
        let sink = ChannelSink(channel: channel)
        if noDelay != configuration.tcpNoDelay {
            // See `HTTPConfiguration.tcpNoDelay` (SwiftNIO's servers turn `TCP_NODELAY` on).
            try? channel.syncOptions?.setOption(.tcpOption(.tcp_nodelay), value: configuration.tcpNoDelay ? 1 : 0)
        }
        guard events.queue.attach(sink) else {
            sink.stop()
            end()
            return
        }
        let (period, heartbeat, writeTimeout) = self.timers(configuration)
        events.queue.startTimer(period: period, heartbeat: heartbeat, writeDeadline: writeTimeout, on: channel.eventLoop)
        let writeTimeLimit = configuration.writeTimeout  // (not the whole configuration, kept by every subscriber)
        sink.done.futureResult.assumeIsolated().whenComplete { _ in
            if let reason = events.queue.cutReason {
                // The client is not reading: close the connection rather than end the response.
                self.subscribersCut.increment()
                let why =
                    reason == .writeTimeout
                    ? "the client did not read for \(writeTimeLimit)"
                    : "too much waiting for a client that does not read"
                self.logger.notice("subscriber cut: \(why)")
                channel.close(promise: nil)
            } else {
                end()
            }
        }
        // The client went away (or the server closed the connection): the subscription ends. This
        // keeps the subscription alive until then.
        channel.closeFuture.whenComplete { _ in events.finish() }
    }

    /// The period of a subscription's timer, its heartbeat (`nil`: none) and its write timeout.
    private func timers(_ configuration: HTTPConfiguration) -> (TimeAmount, (EncodedEvent, TimeAmount)?, TimeAmount) {
        let writeTimeout = TimeAmount(configuration.writeTimeout)
        let heartbeat = configuration.heartbeat.map { keepAlive in
            let event = self.heartbeat.withLockedValue { last in
                if let last, last.comment == keepAlive.comment { return last.event }
                let event = EncodedEvent(ByteBuffer(bytes: ServerSentEvent.encodedComment(keepAlive.comment)))
                last = (keepAlive.comment, event)
                return event
            }
            return (event, TimeAmount(keepAlive.interval))
        }
        let period = TimeAmount.nanoseconds(min(heartbeat?.1 ?? writeTimeout, writeTimeout).nanoseconds / 2)
        return (period, heartbeat, writeTimeout)
    }

    /// Writes a subscription: the opening comment and the replay at once through `write`, then
    /// either hands the channel to the hub's direct writes (when there is one), or writes each
    /// batch of what was queued meanwhile through `write` with one flush; heartbeats when idle, and
    /// all under the write timeout.
    private func stream(
        _ events: Subscription,
        to channel: (any Channel)?,
        configuration: HTTPConfiguration,
        write: ([ByteBuffer]) async throws -> Void
    ) async throws {
        try await write([ByteBuffer(bytes: ServerSentEvent.encodedComment())] + events.replay)
        let (period, heartbeat, writeTimeout) = self.timers(configuration)

        if let channel, channel.eventLoop.inEventLoop {
            // Running on the channel's loop, `write` has already put its bytes in the channel, so
            // the direct writes come after them. (Not on the loop, on platforms without task
            // executors: then the writes below.)
            let sink = ChannelSink(channel: channel)
            guard events.queue.attach(sink) else { return }
            events.queue.startTimer(period: period, heartbeat: heartbeat, writeDeadline: writeTimeout, on: channel.eventLoop)
            try await withTaskCancellationHandler {
                try await sink.done.futureResult.get()
            } onCancel: {
                events.queue.finish()
            }
            if let reason = events.queue.cutReason {
                // The client is not reading: close the connection rather than wait to end the response.
                self.subscribersCut.increment()
                self.logger.notice("subscriber cut: \(reason == .writeTimeout ? "the client did not read for \(configuration.writeTimeout)" : "too much waiting for a client that does not read")")
                try? await channel.close()
                throw CancellationError()
            }
            return
        }

        events.queue.startTimer(period: period, heartbeat: heartbeat, writeDeadline: writeTimeout, on: MultiThreadedEventLoopGroup.singleton.any())
        while true {
            let batch = await events.queue.next()
            guard !batch.isEmpty else { break }
            do {
                try await events.queue.write { try await write(batch) }
            } catch is CancellationError where events.queue.cutReason == .writeTimeout {
                self.subscribersCut.increment()
                self.logger.notice("subscriber cut: the client did not read for \(configuration.writeTimeout)")
                throw CancellationError()
            }
        }
    }

    private func publishResponse(
        _ request: Request,
        context: some RequestContext,
        authorizer: Authorizer,
        configuration: HTTPConfiguration
    ) async throws -> Response {
        let claims = try await self.publisherClaims(request, authorizer: authorizer)
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: configuration.maximumPublishSize)
        } catch {
            throw HubRefusal(.contentTooLarge, reason: "the update is larger than \(configuration.maximumPublishSize) bytes")
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: try await self.publish(form: body, claims: claims)))
        )
    }

    /// The claims of a publish request's token, once its head is checked (before its body is
    /// read). Throws the ``HubRefusal`` to answer instead.
    func publisherClaims(_ request: Request, authorizer: Authorizer) async throws -> MercureClaims {
        let claims = try await authorizer.publisher(request)
        try Self.checkFormContentType(request)
        return claims
    }

    /// Throws the ``HubRefusal`` to answer unless `request` has a form's `Content-Type`.
    private static func checkFormContentType(_ request: Request) throws {
        let contentType = request.headers.value(of: .contentType)
        guard Self.isForm(contentType) else {
            throw HubRefusal(
                .unsupportedMediaType,
                reason: "publish with Content-Type application/x-www-form-urlencoded, not '\(contentType ?? "")'"
            )
        }
    }

    /// Whether `contentType` is a form's.
    static func isForm(_ contentType: String?) -> Bool {
        guard var contentType else { return false }
        let form: StaticString = "application/x-www-form-urlencoded"
        return contentType.withUTF8 { bytes in
            guard bytes.count >= form.utf8CodeUnitCount else { return false }
            for index in 0..<form.utf8CodeUnitCount {
                let byte = bytes[index]
                // ASCII letters in either case.
                if ((0x41...0x5A).contains(byte) ? byte | 0x20 : byte) != form.utf8Start[index] { return false }
            }
            return true
        }
    }

    /// Publishes the update of a publish request's body, `form`, if `claims` allow its topics:
    /// the update's ID. Throws the ``HubRefusal`` to answer instead.
    func publish(form: ByteBuffer, claims: MercureClaims) async throws -> String {
        let (update, idIsNew) = try self.update(form: form, claims: claims)
        do {
            try await self.publish(update, idIsNew: idIsNew)
        } catch let error as EventStoreError where error == .duplicateID {
            throw HubRefusal(.conflict, reason: "an update with id '\(update.id)' was already published")
        } catch {
            throw self.historyUnavailable(error, doing: "store the update")
        }
        return update.id
    }

    /// The update of a publish request's body, `form`, if `claims` allow its topics, and whether
    /// the hub made its ID (the form has none). Throws the ``HubRefusal`` to answer instead.
    func update(form: ByteBuffer, claims: MercureClaims) throws -> (update: Update, idIsNew: Bool) {
        let update: Update
        var idIsNew = false
        do {
            update = try Update(form: form) {
                idIsNew = true
                return Self.makeID()
            }
        } catch {
            throw HubRefusal(.badRequest, reason: error.description)
        }
        // Every topic of the update, canonical and alternates, must be allowed.
        let allowed = claims.publish ?? []
        guard !allowed.isEmpty else {
            throw HubRefusal(.forbidden, reason: "the token's mercure.publish claim allows no topic")
        }
        if let topic = update.topics.first(where: { topic in !allowed.contains { $0.matches(topic) } }) {
            throw HubRefusal(.forbidden, reason: "the token's mercure.publish claim does not allow topic '\(topic)'")
        }
        return (update, idIsNew)
    }

    /// The answer when the history fails (a database that went away, or did not answer in time):
    /// `503` with a reason, so that clients retry rather than believe in a success.
    func historyUnavailable(_ error: any Error, doing what: String) -> HubRefusal {
        self.logger.error("the history failed", metadata: ["error": "\(String(reflecting: error))"])
        let reason = (error as? EventStoreError)?.description ?? "the history is unavailable"
        return HubRefusal(.serviceUnavailable, headers: [.retryAfter: "1"], reason: "cannot \(what) now (\(reason)); try again")
    }

    /// A unique, time-ordered `urn:uuid:` (a version 7 UUID: milliseconds since 1970, then random).
    static func makeID() -> String {
        let milliseconds = UInt64(Date().timeIntervalSince1970 * 1000)
        let random = RandomWords.shared.two()
        // 48 bits of time, the version (7) and 12 random bits; then the variant and 62 random bits.
        let high = milliseconds << 16 | 0x7000 | random.0 & 0x0FFF
        let low = 0x8000_0000_0000_0000 | random.1 & 0x3FFF_FFFF_FFFF_FFFF
        // `urn:uuid:` and 36 characters, written in place.
        return String(unsafeUninitializedCapacity: 45) { text in
            var end = 0
            for byte in "urn:uuid:".utf8 {
                text[end] = byte
                end += 1
            }
            for position in 0..<32 {
                if position == 8 || position == 12 || position == 16 || position == 20 {
                    text[end] = UInt8(ascii: "-")
                    end += 1
                }
                let nibble = UInt8(truncatingIfNeeded: (position < 16 ? high : low) >> (60 - 4 * (position % 16)) & 0xF)
                text[end] = .hexDigit(nibble)
                end += 1
            }
            return end
        }
    }
}

extension UInt8 {
    /// The lowercase ASCII hex digit of `nibble` (0 to 15).
    static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }
}

/// The random bits of update IDs. On Linux, `SystemRandomNumberGenerator` makes a system call
/// (`getrandom`) for every 8 bytes: two a publish were a third of the server's system calls and
/// 1.7 % of its CPU on 1 000 topics. This draws 256 bytes a call (`getentropy`, from the same
/// source) and hands them out under a lock. Elsewhere the generator reads a pool in user space
/// already (`arc4random`), and this is that generator.
final class RandomWords: Sendable {
    static let shared = RandomWords()

    #if canImport(Glibc)
    private let pool = NIOLockedValueBox((words: [UInt64](repeating: 0, count: 32), next: 32))

    /// Two random 64-bit words.
    func two() -> (UInt64, UInt64) {
        self.pool.withLockedValue { pool in
            if pool.next + 2 > pool.words.count {
                let filled = pool.words.withUnsafeMutableBytes { getentropy($0.baseAddress, $0.count) == 0 }
                if !filled {  // (a kernel without `getrandom`)
                    var generator = SystemRandomNumberGenerator()
                    for index in pool.words.indices { pool.words[index] = generator.next() }
                }
                pool.next = 0
            }
            defer { pool.next += 2 }  // each word is handed out once
            return (pool.words[pool.next], pool.words[pool.next + 1])
        }
    }
    #else
    /// Two random 64-bit words.
    func two() -> (UInt64, UInt64) {
        var generator = SystemRandomNumberGenerator()
        return (generator.next(), generator.next())
    }
    #endif
}

/// Finds a request's token (the `Authorization` header, else the `authorization` query
/// parameter, else the `mercureAuthorization` cookie) and checks it.
final class Authorizer: Sendable {
    let publisher: TokenVerifier?
    let subscriber: TokenVerifier?
    let configuration: Hub.HTTPConfiguration

    init(publisher: TokenVerifier?, subscriber: TokenVerifier?, configuration: Hub.HTTPConfiguration) {
        self.publisher = publisher
        self.subscriber = subscriber
        self.configuration = configuration
    }

    enum Source { case header, query, cookie }

    func token(_ request: Request, query: @autoclosure () -> FlatDictionary<Substring, Substring>) throws -> (String, Source)? {
        // Read in place (the joined value would be a copy), and only one.
        var authorization: String?
        for field in request.headers where field.name == .authorization {
            guard authorization == nil else {
                throw HubRefusal(.unauthorized, reason: "send one Authorization header, not several")
            }
            authorization = field.value
        }
        if let header = authorization {
            guard header.hasPrefix("Bearer "), header.utf8.count > 7 else {
                throw HubRefusal(.unauthorized, reason: "the Authorization header must be 'Bearer <JWT>'")
            }
            return (String(header.dropFirst(7)), .header)
        }
        if let value = query()["authorization"], !value.isEmpty {
            return (String(value), .query)
        }
        if let cookie = request.cookies["mercureAuthorization"]?.value, !cookie.isEmpty {
            return (cookie, .cookie)
        }
        return nil
    }

    /// The publisher's claims; throws 401 without a valid token, 403 for a cookie from a
    /// foreign origin.
    func publisher(_ request: Request) async throws -> MercureClaims {
        let (token, verifier) = try self.publisherToken(request)
        return try await Self.check(token, with: verifier, role: "publisher")
    }

    /// The claims of a publish request whose one `Authorization` header is `authorization`, if
    /// its token was accepted before and has not expired, and `contentType` is a form's: what
    /// ``publisher(_:)`` and the route's checks would find. `nil` when the request must be checked
    /// in full (an unknown token, or a reason to answer).
    func knownPublisher(authorization: String, contentType: String?) -> MercureClaims? {
        guard let publisher = self.publisher, authorization.hasPrefix("Bearer "), authorization.utf8.count > 7,
            Hub.isForm(contentType)
        else { return nil }
        return try? publisher.acceptedClaims(of: String(authorization.dropFirst(7)), role: "publisher")
    }

    /// A publish request's token, and the verifier to check it with.
    private func publisherToken(_ request: Request) throws -> (String, TokenVerifier) {
        guard let publisher = self.publisher else {
            throw HubRefusal(.unauthorized, reason: "publishing is disabled: the hub has no publisher key")
        }
        guard let (token, source) = try self.token(request, query: request.uri.queryParameters) else {
            throw HubRefusal(
                .unauthorized,
                reason: "publishing needs a JWT signed with the publisher key: send 'Authorization: Bearer <JWT>'"
            )
        }
        if source == .cookie {
            let origin = request.headers[.origin] ?? request.headers[.referer].flatMap(Self.origin(ofURL:))
            guard let origin, self.configuration.publishOrigins.contains(origin) else {
                throw HubRefusal(
                    .forbidden,
                    reason: "publishing with the mercureAuthorization cookie from origin '\(origin ?? "unknown")' is not allowed"
                )
            }
        }
        return (token, publisher)
    }

    /// The subscriber's claims, or `nil` for an anonymous subscriber.
    func subscriber(_ request: Request, query: @autoclosure () -> FlatDictionary<Substring, Substring>) async throws -> MercureClaims? {
        guard let (token, subscriber) = try self.subscriberToken(request, query: query()) else { return nil }
        return try await Self.check(token, with: subscriber, role: "subscriber")
    }

    /// What ``subscriber(_:query:)`` finds, when that needs no waiting: `.some(nil)` for an anonymous
    /// subscriber, the claims of a token accepted before (and not expired since); `nil` when the
    /// token must be verified.
    func knownSubscriber(_ request: Request, query: @autoclosure () -> FlatDictionary<Substring, Substring>) throws -> MercureClaims?? {
        guard let (token, subscriber) = try self.subscriberToken(request, query: query()) else { return .some(nil) }
        return try subscriber.acceptedClaims(of: token, role: "subscriber").map { .some($0) }
    }

    /// A subscribe request's token and the verifier to check it with; `nil` for an anonymous
    /// subscriber; throws 401 when there must be a token, or it cannot be checked.
    private func subscriberToken(
        _ request: Request,
        query: @autoclosure () -> FlatDictionary<Substring, Substring>
    ) throws -> (String, TokenVerifier)? {
        guard let (token, _) = try self.token(request, query: query()) else {
            guard self.configuration.allowsAnonymousSubscribers else {
                throw HubRefusal(
                    .unauthorized,
                    reason: "subscribing needs a JWT signed with the subscriber key (this hub does not allow anonymous subscribers)"
                )
            }
            return nil
        }
        guard let subscriber = self.subscriber else {
            throw HubRefusal(.unauthorized, reason: "the hub has no subscriber key to check this token with")
        }
        return (token, subscriber)
    }

    private static func check(_ token: String, with verifier: TokenVerifier, role: String) async throws -> MercureClaims {
        do {
            return try await verifier.verify(token, role: role)
        } catch {
            throw HubRefusal(.unauthorized, reason: error.description)
        }
    }

    /// `scheme://host[:port]` of a URL, as an `Origin` header would say it.
    static func origin(ofURL url: String) -> String? {
        guard let schemeEnd = url.range(of: "://") else { return nil }
        let rest = url[schemeEnd.upperBound...]
        let host = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        return host.isEmpty ? nil : String(url[..<schemeEnd.upperBound] + host)
    }
}

extension Optional {
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}

extension HTTPFields {
    /// The value of field `name`, as `self[name]` gives it, but read in place when there is one
    /// field of that name (the subscript joins even one value into a new string): `nil` when there
    /// is none, the values joined when there are several.
    func value(of name: HTTPField.Name) -> String? {
        var value: String?
        for field in self where field.name == name {
            guard value == nil else { return self[name] }
            value = field.value
        }
        return value
    }
}

/// A request the hub's routes refuse: answered with `status` and `reason` as a line of plain
/// text, as the door answers those it refuses itself, so that every refusal of the hub reads the
/// same in a terminal, a log or a page (`herald listen` prints it; a page reads it with
/// `response.text()`).
struct HubRefusal: HTTPResponseError, CustomStringConvertible {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let reason: String

    init(_ status: HTTPResponse.Status, headers: HTTPFields = [:], reason: String) {
        self.status = status
        self.headers = headers
        self.reason = reason
    }

    var description: String { "\(self.status.code) \(self.status.reasonPhrase): \(self.reason)" }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: self.status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: self.reason + "\n")))
    }
}
