//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers
package import NIOCore
package import NIOHTTP1
import NIOHTTPCompression
import NIOPosix

/// A real HTTP/1.1 server on 127.0.0.1 whose answers a test scripts, request by request.
/// Every connection is closed after its response.
package final class TestServer: Sendable {
    package struct Request: Sendable {
        package let method: HTTPMethod
        package let uri: String
        package let headers: HTTPHeaders
        package let body: String
    }

    /// Writes one response.
    package struct Responder: Sendable {
        package let outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>

        package func head(_ status: HTTPResponseStatus = .ok, _ headers: HTTPHeaders = ["Content-Type": "text/event-stream"])
            async throws
        {
            var headers = headers
            headers.replaceOrAdd(name: "Connection", value: "close")
            try await self.outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
        }

        package func write(_ text: String) async throws {
            try await self.outbound.write(.body(.byteBuffer(ByteBuffer(string: text))))
        }

        package func end() async throws {
            try await self.outbound.write(.end(nil))
        }

        /// A whole event stream response: the head, `text` and the end.
        package func stream(_ text: String) async throws {
            try await self.head()
            try await self.write(text)
            try await self.end()
        }
    }

    /// Answers request number `index` (from 0).
    package typealias Handler = @Sendable (_ request: Request, _ index: Int, _ responder: Responder) async throws -> Void

    package let port: Int
    private let requestLog = NIOLockedValueBox<[Request]>([])
    private let task: NIOLockedValueBox<Task<Void, Never>?> = NIOLockedValueBox(nil)
    private let serverChannel: any Channel

    package var url: String { "http://127.0.0.1:\(self.port)" }
    package var requests: [Request] { self.requestLog.withLockedValue { $0 } }

    private init(port: Int, serverChannel: any Channel) {
        self.port = port
        self.serverChannel = serverChannel
    }

    /// Starts a server; `compress` adds gzip for clients that accept it.
    package static func start(compress: Bool = false, handler: @escaping Handler) async throws -> TestServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    if compress {
                        try channel.pipeline.syncOperations.addHandler(HTTPResponseCompressor())
                    }
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel
                    )
                }
            }
        let server = TestServer(port: channel.channel.localAddress!.port!, serverChannel: channel.channel)
        let task = Task<Void, Never> {
            _ = try? await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { await server.serve(connection, handler: handler) }
                    }
                }
            }
        }
        server.task.withLockedValue { $0 = task }
        return server
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, handler: Handler) async {
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let requestHead):
                    head = requestHead
                case .body(var chunk):
                    body.writeBuffer(&chunk)
                case .end:
                    guard let head else { return }
                    let request = Request(method: head.method, uri: head.uri, headers: head.headers, body: String(buffer: body))
                    let index = self.requestLog.withLockedValue { log in
                        log.append(request)
                        return log.count - 1
                    }
                    try await handler(request, index, Responder(outbound: outbound))
                    return
                }
            }
        }
    }

    /// Stops accepting and drops every connection, cancelling the handlers.
    package func shutdown() async {
        self.task.withLockedValue { $0 }?.cancel()
        try? await self.serverChannel.close()
    }
}

/// Runs `body` with a server, and shuts it down afterwards whatever happens.
package func withTestServer<T>(
    compress: Bool = false,
    handler: @escaping TestServer.Handler,
    _ body: (TestServer) async throws -> T
) async throws -> T {
    let server = try await TestServer.start(compress: compress, handler: handler)
    do {
        let result = try await body(server)
        await server.shutdown()
        return result
    } catch {
        await server.shutdown()
        throw error
    }
}
