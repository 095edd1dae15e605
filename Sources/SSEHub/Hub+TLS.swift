//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import HummingbirdCore
public import HummingbirdHTTP2
import Logging
import NIOCore
import NIOHTTP2
public import NIOSSL
import NIOTLS

extension Hub {
    /// An HTTPS server for Hummingbird, with HTTP/2 (and HTTP/1.1 for clients that do not offer it),
    /// for an app that serves the hub over TLS, once ``addRoutes(to:configuration:)`` has added the
    /// hub's routes: use it in place of `.http2Upgrade(tlsConfiguration:configuration:)`.
    ///
    /// Over HTTP/1.1 the hub's door answers its requests, as on
    /// ``http1Server(configuration:requestTimeout:)``; over HTTP/2, Hummingbird's channel serves the
    /// streams. A client has `requestTimeout` to finish the TLS handshake, and then the same as on
    /// the plain server: over HTTP/1.1, to send each whole request, counted from the handshake or
    /// from the last answer; over HTTP/2, to open a stream, counted from the handshake or from the
    /// moment it has none left, and to send each stream's whole request. Responses being written,
    /// and subscriptions' streams, are not timed.
    ///
    /// - Parameters:
    ///   - tlsConfiguration: The server's certificate chain and private key, and the rest of its TLS
    ///     settings. The application protocols are set to HTTP/2 and HTTP/1.1.
    ///   - configuration: The configuration of Hummingbird's HTTP/2 channel, and in its
    ///     `streamConfiguration` of the HTTP/1 channel. Leave out the latter's `idleTimeout`, which
    ///     would close the subscriptions that the routes answer over HTTP/1.1. (The HTTP/2
    ///     `idleTimeout` sends a client `GOAWAY`, but does not close the connection of a client that
    ///     does not answer; the request timeout does.)
    ///   - requestTimeout: The timeout; `nil` for none.
    /// - Throws: When the TLS configuration cannot be used (a private key that does not match the
    ///   certificate, say).
    public func http2Server(
        tlsConfiguration: TLSConfiguration,
        configuration: HTTP2UpgradeChannel.Configuration = .init(),
        requestTimeout: Duration? = .seconds(60)
    ) throws -> HTTPServerBuilder {
        let context = try Self.tlsContext(tlsConfiguration)
        return HTTPServerBuilder { responder in
            self.tlsChannel(context: context, configuration: configuration, requestTimeout: requestTimeout, responder: responder)
        }
    }

    /// The TLS context of a server with HTTP/2 and HTTP/1.1.
    static func tlsContext(_ tlsConfiguration: TLSConfiguration) throws -> NIOSSLContext {
        var tlsConfiguration = tlsConfiguration
        tlsConfiguration.applicationProtocols = ["h2", "http/1.1"]
        return try NIOSSLContext(configuration: tlsConfiguration)
    }

    /// The connections of ``http2Server(tlsConfiguration:configuration:requestTimeout:)``.
    func tlsChannel(
        context: NIOSSLContext,
        configuration: HTTP2UpgradeChannel.Configuration,
        requestTimeout: Duration?,
        serverName: String? = nil,
        responder: @escaping HTTPChannelHandler.Responder
    ) -> HubTLSChannel {
        var timed = configuration
        if let requestTimeout {
            let timeout = TimeAmount(requestTimeout)
            let handlers = timed.streamConfiguration.additionalChannelHandlers
            timed.streamConfiguration.additionalChannelHandlers = {
                // Set up when a stream opens, and its request may begin.
                handlers() + [HandedOnRequestTimeout(timeout: timeout, due: .now() + timeout), HTTP2StreamOpen()]
            }
        }
        return HubTLSChannel(
            context: context,
            http1: HubHTTP1Channel(
                hub: self,
                http1: HTTP1Channel(responder: responder, configuration: configuration.streamConfiguration),
                requestTimeout: requestTimeout,
                serverName: serverName
            ),
            http2: HTTP2Channel(responder: responder, configuration: timed),
            handshakeTimeout: requestTimeout.map { TimeAmount($0) }
        )
    }
}

/// A TLS connection, with a time limit on its handshake, then HTTP/2 or, through the hub's door,
/// HTTP/1.1: the protocol that the client and the server agree on in the handshake (ALPN).
struct HubTLSChannel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        let negotiated: EventLoopFuture<NIONegotiatedHTTPVersion<HubHTTP1Channel.Value, HTTP2Channel.Value>>
    }

    let context: NIOSSLContext
    let http1: HubHTTP1Channel
    let http2: HTTP2Channel
    /// `nil` for no limit.
    let handshakeTimeout: TimeAmount?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Over TLS, the client's `close_notify` ends what it sends. With the remote half-closure
            // the listener allows, NIO's TLS handler does not end its own close when that comes:
            // every connection the server closed (a stream ended, a refusal, a graceful stop)
            // stayed open until the handler's timeout (5 s by default). So a TLS client cannot
            // half-close its connection and still be answered; HTTP clients close them whole.
            try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: false)
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(PlainHTTPRefusal(serverName: self.http1.serverName))
            try pipeline.addHandler(NIOSSLServerHandler(context: self.context))
            if let handshakeTimeout = self.handshakeTimeout {
                // Just after the TLS handler, the first to see the handshake's end.
                try pipeline.addHandler(TLSHandshakeTimeout(timeout: handshakeTimeout))
            }
            let negotiation = NIOTypedApplicationProtocolNegotiationHandler<
                NIONegotiatedHTTPVersion<HubHTTP1Channel.Value, HTTP2Channel.Value>
            > { result in
                switch result {
                case .negotiated("h2"):
                    return self.http2.setup(channel: channel, logger: logger).map { .http2($0) }
                case .negotiated("http/1.1"), .fallback:
                    return self.http1.setup(channel: channel, logger: logger).map { .http1_1($0) }
                case .negotiated:
                    // A protocol the server did not offer: the handshake cannot have agreed on it.
                    channel.close(promise: nil)
                    return channel.eventLoop.makeFailedFuture(NIOHTTP2Errors.invalidALPNToken())
                }
            }
            try pipeline.addHandler(negotiation)
            return Value(channel: channel, negotiated: negotiation.protocolNegotiationResult)
        }
    }

    func handle(value: Value, logger: Logger) async {
        // Fails when the connection closes before the handshake ends.
        guard let negotiated = try? await value.negotiated.get() else { return }
        switch negotiated {
        case .http1_1(let http1):
            await self.http1.handle(value: http1, logger: logger)
        case .http2(let http2):
            await self.http2.handle(value: http2, logger: logger)
        }
    }
}

/// Answers a client that speaks plain HTTP to the TLS port, as nginx does: a `400` that says to
/// use `https://`, written as it is, then the connection closes. Otherwise the TLS handler fails
/// the handshake, and a client says only that the server closed the connection (curl: "Empty
/// reply from server"). It looks at the connection's first bytes, and leaves: a TLS connection
/// begins with a handshake record (byte 0x16), an HTTP/1 request with its method's capital letters.
final class PlainHTTPRefusal: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let serverName: String?
    /// Whether the client was answered: what else it sends is dropped.
    private var answered = false

    init(serverName: String?) {
        self.serverName = serverName
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        guard !self.answered, let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        guard first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z") else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        self.answered = true
        var answer = context.channel.allocator.buffer(capacity: 256)
        HubDoor.writeTextAnswer(
            "400 Bad Request",
            body: "this port speaks HTTPS: use an https:// URL\n",
            closes: true,
            serverName: self.serverName,
            into: &answer
        )
        // Straight to the socket, past the TLS handler.
        context.writeAndFlush(Self.wrapOutboundOut(answer)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// Closes a connection whose TLS handshake has not ended within the timeout. Once it has ended
/// (and the connection is set up for the protocol agreed on), leaves the pipeline, and over HTTP/2
/// puts an ``HTTP2IdleTimeout`` in it.
final class TLSHandshakeTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) {
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // On this event, the negotiation handler next sets the connection up for the protocol
        // agreed on, at once.
        context.fireUserInboundEventTriggered(event)
        guard case .handshakeCompleted(let negotiated) = event as? TLSUserEvent else { return }
        let pipeline = context.pipeline.syncOperations
        if negotiated == "h2", let http2 = try? pipeline.handler(type: NIOHTTP2Handler.self) {
            try? pipeline.addHandler(HTTP2IdleTimeout(timeout: self.timeout), position: .after(http2))
        }
        pipeline.removeHandler(context: context, promise: nil)
    }
}

/// Closes an HTTP/2 connection that has had no stream open for the timeout. (Hummingbird's
/// `idleTimeout` sends `GOAWAY` and a ping, and closes once the client answers the ping: a client
/// that does not answer keeps the connection.) Its streams tell it when they open and close
/// (``HTTP2StreamOpen``): NIO's HTTP/2 handler tells its stream events only to its multiplexer.
final class HTTP2IdleTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private var openStreams = 0
    /// When the connection closes unless a stream opens first.
    private var due = NIODeadline.distantFuture
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.due = context.eventLoop.now + self.timeout
        self.check(context, at: self.due)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    func streamOpened() {
        self.openStreams += 1
    }

    func streamClosed(at now: NIODeadline) {
        self.openStreams -= 1
        if self.openStreams == 0 { self.due = now + self.timeout }
    }

    /// One timer for the connection's life: when it runs, it looks again at the deadline that the
    /// streams have moved.
    private func check(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            let now = context.eventLoop.now
            if self.openStreams > 0 {
                self.check(context, at: now + self.timeout)
            } else if now < self.due {
                self.check(context, at: self.due)
            } else {
                context.close(promise: nil)
            }
        }
    }
}

/// In each HTTP/2 stream's pipeline: counts the stream as open in its connection's
/// ``HTTP2IdleTimeout`` until it closes.
final class HTTP2StreamOpen: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private var connection: HTTP2IdleTimeout?

    func handlerAdded(context: ChannelHandlerContext) {
        // A stream's channel is its connection's child, on the connection's event loop.
        self.connection = try? context.channel.parent?.pipeline.syncOperations.handler(type: HTTP2IdleTimeout.self)
        self.connection?.streamOpened()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.connection?.streamClosed(at: context.eventLoop.now)
        self.connection = nil
    }
}
