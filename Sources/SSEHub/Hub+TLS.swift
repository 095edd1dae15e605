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
    /// Hummingbird's HTTPS server, with HTTP/2 (and HTTP/1.1 for clients that do not offer it), for
    /// an app that serves the hub over TLS; with a request timeout, which Hummingbird's
    /// `.http2Upgrade(tlsConfiguration:configuration:)` does not have.
    ///
    /// A client has `requestTimeout` to finish the TLS handshake, and then the same as on
    /// ``http1Server(configuration:requestTimeout:)``: over HTTP/1.1, to send each whole request,
    /// counted from the handshake or from the last answer; over HTTP/2, to open a stream, counted
    /// from the handshake or from the moment it has none left, and to send each stream's whole
    /// request. Responses being written, and subscriptions' streams, are not timed.
    ///
    /// - Parameters:
    ///   - tlsConfiguration: The server's certificate chain and private key, and the rest of its TLS
    ///     settings. The application protocols are set to HTTP/2 and HTTP/1.1.
    ///   - configuration: The configuration of Hummingbird's HTTP/2 channel. Leave out the
    ///     `idleTimeout` of its `streamConfiguration`, which would close the HTTP/1.1 subscriptions.
    ///     (Its own `idleTimeout` sends an HTTP/2 client `GOAWAY`, but does not close the connection
    ///     of a client that does not answer; the request timeout does.)
    ///   - requestTimeout: The timeout; `nil` for none.
    /// - Throws: When the TLS configuration cannot be used (a private key that does not match the
    ///   certificate, say).
    public static func http2Server(
        tlsConfiguration: TLSConfiguration,
        configuration: HTTP2UpgradeChannel.Configuration = .init(),
        requestTimeout: Duration? = .seconds(60)
    ) throws -> HTTPServerBuilder {
        // Refused now, rather than by the first connection.
        _ = try NIOSSLContext(configuration: tlsConfiguration)
        var configuration = configuration
        if let requestTimeout {
            let timeout = TimeAmount(requestTimeout)
            let handlers = configuration.streamConfiguration.additionalChannelHandlers
            configuration.streamConfiguration.additionalChannelHandlers = {
                // Set up when the request may begin: the handshake is done, or the stream open.
                handlers() + [HandedOnRequestTimeout(timeout: timeout, due: .now() + timeout), HTTP2StreamOpen()]
            }
        }
        let http2 = configuration
        return HTTPServerBuilder { responder in
            let tls = try HTTP2UpgradeChannel(
                tlsConfiguration: tlsConfiguration,
                configuration: http2,
                responder: responder
            )
            return TLSHandshakeTimedChannel(tls: tls, timeout: requestTimeout.map { TimeAmount($0) })
        }
    }
}

/// Hummingbird's HTTPS channel, with a time limit on the TLS handshake.
struct TLSHandshakeTimedChannel: ServerChildChannel {
    let tls: HTTP2UpgradeChannel
    /// `nil` for no limit.
    let timeout: TimeAmount?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP2UpgradeChannel.Value> {
        self.tls.setup(channel: channel, logger: logger).flatMapThrowing { value in
            // Just after the TLS handler, the first to see the handshake's end. (On the channel's
            // event loop, before the connection's first read.)
            if let timeout = self.timeout {
                let pipeline = channel.pipeline.syncOperations
                let tls = try pipeline.handler(type: NIOSSLServerHandler.self)
                try pipeline.addHandler(TLSHandshakeTimeout(timeout: timeout), position: .after(tls))
            }
            return value
        }
    }

    func handle(value: HTTP2UpgradeChannel.Value, logger: Logger) async {
        await self.tls.handle(value: value, logger: logger)
    }
}

/// Closes a connection whose TLS handshake has not ended within the timeout. Once it has ended,
/// leaves the pipeline, and over HTTP/2 puts an ``HTTP2IdleTimeout`` in it.
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
        // Hummingbird sets the connection up for the protocol chosen, at once, on this event.
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
/// ``HTTP2IdleTimeout`` until it closes. (Over HTTP/1.1, where the connection has none, it does
/// nothing.)
final class HTTP2StreamOpen: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private var connection: HTTP2IdleTimeout?

    func handlerAdded(context: ChannelHandlerContext) {
        // A stream's channel is a connection's child, on its event loop; an HTTP/1.1 connection's
        // parent is the server's channel.
        guard let connection = context.channel.parent, connection.parent != nil, connection.eventLoop.inEventLoop else {
            return
        }
        self.connection = try? connection.pipeline.syncOperations.handler(type: HTTP2IdleTimeout.self)
        self.connection?.streamOpened()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.connection?.streamClosed(at: context.eventLoop.now)
        self.connection = nil
    }
}
