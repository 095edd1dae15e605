//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import HTTPTypes
import Hummingbird
public import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import SSECore

extension Hub {
    /// Hummingbird's HTTP/1.1 server, for an app that serves the hub: use it in place of
    /// `.http1(configuration:)`, once ``addRoutes(to:configuration:)`` has added the hub's routes.
    ///
    /// The hub's requests are answered at the connection's door, the same way as the routes answer
    /// them but with no task for the connection and no trip through the router and its async
    /// channel: a subscription (an idle subscriber then costs about half the memory), and publish
    /// requests with a `Content-Length` and no `Origin`, one after another on a kept-alive
    /// connection (a sixth less server CPU a publish); see `docs/PERFORMANCE.md`. Any other request
    /// goes to the app as usual, and so does a subscription or publish that fails its checks (a
    /// missing token, say): the route then answers it, with its reason, and serves the connection
    /// from then on. A request that does not parse as HTTP/1.1 is answered `400 Bad Request` with
    /// the parser's reason, and the connection closes (once the app has the connection, when that
    /// request comes after the last one was answered; else the app's server answers it); so is a
    /// request without exactly one `Host` field (an HTTP/1.0 request may have none), or with a
    /// `Transfer-Encoding` that does not end with `chunked`, once the requests before it are
    /// answered. The answers the door writes itself have no `Server` header: the application's
    /// `serverName` is for its responder's
    /// (``server(_:host:port:tlsConfiguration:requestTimeout:serverName:onServerRunning:logger:)``
    /// names both). The app's `ApplicationConfiguration` sets the listener's queue (`backlog`, 256
    /// by default): when every subscriber may reconnect at once, after a restart, make it as long
    /// as the kernel allows, as the hub's own server does (`net.core.somaxconn`, 4 096 on Linux by
    /// default); a shorter one drops their connections, and each client dropped waits 1 s, then 3
    /// s, to try again.
    ///
    /// - Parameters:
    ///   - configuration: The configuration of Hummingbird's HTTP/1 channel. Leave out the
    ///     `idleTimeout`, which would close the subscriptions the route answers.
    ///   - requestTimeout: How long a client may take to send a whole request, counted from the
    ///     opening of its connection or from the last answer on it; `nil` for no limit. Past it,
    ///     the connection closes, after a `408 Request Timeout` if a publish the door reads was
    ///     under way. A response being written, and a subscription's stream, are not timed. (Unlike
    ///     Hummingbird's `idleTimeout`, this leaves alone the streams that the route answers.)
    public func http1Server(
        configuration: HTTP1Channel.Configuration = .init(),
        requestTimeout: Duration? = .seconds(60)
    ) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            HubHTTP1Channel(
                hub: self,
                http1: HTTP1Channel(responder: responder, configuration: configuration),
                requestTimeout: requestTimeout
            )
        }
    }
}

extension Hub {
    /// Checks and stores the update of a publish request read at a connection's door, `form`, and
    /// calls `answer` with its ID, or with `nil` when the route must answer the request (with the
    /// reason). `authorization` is the request's one `Authorization` field, if it has one.
    ///
    /// A token the hub has accepted before (a publisher sends the same one with each update): the
    /// update goes to the store from here, and the store's answer straight back to `answer`, with
    /// no task between (see docs/PERFORMANCE.md). Else the whole check, as the route makes it, of
    /// the request as `request()` makes it, in a task of its own.
    func publish(
        form: ByteBuffer,
        authorization: String?,
        contentType: String?,
        authorizer: Authorizer,
        request: () throws -> HTTPRequest,
        answer: @escaping @Sendable (String?) -> Void
    ) {
        if let authorization, let claims = authorizer.knownPublisher(authorization: authorization, contentType: contentType),
            let checked = try? self.update(form: form, claims: claims)
        {
            let id = checked.update.id
            self.publish(checked.update, idIsNew: checked.idIsNew) { answer((try? $0.get()).map { id }) }
            return
        }
        guard let request = try? Request(head: request(), body: RequestBody(buffer: ByteBuffer())) else {
            return answer(nil)
        }
        Task {
            answer(try? await self.publish(form: form, claims: try await self.publisherClaims(request, authorizer: authorizer)))
        }
    }
}

/// Hummingbird's HTTP/1 channel with the hub's door in front: the door reads a connection's
/// requests and answers subscriptions and publishes itself, until it hands the connection on to
/// Hummingbird.
struct HubHTTP1Channel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        /// The connection as Hummingbird takes it, or `nil` when the door answered it or it closed.
        let handedOn: EventLoopFuture<NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?>
    }

    let hub: Hub
    let http1: HTTP1Channel
    /// See ``Hub/http1Server(configuration:requestTimeout:)``.
    let requestTimeout: Duration?
    /// Whether the connections come with `TCP_NODELAY` on, from their listener (NIO's servers turn
    /// it on). The hub's own server without TLS leaves it off, as a subscriber's connection wants it
    /// by default (see ``Hub/HTTPConfiguration/tcpNoDelay``), and the door turns it on for any other
    /// connection: a subscriber's connection then makes two system calls fewer.
    var acceptedWithNoDelay = true
    /// The `Server` header of the door's answers, if any (see
    /// ``Hub/server(_:host:port:tlsConfiguration:requestTimeout:serverName:onServerRunning:logger:)``).
    var serverName: String? = nil

    /// The size of a connection's reads. A connection keeps a buffer of its largest read for as
    /// long as it is open, and an idle subscriber's was its request: NIO's default reads start at
    /// 2 KB, a subscribe request is a few hundred bytes (1.5 KB less per idle subscriber). A larger
    /// request takes more reads, each twice the last.
    static let reads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // As Hummingbird's HTTP/1 channel sets it up, up to its own handlers, which the door adds
            // when it hands the connection on.
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = self.http1.configuration.httpDecoder.maxHeaderFieldSize
            limits.maxHeaderListSize = self.http1.configuration.httpDecoder.maxHeaderListSize
            limits.maxHeaderFieldCount = self.http1.configuration.httpDecoder.maxHeaderFieldCount
            try channel.syncOptions?.setOption(.recvAllocator, value: Self.reads)
            let pipeline = channel.pipeline.syncOperations
            let handedOn = channel.eventLoop.makePromise(of: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?.self)
            let door = HubDoor(
                hub: self.hub,
                http1: self.http1.configuration,
                limits: limits,
                requestTimeout: self.requestTimeout,
                noDelay: self.acceptedWithNoDelay,
                serverName: self.serverName,
                handedOn: handedOn,
                logger: logger
            )
            // Publish and subscribe requests of one plain shape, read as bytes. NIO's decoder and
            // encoder come between the two when the reader meets any other request, and the codec
            // that converts NIO's parts for Hummingbird when the door hands the connection on.
            try pipeline.addHandler(RequestReader(door: door, limits: limits))
            try pipeline.addHandler(door)
            return Value(channel: channel, handedOn: handedOn.futureResult)
        }
    }

    func handle(value: Value, logger: Logger) async {
        // The server's task for the connection: it ends at once when the door answers a
        // subscription, and waits with nothing to do while the door answers publishes.
        guard let connection = try? await value.handedOn.get() else { return }
        await self.http1.handle(value: connection, logger: logger)
    }
}

/// NIO's HTTP/1 parts as HTTP types, the way `HTTP1ToHTTPServerCodec` converts them, except that:
///
/// - a request target in origin form (`/path?query`: what clients send a server directly) is taken
///   as it is. That codec parses every target with `URLComponents`, only to return such a target
///   unchanged: 1.4 % of the server's CPU on 1 000 topics.
/// - an HTTP/1.0 request, or one that does not keep its connection, carries `Connection: close`, the
///   one way the door and Hummingbird check (HTTP types have no version), so that both close the
///   connection after the response; and the response to an HTTP/1.0 request is an HTTP/1.0 one, so
///   that NIO's encoder sends its body as it is, to the close, not in chunks the client cannot read.
final class HubHTTP1Codec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// The versions of the requests read and not answered yet, oldest first.
    private var versions: [HTTPVersion] = []
    /// Whether the last response begun answers an HTTP/1.0 request: its body is then sent as it is.
    private(set) var answersHTTP10 = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.versions.append(head.version)
            do {
                context.fireChannelRead(Self.wrapInboundOut(.head(try Self.request(head))))
            } catch {
                context.fireErrorCaught(error)
            }
        case .body(let body):
            context.fireChannelRead(Self.wrapInboundOut(.body(body)))
        case .end(let trailers):
            context.fireChannelRead(Self.wrapInboundOut(.end(trailers.map { HTTPFields($0, splitCookie: false) })))
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .head(let response):
            var head = HTTPResponseHead(response)
            // The answer to the oldest request (a `100 Continue` comes before it).
            if response.status.kind != .informational || response.status == .switchingProtocols, !self.versions.isEmpty {
                self.answersHTTP10 = self.versions.removeFirst() == .http1_0
                if self.answersHTTP10 { head.version = .http1_0 }
            }
            context.write(Self.wrapOutboundOut(.head(head)), promise: promise)
        case .body(let body):
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: promise)
        case .end(let trailers):
            context.write(Self.wrapOutboundOut(.end(trailers.map(HTTPHeaders.init))), promise: promise)
        }
    }

    /// `head` as an HTTP request, for a connection without TLS.
    static func request(_ head: HTTPRequestHead) throws -> HTTPRequest {
        var request =
            if head.uri.utf8.first == UInt8(ascii: "/") {
                HTTPRequest(
                    method: try HTTPRequest.Method(head.method),
                    scheme: "http",
                    authority: head.headers.first(name: "Host"),
                    path: head.uri,
                    headerFields: HTTPFields(head.headers, splitCookie: false)
                )
            } else {
                try HTTPRequest(head, secure: false, splitCookie: false)  // absolute form, `*` or not valid
            }
        if head.version == .http1_0 || !head.isKeepAlive { request.headerFields[.connection] = "close" }
        return request
    }
}

/// The door of a connection: a subscription the hub can open gets its event stream from here,
/// written by the hub's direct writes (no task, no async channel); publishes are read, stored and
/// answered here, one after another on a kept-alive connection. Anything else goes on to
/// Hummingbird's handlers, which the door adds behind it before it leaves the pipeline; so does a
/// publish or a subscription that fails its checks, and the route answers it with its reason.
///
/// The door reads and writes NIO's HTTP/1 parts; the codec that converts them to HTTP types for
/// Hummingbird comes with Hummingbird's handlers. What the door answers itself is not converted
/// (the conversion was 4.6 % of the server's CPU on 1 000 topics, see docs/PERFORMANCE.md). Most
/// requests do not reach it through NIO's decoder: the ``RequestReader`` ahead of it reads them as
/// bytes, answers publishes and gives subscribe requests to the door, and adds the decoder and
/// encoder, and leaves, at the first request it does not take.
///
/// The connection closes when the stream ends (the hub stopping, or the subscriber cut), and when
/// a request it waits for does not come whole in time.
final class HubDoor: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// No request yet, or the last one answered.
        case waiting
        /// A subscribe request being read and checked, its parts and those read since (the next
        /// requests of a pipelining client), and who checks it.
        case opening([HTTPServerRequestPart], Authorizer)
        /// The subscription's stream is the response (the door leaves the pipeline).
        case streaming
        /// A publish request being read: its parts so far, and who checks it.
        case reading([HTTPServerRequestPart], Authorizer)
        /// A publish being checked and stored: its parts, and those read since (the next
        /// requests of a pipelining client).
        case publishing([HTTPServerRequestPart], next: [HTTPServerRequestPart])
        /// Hummingbird has the connection.
        case handedOn
        case closed
    }

    private var state = State.waiting
    /// Whether a read was held back while a request was being checked.
    private var readHeld = false
    /// Whether the connection closes once the publish being read or stored is answered.
    private var closesAfterPublish = false
    /// Whether the client closed its side while a publish was stored: the requests it sent whole
    /// are answered, then the connection closes.
    private var inputClosed = false
    /// The error of a request that failed to parse while a publish was stored (a malformed one, or
    /// one cut off by the end of input): it is acted on once the requests read whole before it
    /// are answered.
    private var caughtError: (any Error)?
    /// Parts read while a publish was being stored, not yet taken in hand.
    private var unread: ArraySlice<HTTPServerRequestPart> = []
    /// When the request the door waits for must have come whole.
    private var requestDue = NIODeadline.distantFuture
    /// Checks `requestDue`; it runs late rather than again for every request on a busy connection.
    private var requestTimer: NIOScheduledCallback?
    /// Whether the connection has `TCP_NODELAY` on.
    private var noDelay: Bool
    let hub: Hub
    /// Whether the next request goes on to Hummingbird: the request reader's that failed its checks.
    var handsOnNextRequest = false
    private let http1: HTTP1Channel.Configuration
    /// The limits of NIO's decoder on a request's head.
    private let limits: NIOHTTPDecoderLimitConfiguration
    /// Whether NIO's decoder and encoder are in the pipeline, ahead of the door.
    private var hasHTTPCodec = false
    private let requestTimeout: Duration?
    /// The `Server` header of the door's answers, and the request reader's, if any.
    let serverName: String?
    /// Completed when the door answers a subscription, hands the connection on, or sees it close.
    private let handedOn: EventLoopPromise<NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?>
    private let logger: Logger

    init(
        hub: Hub,
        http1: HTTP1Channel.Configuration,
        limits: NIOHTTPDecoderLimitConfiguration,
        requestTimeout: Duration?,
        noDelay: Bool,
        serverName: String?,
        handedOn: EventLoopPromise<NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?>,
        logger: Logger
    ) {
        self.hub = hub
        self.http1 = http1
        self.limits = limits
        self.requestTimeout = requestTimeout
        self.noDelay = noDelay
        self.serverName = serverName
        self.handedOn = handedOn
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.waitForRequest(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.waitForRequest(context)
        context.fireChannelActive()
    }

    /// Gives the client `requestTimeout` from now to send its next request whole.
    private func waitForRequest(_ context: ChannelHandlerContext) {
        guard let timeout = self.requestTimeout else { return }
        self.requestDue = context.eventLoop.now + TimeAmount(timeout)
        if self.requestTimer == nil { self.checkRequestDue(context) }
    }

    /// Gives the client `requestTimeout` from `now`, when the request reader answered a request.
    func requestAnswered(_ now: NIODeadline) {
        guard let timeout = self.requestTimeout else { return }
        self.requestDue = now + TimeAmount(timeout)
    }

    /// Checks the connection when `requestDue` comes.
    private func checkRequestDue(_ context: ChannelHandlerContext) {
        // A callback rather than a task: no promise and no closures to make, for a timer that a
        // subscriber's connection cancels at once (see docs/PERFORMANCE.md).
        self.requestTimer = try? context.eventLoop.assumeIsolated().scheduleCallback(
            at: self.requestDue,
            handler: RequestDue(door: self, context: context)
        )
    }

    /// The door's check when `requestDue` comes.
    private struct RequestDue: NIOScheduledCallbackHandler {
        let door: HubDoor
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.door.requestTimer = nil
            self.door.closeIfTheRequestIsLate(self.context)
        }
    }

    /// Closes the connection if the request it waits for has not come whole by `requestDue`: at
    /// once if none has begun (as far as the door knows: a head still coming is in the decoder),
    /// else with a `408`.
    private func closeIfTheRequestIsLate(_ context: ChannelHandlerContext) {
        let begun: Bool
        // The request reader, while it is in the pipeline. (Looked up here, not held weakly: a weak
        // reference makes every retain of the reader, one a publish or more, take the runtime's
        // slow path.)
        let requestReader = try? context.pipeline.syncOperations.handler(type: RequestReader.self)
        switch self.state {
        case .waiting where requestReader?.isPublishing == true:
            // A request came whole to the request reader: look again after its answer.
            self.requestDue = max(self.requestDue, context.eventLoop.now + TimeAmount(self.requestTimeout ?? .zero))
            begun = false
        case .waiting:
            begun = requestReader?.holdsPartialRequest == true
        case .reading:
            begun = true
        case .opening, .publishing, .streaming, .handedOn, .closed:
            return  // a request came whole: the answer to a publish checks again
        }
        guard context.eventLoop.now >= self.requestDue else {
            self.checkRequestDue(context)  // an answer since gave the client more time
            return
        }
        guard begun else {
            context.close(promise: nil)
            return
        }
        self.refuse(context, .requestTimeout, reason: "the request did not come whole within \(self.requestTimeout ?? .zero)")
    }

    /// Answers the request the door waits for with `status` and `reason`, through NIO's encoder,
    /// then closes the connection; no task serves it.
    private func refuse(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, reason: String) {
        self.state = .closed
        self.handedOn.succeed(nil)
        guard (try? self.addHTTPCodec(to: context.pipeline.syncOperations)) != nil else {
            context.close(promise: nil)  // (never: the door is in the pipeline)
            return
        }
        Self.writeRefusal(context, status, reason: reason, serverName: self.serverName)
    }

    /// Writes, from `context` (a handler of NIO's HTTP/1 parts), a `text/plain` answer of
    /// `status` saying `reason`, with `serverName` as its `Server` header if there is one, then
    /// closes the connection.
    static func writeRefusal(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, reason: String, serverName: String?) {
        let reason = reason + "\n"
        var headers: HTTPHeaders = [
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Length": String(reason.utf8.count),
            "Connection": "close",
            "Date": Self.currentDate(),
        ]
        if let serverName { headers.add(name: "Server", value: serverName) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: reason)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// Writes into `buffer` a whole HTTP/1.1 `text/plain` answer, as bytes (not through NIO's
    /// encoder): `status` (its code and reason phrase), `body`, the `Date`, `serverName` as its
    /// `Server` if there is one, and `Connection: close` if `closes`.
    static func writeTextAnswer(_ status: StaticString, body: String, closes: Bool, serverName: String?, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeStaticString(status)
        buffer.writeStaticString("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ")
        buffer.writeString(String(body.utf8.count))
        buffer.writeStaticString("\r\nDate: ")
        buffer.writeString(Self.currentDate())
        if let serverName {
            buffer.writeStaticString("\r\nServer: ")
            buffer.writeString(serverName)
        }
        if closes { buffer.writeStaticString("\r\nConnection: close") }
        buffer.writeStaticString("\r\n\r\n")
        buffer.writeString(body)
    }

    /// The reason of the `400` for a request that NIO's decoder could not parse.
    static func unparsable(_ error: HTTPParserError) -> String {
        "the request is not valid HTTP/1.1: \(String(reflecting: error))"
    }

    /// Why request `head` is refused, if it is, for what RFC 9112 has a server answer `400` to
    /// whatever the request: none, or more than one, `Host` field (none is allowed in HTTP/1.0;
    /// with two, which names the target would depend on who reads it), as nginx and Go's server
    /// refuse them (section 3.2); and a `Transfer-Encoding` whose last coding is not `chunked`, as
    /// the body's length then cannot be known (section 6.3).
    static func headProblem(_ head: HTTPRequestHead) -> String? {
        switch head.headers["Host"].count {
        case 1: break
        case 0 where head.version == .http1_0: break
        case 0: return "an HTTP/1.1 request must have a Host field"
        case let count: return "a request must have one Host field, not \(count)"
        }
        let codings = head.headers["Transfer-Encoding"]
        guard let last = codings.last?.split(separator: ",").last?.trimmingCharacters(in: .whitespaces) ?? codings.last,
            last.lowercased() != "chunked"
        else { return nil }
        return "the last transfer coding of a request must be chunked (its body's length cannot be known), not '\(last)'"
    }

    /// Takes `error`, caught while the door waits for a request: a request that NIO's decoder
    /// cannot parse is answered `400` with the decoder's reason (what follows it cannot be framed,
    /// so the connection closes); any other error goes on to Hummingbird's handlers.
    private func caughtBetweenRequests(_ error: any Error, context: ChannelHandlerContext) {
        if let error = error as? HTTPParserError {
            self.refuse(context, .badRequest, reason: Self.unparsable(error))
        } else {
            self.handOn(context, parts: [], error: error)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.receive(Self.unwrapInboundIn(data), context: context)
    }

    private func receive(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch self.state {
        case .waiting:
            if case .head(let head) = part, let problem = Self.headProblem(head) {
                return self.refuse(context, .badRequest, reason: problem)
            }
            guard case .head(let head) = part, !self.handsOnNextRequest, let authorizer = self.hub.mercureRoute.withLockedValue({ $0 }) else {
                self.handsOnNextRequest = false
                self.handOn(context, parts: [part])
                return
            }
            if Self.opens(head) {
                self.state = .opening([part], authorizer)  // opened once the request has come whole
            } else if Self.takes(head, configuration: authorizer.configuration) {
                self.state = .reading([part], authorizer)
            } else {
                self.handOn(context, parts: [part])
            }
        case .opening(var parts, let authorizer):
            self.state = .closed  // (so that `parts` is not copied)
            parts.append(part)
            self.state = .opening(parts, authorizer)
            // (A subscribe request has no body: its end follows its head.)
            if case .end = part, parts.count == 2, case .head(let head) = parts[0] {
                self.open(head, authorizer: authorizer, context: context)
            }
        case .reading(var parts, let authorizer):
            self.state = .closed
            parts.append(part)
            guard case .end = part else {
                self.state = .reading(parts, authorizer)
                return
            }
            self.publish(parts, authorizer: authorizer, context: context)
        case .publishing(let parts, var next):
            self.state = .closed
            next.append(part)
            self.state = .publishing(parts, next: next)
        case .streaming, .handedOn, .closed:
            break  // an event stream's client has nothing more to say
        }
    }

    /// Whether the door opens the subscription of request `head`: a `GET` of the hub's URL,
    /// with no body, keeping the connection open.
    private static func opens(_ head: HTTPRequestHead) -> Bool {
        guard head.method == .GET, Self.isHubURL(head), Self.keepsConnection(head) else { return false }
        let headers = head.headers
        if let length = headers.field("Content-Length"), length != "0" { return false }
        return !headers.contains(name: "Transfer-Encoding")
    }

    /// Whether the door takes publish request `head`: a `POST` to the hub's URL with one
    /// `Content-Length` the configuration allows, from no browser (no `Origin`: CORS and the
    /// cookie are the route's), expecting no `100 Continue`, keeping the connection open.
    private static func takes(_ head: HTTPRequestHead, configuration: Hub.HTTPConfiguration) -> Bool {
        guard head.method == .POST, Self.isHubURL(head), Self.keepsConnection(head) else { return false }
        let headers = head.headers
        let lengths = headers["Content-Length"]
        guard lengths.count == 1, let length = headers.field("Content-Length").flatMap({ Int($0) }), length <= configuration.maximumPublishSize
        else { return false }
        return !headers.contains(name: "Transfer-Encoding") && !headers.contains(name: "Origin") && !headers.contains(name: "Expect")
    }

    /// Whether the connection stays open after the response to `head`: HTTP/1.1 without
    /// `Connection: close` (the codec closes it after an HTTP/1.0 request's).
    private static func keepsConnection(_ head: HTTPRequestHead) -> Bool {
        head.version != .http1_0 && head.isKeepAlive
    }

    /// Whether `head`'s target, in origin form, is the hub's URL.
    private static func isHubURL(_ head: HTTPRequestHead) -> Bool {
        head.uri.utf8.split(separator: UInt8(ascii: "?"), maxSplits: 1, omittingEmptySubsequences: false).first?
            .elementsEqual("/.well-known/mercure".utf8) == true
    }

    private func open(
        _ head: HTTPRequestHead,
        authorizer: Authorizer,
        context: ChannelHandlerContext
    ) {
        guard let request = try? Request(head: HubHTTP1Codec.request(head), body: RequestBody(buffer: ByteBuffer())) else {
            self.opened(nil, for: head, configuration: authorizer.configuration, context: context)  // Hummingbird answers it
            return
        }
        let hub = self.hub
        let openedNow: (Subscription, HTTPFields)?
        do {
            openedNow = try hub.openSubscriptionNow(request, authorizer: authorizer, configuration: authorizer.configuration)
        } catch {
            self.opened(nil, for: head, configuration: authorizer.configuration, context: context)  // the route answers
            return
        }
        if let openedNow {
            self.opened(openedNow, for: head, configuration: authorizer.configuration, context: context)
            return
        }
        let door = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        // Else a task of its own for the check and the replay: it ends when they are done.
        Task {
            let opened = try? await hub.openSubscription(request, authorizer: authorizer, configuration: authorizer.configuration)
            door.eventLoop.execute {
                let (door, context) = door.value
                door.opened(opened, for: head, configuration: authorizer.configuration, context: context)
            }
        }
    }

    private func opened(
        _ opened: (Subscription, HTTPFields)?,
        for head: HTTPRequestHead,
        configuration: Hub.HTTPConfiguration,
        context: ChannelHandlerContext
    ) {
        guard case .opening(let parts, _) = self.state else {
            opened?.0.finish()  // the connection closed meanwhile
            return
        }
        let pipeline = context.pipeline.syncOperations
        // The reader, if it read the request (and holds what came since).
        let reader = try? pipeline.handler(type: RequestReader.self)
        guard let (events, fields) = opened else {
            // The route answers it, with its reason: from the request's bytes, through NIO's
            // decoder, if the reader read it.
            if let reader, reader.isSubscribing, let readerContext = try? pipeline.context(handler: reader) {
                self.state = .waiting
                reader.subscriptionFailed(readerContext)
            } else {
                self.handOn(context, parts: parts)
            }
            return
        }
        self.state = .streaming
        self.handedOn.succeed(nil)
        self.requestTimer?.cancel()
        self.requestTimer = nil
        var headers = fields
        headers[.date] = Self.currentDate()
        if let serverName = self.serverName { headers[.server] = serverName }
        // The connection closes when the stream ends (it serves no other request): said now, so
        // that a client that keeps connections for its next requests does not send one on it.
        headers[.connection] = "close"
        if let origin = head.headers.field("Origin"), configuration.corsOrigins.contains(origin) {
            headers.allowCORS(from: origin)
        }
        // The connection waits for no more requests: the door, the reader and NIO's HTTP handlers,
        // if there, leave it.
        let channel = context.channel
        let held = self.readHeld || reader?.readHeld == true
        do {
            try pipeline.addHandler(EventStreamConnection(events: events))
            var handlers: [any RemovableChannelHandler] = [self]
            if let reader { handlers.append(reader) }
            if self.hasHTTPCodec {
                // The decoder last: what it still decodes goes to the stream, which drops it.
                handlers.append(try pipeline.handler(type: HTTPResponseEncoder.self))
                handlers.append(try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self))
            }
            for handler in handlers { pipeline.removeHandler(handler, promise: nil) }
        } catch {
            channel.close(promise: nil)  // (never: the door set the pipeline up)
            return
        }
        // The body is the stream to the close: no chunks (see `Self.streamHead`).
        var start = Self.streamHead(headers, allocator: channel.allocator)
        start.writeBytes(ServerSentEvent.encodedComment())
        channel.write(start, promise: nil)
        for buffer in events.replay { channel.write(buffer, promise: nil) }
        channel.flush()
        self.hub.writeDirectly(events, to: channel, noDelay: self.noDelay, configuration: configuration) {
            // Once what was written is sent.
            channel.writeAndFlush(ByteBuffer()).assumeIsolated().whenComplete { _ in
                channel.close(promise: nil)
            }
        }
        if held { channel.read() }
    }

    /// Checks and stores the update of a publish request read whole, `parts`, in a task of its own.
    private func publish(_ parts: [HTTPServerRequestPart], authorizer: Authorizer, context: ChannelHandlerContext) {
        guard case .head(let head) = parts.first else {
            self.handOn(context, parts: parts)  // (never: the decoder gives the head first)
            return
        }
        self.state = .publishing(parts, next: [])
        self.answersAtOnce(context)
        var form = ByteBuffer()
        for case .body(var buffer) in parts {
            if form.readableBytes == 0 { form = buffer } else { form.writeBuffer(&buffer) }
        }
        let door = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let answer: @Sendable (String?) -> Void = { id in
            door.eventLoop.execute {
                let (door, context) = door.value
                door.published(id, context: context)
            }
        }
        self.hub.publish(
            form: form,
            authorization: head.headers["Authorization"].count == 1 ? head.headers.field("Authorization") : nil,
            contentType: head.headers.field("Content-Type"),
            authorizer: authorizer,
            request: { try HubHTTP1Codec.request(head) },
            answer: answer
        )
    }

    /// Answers a publish with its update's ID, or hands it on, when it failed, to the route, which
    /// answers with the reason.
    private func published(_ id: String?, context: ChannelHandlerContext) {
        guard case .publishing(let parts, let next) = self.state else { return }  // the connection closed meanwhile
        guard let id else {
            self.handOn(context, parts: parts + next)
            return
        }
        self.state = .waiting
        // Through NIO's encoder, which pairs each response with its request's method (past it, its
        // list of methods grew by one a publish, and a later `HEAD` request got its response's body).
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(id.utf8.count))
        headers.add(name: "Date", value: Self.currentDate())
        if let serverName = self.serverName { headers.add(name: "Server", value: serverName) }
        if self.closesAfterPublish { headers.add(name: "Connection", value: "close") }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: id)))), promise: nil)
        if self.closesAfterPublish {
            self.state = .closed
            self.handedOn.succeed(nil)  // the server's task for the connection ends
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        // (A future only when the connection may close after it.)
        let ended = self.inputClosed || self.caughtError != nil ? context.writeAndFlush(Self.wrapOutboundOut(.end(nil))) : nil
        if ended == nil { context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil) }
        self.waitForRequest(context)
        // The next requests, as if read now (a request handed on takes the rest with it).
        self.unread = next[...]
        while let part = self.unread.popFirst() { self.receive(part, context: context) }
        if case .waiting = self.state, let error = self.caughtError {
            self.caughtBetweenRequests(error, context: context)  // as when it comes alone
        }
        self.resumeReading(context)
        guard let ended else { return }
        switch self.state {
        case .waiting, .reading, .opening:
            // Nothing more comes whole: the client's last request was answered (or the one
            // being read failed to parse).
            ended.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .publishing, .streaming, .handedOn, .closed:
            break  // the next answer looks again; a connection handed on was told
        }
    }

    /// The head of a `200 OK` stream with `fields`, as bytes. Written by the door rather than NIO's
    /// encoder, which frames an HTTP/1.1 body without a length as chunks: the stream's connection
    /// closes at its end (`Connection: close`), which is all the framing it needs (RFC 9112,
    /// section 6.3). Without chunks each event is its bytes alone, for the hub to write and every
    /// client to read.
    static func streamHead(_ fields: HTTPFields, allocator: ByteBufferAllocator) -> ByteBuffer {
        var head = allocator.buffer(capacity: 256)
        head.writeStaticString("HTTP/1.1 200 OK\r\n")
        for field in fields {
            head.writeString(field.name.rawName)
            head.writeStaticString(": ")
            head.writeString(field.value)
            head.writeStaticString("\r\n")
        }
        head.writeStaticString("\r\n")
        return head
    }

    /// Turns `TCP_NODELAY` on, if it is off, for a connection that is not a subscription's (a
    /// publisher's, or one handed on): its answers leave at once, as on NIO's servers, rather than
    /// wait for the client to acknowledge the last one when it sent requests in a row.
    func answersAtOnce(_ context: ChannelHandlerContext) {
        guard !self.noDelay else { return }
        self.noDelay = true
        try? context.channel.syncOptions?.setOption(.tcpOption(.tcp_nodelay), value: 1)
    }

    /// Adds NIO's decoder and encoder ahead of the door, unless they are there: at the first
    /// request the reader does not take, or for an answer the door writes as NIO's parts.
    func addHTTPCodec(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        guard !self.hasHTTPCodec else { return }
        try pipeline.configureHTTPServerPipeline(
            position: .before(self),
            withPipeliningAssistance: false,
            withErrorHandling: false,
            withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: self.limits
        )
        self.hasHTTPCodec = true
    }

    /// The `Date` header of the last response, and its second: one for every connection, so that
    /// a new one does not format it again (a door of its own each was about 1 % of the server's CPU
    /// a subscriber's connection).
    private static let date = NIOLockedValueBox((second: -1, text: ""))

    /// The `Date` header for a response now.
    static func currentDate() -> String {
        let second = Int(Date().timeIntervalSince1970)
        return Self.date.withLockedValue { date in
            if second != date.second { date = (second, Self.httpDate(second)) }
            return date.text
        }
    }

    /// `secondsSince1970` as an HTTP date: `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func httpDate(_ secondsSince1970: Int) -> String {
        let days = secondsSince1970 / 86_400
        let seconds = secondsSince1970 % 86_400
        // The civil date of a day count (Howard Hinnant's `civil_from_days`), from March 1st of year 0.
        let shifted = days + 719_468
        let era = shifted / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        let month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]  // 1970-01-01 was a Thursday
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(weekdays[days % 7]), \(two(day)) \(months[month - 1]) \(year) "
            + "\(two(seconds / 3_600)):\(two(seconds / 60 % 60)):\(two(seconds % 60)) GMT"
    }

    /// Adds the codec and Hummingbird's handlers behind the door, passes them what was read, and
    /// leaves.
    private func handOn(_ context: ChannelHandlerContext, parts: [HTTPServerRequestPart], error: (any Error)? = nil) {
        self.answersAtOnce(context)
        let parts = parts + self.unread
        let error = error ?? self.caughtError
        self.unread = []
        self.caughtError = nil
        let pipeline = context.pipeline.syncOperations
        let connection: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>
        do {
            try self.addHTTPCodec(to: pipeline)
            try pipeline.addHandler(BadRequestAnswer(serverName: self.serverName))
            try pipeline.addHandler(HubHTTP1Codec())
            try pipeline.addHandlers(self.http1.additionalChannelHandlers())
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: self.http1.idleTimeout.map { .init($0) }, logger: self.logger))
            if let timeout = self.requestTimeout {
                try pipeline.addHandler(HandedOnRequestTimeout(timeout: TimeAmount(timeout), due: self.requestDue))
            }
            connection = try NIOAsyncChannel(wrappingChannelSynchronously: context.channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        } catch {
            self.state = .closed
            self.handedOn.succeed(nil)
            context.close(promise: nil)
            return
        }
        self.state = .handedOn
        self.requestTimer?.cancel()
        self.handedOn.succeed(connection)
        for part in parts { context.fireChannelRead(Self.wrapInboundOut(part)) }
        if !parts.isEmpty { context.fireChannelReadComplete() }
        if let error { context.fireErrorCaught(error) }
        if self.inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        self.resumeReading(context)
        pipeline.removeHandler(context: context, promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if self.holdsReads {
            self.readHeld = true  // until the door knows who reads, or has answered
        } else {
            context.read()
        }
    }

    /// Whether reads wait: while a subscription is checked or a publish stored, once more than the
    /// request has come (the next requests of a pipelining client). Reading on until then spares
    /// each subscriber's connection, and a publisher's per publish, two changes of what the event
    /// loop waits for.
    private var holdsReads: Bool {
        switch self.state {
        case .opening(let parts, _): parts.count > 2  // a subscribe request is a head and an end
        case .publishing(_, let next): !next.isEmpty
        case .waiting, .streaming, .reading, .handedOn, .closed: false
        }
    }

    /// Reads on, if a read was held back.
    private func resumeReading(_ context: ChannelHandlerContext) {
        guard self.readHeld, !self.holdsReads else { return }
        self.readHeld = false
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event as? ChannelEvent == .inputClosed, case .publishing = self.state {
            self.inputClosed = true  // the requests read whole since are answered too
        } else if event is ChannelShouldQuiesceEvent || event as? ChannelEvent == .inputClosed, self.isPublishing {
            self.closesAfterPublish = true  // answer the publish under way first
        } else if event is ChannelShouldQuiesceEvent || event as? ChannelEvent == .inputClosed {
            // Stopping, or the client closed its side: nothing more comes of a connection the
            // door still has.
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private var isPublishing: Bool {
        switch self.state {
        case .reading, .publishing: true
        case .waiting, .opening, .streaming, .handedOn, .closed: false
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch self.state {
        case .waiting:
            self.caughtBetweenRequests(error, context: context)
        case .publishing:
            // The requests read whole before it are answered first (see `published`).
            if self.caughtError == nil { self.caughtError = error }
        case .opening, .reading, .streaming, .handedOn, .closed:
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch self.state {
        case .waiting, .opening, .reading, .publishing:
            self.handedOn.succeed(nil)
        case .streaming, .handedOn, .closed:
            break  // a subscription ends with its connection (see `Hub.writeDirectly`)
        }
        self.state = .closed
        self.requestTimer?.cancel()
        context.fireChannelInactive()
    }
}

/// What is left of a connection once the door has answered a subscription: the stream is the whole
/// response, so the HTTP handlers and the door leave the pipeline (an idle subscriber then costs
/// about 3 KB less) and this takes their place. The hub writes the events already framed: through
/// its context over TLS, else straight to the channel (see ``ChannelSink``). Whatever the client
/// still sends is dropped; when the server stops, the stream ends (then the connection closes);
/// when the client closes its side, so does the connection.
final class EventStreamConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    let events: Subscription

    init(events: Subscription) {
        self.events = events
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // An event stream's client has nothing more to say (and what the decoder still had, on
        // its way out, is not bytes: it is not unwrapped).
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            self.events.finish()  // the stream ends, then the connection closes
        } else if event as? ChannelEvent == .inputClosed {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension HTTPHeaders {
    /// The value of the first field `name`, without the spaces and tabs at its end: NIO's decoder
    /// keeps them, where RFC 9110 (section 5.5) has a parser drop them, as HTTP types do for the
    /// routes (and the ``RequestReader`` does).
    func field(_ name: String) -> String? {
        guard let value = self.first(name: name) else { return nil }
        guard value.last == " " || value.last == "\t" else { return value }
        var trimmed = value[...]
        while trimmed.last == " " || trimmed.last == "\t" { trimmed = trimmed.dropLast() }
        return String(trimmed)
    }
}

/// On a connection handed on to Hummingbird, answers as the door does a request that NIO's decoder
/// cannot parse, or that it refuses for its head (see ``HubDoor/headProblem(_:)``): with a `400`
/// that says why (Hummingbird's has no body), once every request before it is answered; then the
/// connection closes, and what came after the request is not read. A request under way that turns
/// out not to parse (its body, say) is left to Hummingbird, whose answer to it may have begun.
final class BadRequestAnswer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests begun and not answered yet.
    private var unanswered = 0
    /// The reason of the request refused, once there is one: it is answered when the requests
    /// before it are, and nothing more is read.
    private var refusal: String?
    /// The `Server` header of the answer, if any.
    private let serverName: String?

    init(serverName: String?) {
        self.serverName = serverName
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.refusal == nil else { return }
        if case .head(let head) = Self.unwrapInboundIn(data) {
            if let problem = HubDoor.headProblem(head) {
                return self.refuse(context, reason: problem)
            }
            self.unanswered += 1
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = Self.unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
        self.unanswered -= 1
        context.write(data, promise: promise)
        if self.unanswered == 0, let refusal = self.refusal { self.answer(context, refusal) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard self.refusal == nil else { return }  // what comes after a refused request is not read
        guard self.unanswered == 0, let error = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        self.refuse(context, reason: HubDoor.unparsable(error))
    }

    /// Refuses the request just read for `reason`: now, or once the requests before it are answered.
    private func refuse(_ context: ChannelHandlerContext, reason: String) {
        self.refusal = reason
        if self.unanswered == 0 { self.answer(context, reason) }
    }

    private func answer(_ context: ChannelHandlerContext, _ reason: String) {
        self.unanswered = 1  // the refusal's end, which does not pass here: no second answer
        HubDoor.writeRefusal(context, .badRequest, reason: reason, serverName: self.serverName)
    }
}

/// The door's request timeout on a connection handed on to Hummingbird: the connection closes when
/// it has waited `timeout` for a whole request since the last answer ended. A response under way is
/// not timed, and neither is a subscription's stream that the route answered (its end is held back:
/// see ``ResponseEndHolder``), which Hummingbird's own `idleTimeout` would close.
final class HandedOnRequestTimeout: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let timeout: TimeAmount
    /// When the request the connection waits for must have come whole.
    private var due: NIODeadline
    /// Requests begun and not answered yet.
    private var unanswered = 0
    /// Whether a request has begun and not come whole.
    private var reading = false
    private var timer: Scheduled<Void>?

    /// - Parameter due: When the request the door was waiting for must have come whole.
    init(timeout: TimeAmount, due: NIODeadline) {
        self.timeout = timeout
        self.due = due
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.check(context, at: self.due)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head:
            self.unanswered += 1
            self.reading = true
        case .body:
            break
        case .end:
            self.reading = false
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = Self.unwrapOutboundIn(data) {
            self.unanswered -= 1
            if self.unanswered == 0 { self.due = context.eventLoop.now + self.timeout }
        }
        context.write(data, promise: promise)
    }

    private func check(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timer = nil
            self.closeIfTheRequestIsLate(context)
        }
    }

    private func closeIfTheRequestIsLate(_ context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        let streaming = (try? context.pipeline.syncOperations.handler(type: ResponseEndHolder.self))?.isHolding == true
        guard self.reading || (self.unanswered == 0 && !streaming) else {
            // An answer under way: look again later. A stream's end, held back below, does not
            // pass here: the wait for the next request counts from the last look at the stream.
            if streaming { self.due = now + self.timeout }
            self.check(context, at: now + self.timeout)
            return
        }
        if now < self.due {
            self.check(context, at: self.due)
        } else {
            context.close(promise: nil)
        }
    }
}
