//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
public import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
public import Logging
public import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTP2
import NIOPosix
public import NIOSSL
public import ServiceLifecycle

extension Hub {
    /// The hub's own server for an app's routes, `responder` (a router to which
    /// ``addRoutes(to:configuration:)`` added the hub's): the server of
    /// ``http1Server(configuration:requestTimeout:)``, or with `tlsConfiguration` of
    /// ``http2Server(tlsConfiguration:configuration:requestTimeout:)``, without Hummingbird's task
    /// for each connection. A connection whose requests the hub's door answers (its subscribers,
    /// its publishers) has no task at all; one it hands on to the app has one, as on Hummingbird's
    /// server. Opening a subscriber's connection then takes about a fifth less server CPU (see
    /// docs/PERFORMANCE.md).
    ///
    /// Run it as a service, in a `ServiceGroup` (which stops it gracefully on the signals it is
    /// given): it stops taking connections, asks each one to end (subscriptions' streams end, a
    /// publish under way is answered), and returns once they have closed.
    ///
    /// - Parameters:
    ///   - responder: The app's routes, with the hub's.
    ///   - host: The address to listen on.
    ///   - port: The port to listen on; 0 for any free one (see `onServerRunning`).
    ///   - tlsConfiguration: For HTTPS, with HTTP/2: as in ``http2Server(tlsConfiguration:configuration:requestTimeout:)``.
    ///   - requestTimeout: As in ``http1Server(configuration:requestTimeout:)``.
    ///   - serverName: The `Server` header of the server's responses, if any: the app's, and those
    ///     the hub's door writes (a subscription's stream, a publish's answer, a refusal).
    ///   - onServerRunning: Called with the listening channel once the server listens.
    ///   - logger: The server's logger, and the requests'.
    /// - Throws: When the TLS configuration cannot be used.
    public func server<Responder: HTTPResponder>(
        _ responder: Responder,
        host: String,
        port: Int,
        tlsConfiguration: TLSConfiguration? = nil,
        requestTimeout: Duration? = .seconds(60),
        serverName: String? = nil,
        onServerRunning: (@Sendable (any Channel) async -> Void)? = nil,
        logger: Logger
    ) throws -> any Service where Responder.Context == HubRequestContext {
        // As Hummingbird's application answers a request with its responder.
        let respond: HTTPChannelHandler.Responder = { request, writer, channel in
            let context = HubRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error  // the channel answers 400
            } catch {
                logger.debug("unanswered error", metadata: ["error": "\(String(reflecting: error))"])
                response = Response(status: .internalServerError)
            }
            response.headers[.date] = HubDoor.currentDate()
            if let serverName { response.headers[.server] = serverName }
            try await writer.write(response: response.head, body: response.body)
        }
        if let tlsConfiguration {
            let child = self.tlsChannel(
                context: try Self.tlsContext(tlsConfiguration),
                configuration: .init(),
                requestTimeout: requestTimeout,
                serverName: serverName,
                responder: respond
            )
            return HubServer(child: child, host: host, port: port, onServerRunning: onServerRunning, logger: logger)
        }
        let child = HubHTTP1Channel(
            hub: self,
            http1: HTTP1Channel(responder: respond),
            requestTimeout: requestTimeout,
            acceptedWithNoDelay: false,
            serverName: serverName
        )
        return HubServer(child: child, host: host, port: port, onServerRunning: onServerRunning, logger: logger)
    }
}

/// A connection's setup whose connections may need no task: those the hub's door answered.
protocol HubChildChannel: ServerChildChannel {
    /// Whether the listener gives its connections `TCP_NODELAY` on (see
    /// ``HubHTTP1Channel/acceptedWithNoDelay``).
    var acceptedWithNoDelay: Bool { get }

    /// Calls `body` once it is known that the connection of `value` needs
    /// ``handle(value:logger:)``; never if it does not.
    func whenItNeedsHandling(_ value: Value, _ body: @escaping @Sendable () -> Void)
}

extension HubHTTP1Channel: HubChildChannel {
    func whenItNeedsHandling(_ value: Value, _ body: @escaping @Sendable () -> Void) {
        value.handedOn.whenSuccess { connection in
            if connection != nil { body() }
        }
    }
}

extension HubTLSChannel: HubChildChannel {
    /// On: HTTP/2, which the connection may speak, sends at once.
    var acceptedWithNoDelay: Bool { true }

    func whenItNeedsHandling(_ value: Value, _ body: @escaping @Sendable () -> Void) {
        value.negotiated.whenSuccess { negotiated in
            switch negotiated {
            case .http1_1(let value): self.http1.whenItNeedsHandling(value, body)
            case .http2: body()
            }
        }
    }
}

/// Listens, sets each connection up, and runs ``HubChildChannel/handle(value:logger:)`` for those
/// that need it, each in a task; stops gracefully (see ``Hub/server(_:host:port:tlsConfiguration:requestTimeout:serverName:onServerRunning:logger:)``).
struct HubServer<Child: HubChildChannel>: Service {
    let child: Child
    let host: String
    let port: Int
    let onServerRunning: (@Sendable (any Channel) async -> Void)?
    let logger: Logger
    /// Connections the kernel may hold for the hub to accept: as many as it allows, which is
    /// `net.core.somaxconn` on Linux (4 096 by default since Linux 5.4; an administrator can raise
    /// it). When every subscriber reconnects at once (the hub restarted, a proxy dropped them), a
    /// shorter queue drops their SYNs, and each client dropped waits 1 s, then 3 s, to try again:
    /// with 256, 5 000 clients connecting at once to a hub in memory all had their answer after
    /// 2.1 to 3.3 s (by round); with this one, 0.33 to 0.35 s (see docs/PERFORMANCE.md).
    static var backlog: Int32 { 65_535 }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let quiescing = ServerQuiescingHelper(group: group)
        let (connections, newConnection) = AsyncStream.makeStream(of: Child.Value.self)
        let child = self.child
        let logger = self.logger
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: Self.backlog)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: self.child.acceptedWithNoDelay ? 1 : 0)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                    try channel.pipeline.syncOperations.addHandler(AcceptFailureLog(logger: logger))
                }
            }
            .childChannelInitializer { channel in
                // Set here rather than as a child channel option, which NIO applies through a
                // future for each connection (1.9 % of the server's CPU opening idle subscribers).
                do {
                    try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                return child.setup(channel: channel, logger: logger).map { value in
                    child.whenItNeedsHandling(value) { newConnection.yield(value) }
                }
            }
            .bind(host: self.host, port: self.port)
            .get()
        await self.onServerRunning?(listener)
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { tasks in
                for await value in connections {
                    tasks.addTask { await child.handle(value: value, logger: logger) }
                }
            }
        } onGracefulShutdown: {
            // Stops listening, tells every connection to end, and waits until they have closed.
            let closed = listener.eventLoop.makePromise(of: Void.self)
            quiescing.initiateShutdown(promise: closed)
            closed.futureResult.whenComplete { _ in newConnection.finish() }
        }
        // Cancelled (the service group stopped without a graceful shutdown): stop listening.
        try? await listener.close()
    }
}

/// Logs why the listener cannot accept a connection, at most once every 10 s. Most often it is out
/// of open files: new connections then wait in the backlog, unanswered, until some close (NIO tries
/// to accept again every second), which an operator would not see otherwise.
final class AcceptFailureLog: ChannelInboundHandler {
    typealias InboundIn = any Channel

    private let logger: Logger
    private var lastLogged: NIODeadline?

    init(logger: Logger) {
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let now = NIODeadline.now()
        if self.lastLogged.map({ now - $0 >= .seconds(10) }) ?? true {
            self.lastLogged = now
            let outOfFiles = (error as? IOError).map { $0.errnoCode == EMFILE || $0.errnoCode == ENFILE } ?? false
            self.logger.error(
                outOfFiles
                    ? "cannot accept connections: out of open files; new ones wait until some close (raise the limit of open files)"
                    : "cannot accept a connection",
                metadata: ["error": "\(error)"]
            )
        }
        context.fireErrorCaught(error)
    }
}
