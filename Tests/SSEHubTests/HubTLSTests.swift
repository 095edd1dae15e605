//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing

@testable import SSEHub

/// The hub's HTTPS server (`Hub.http2Server`) and its request timeout, on a live server.
@Suite("Hub over TLS")
struct HubTLSTests {
    /// Long enough for a loaded machine's handshakes and requests to come in time: the timeout
    /// counts from the connection, handshake included (with 1 s, two suite runs on a busy machine
    /// failed on a connection closed early).
    static let requestTimeout = Duration.seconds(2)

    /// Serves `hub`'s routes over TLS, with the test certificate; `body` gets the server's port.
    func serve(_ hub: Hub, _ body: @escaping @Sendable (_ port: Int) async throws -> Void) async throws {
        let tls = try Self.serverTLS()
        let router = Router(context: HubRequestContext.self)
        try await hub.addRoutes(to: router, configuration: Self.http)
        let app = Application(
            router: router,
            server: try hub.http2Server(tlsConfiguration: tls, requestTimeout: Self.requestTimeout),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            logger: Logger(label: "hub")
        )
        try await app.test(.live) { client in
            try await body(client.port!)
        }
    }

    /// The hub's routes: anonymous subscribers, publishers with tokens signed with
    /// `HubHTTPTests.secret`, no heartbeat.
    static var http: Hub.HTTPConfiguration {
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        http.publisherKey = JWTKey(algorithm: .hs256, key: HubHTTPTests.secret)
        http.heartbeat = nil
        return http
    }

    /// A server's TLS configuration, with the test certificate (`Tests/Fixtures/tls`).
    static func serverTLS() throws -> TLSConfiguration {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tls").path
        return TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(fixtures + "/cert.pem").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: fixtures + "/key.pem", format: .pem))
        )
    }

    /// Waits, for at most 5 s, until `channel` is closed.
    func waitForClose(_ channel: any Channel) async throws {
        for _ in 0..<500 where channel.isActive { try await Task.sleep(for: .milliseconds(10)) }
    }

    @Test func aConnectionThatDoesNotFinishItsHandshakeInTimeIsClosed() async throws {
        try await self.serve(try await Hub(store: InMemoryEventStore())) { port in
            let (silent, _) = try await connectRaw(to: port)
            let (halfway, _) = try await connectRaw(to: port)
            try await halfway.writeAndFlush(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))  // a record begun
            try await self.waitForClose(silent)
            try await self.waitForClose(halfway)
            #expect(!silent.isActive, "the server closed the connection that sent nothing")
            #expect(!halfway.isActive, "and the one whose handshake stopped")
            try? await silent.close()
            try? await halfway.close()
        }
    }

    @Test func overHTTP1AnIdleConnectionIsClosedButNotAStream() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        try await self.serve(hub) { port in
            let (idle, answer) = try await connectRaw(to: port, alpn: ["http/1.1"])
            try await idle.writeAndFlush(ByteBuffer(string: "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n"))
            let (streaming, stream) = try await connectRaw(to: port, alpn: ["http/1.1"])
            try await streaming.writeAndFlush(
                ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
            )
            try await expectIdleClosedButNotTheStream(
                hub,
                idle: (idle, answer),
                streaming: (streaming, stream),
                chunked: false,
                timeout: Self.requestTimeout
            )
        }
    }

    @Test func overHTTP1PublishesOnAKeptAliveConnectionAreAnswered() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: HubHTTPTests.secret)
        try await self.serve(hub) { port in
            let (publisher, answers) = try await connectRaw(to: port, alpn: ["http/1.1"])
            for (id, data) in [("a", "first"), ("b", "second")] {
                let form = "topic=t&id=\(id)&data=\(data)"
                try await publisher.writeAndFlush(ByteBuffer(string:
                    "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                        + "Content-Type: application/x-www-form-urlencoded\r\n"
                        + "Content-Length: \(form.utf8.count)\r\n\r\n\(form)"
                ))
            }
            let answered = { answers.text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count - 1 }
            for _ in 0..<500 where answered() < 2 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(answered() == 2, "\(answers.text)")
            #expect(answers.text.hasSuffix("\r\n\r\nb"), "the second answer is the second ID: \(answers.text)")
            let (replay, _) = try await hub.subscribe([TopicSelector("t")], lastEventID: "earliest")
            #expect(try events(in: try await take(2, from: replay)).map(\.data) == ["first", "second"])
            try? await publisher.close()
        }
    }

    @Test func overHTTP2AConnectionWithNoStreamIsClosedButNotOneThatStreams() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        try await self.serve(hub) { port in
            let (idle, _) = try await connectRaw(to: port, alpn: ["h2"])
            var configuration = HTTPClient.Configuration()
            configuration.tlsConfiguration = .makeClientConfiguration()
            configuration.tlsConfiguration?.certificateVerification = .none
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            do {
                let response = try await client.execute(
                    HTTPClientRequest(url: "https://127.0.0.1:\(port)/.well-known/mercure?topic=t"),
                    timeout: .seconds(10)
                )
                #expect(response.version == .http2)
                try await self.waitForClose(idle)
                #expect(!idle.isActive, "closed once it had no stream for the timeout")
                try await Task.sleep(for: Self.requestTimeout)  // two timeouts for the stream
                // Several at once, which a drain may write together.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for n in 0..<20 {
                        group.addTask { try await hub.publish(Update(id: "e\(n)", topics: ["t"], data: "x")) }
                    }
                    try await group.waitForAll()
                }
                var text = ""
                for try await chunk in response.body {
                    text += String(buffer: chunk)
                    if text.components(separatedBy: "data: x\n\n").count > 20 { break }
                }
                let (replay, _) = try await hub.subscribe([TopicSelector("t")], lastEventID: "earliest")
                let history = try events(in: try await take(20, from: replay)).map { "id: \($0.id!)\ndata: x\n\n" }
                #expect(text == ":\n" + history.joined(), "every event in history order, past the timeout")
            } catch {
                try await client.shutdown()
                throw error
            }
            try await client.shutdown()
            try? await idle.close()
        }
    }
}
