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
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import Testing

@testable import SSEHub

/// The hub's own server (`Hub.server`), on live connections: the hub's requests at the door, the
/// app's through its routes, over plain HTTP and TLS, and its graceful stop.
@Suite("Hub's own server")
struct HubServerTests {
    /// Runs the server of a hub's routes and an app's (`GET /hello`) until `body` returns, then
    /// stops it gracefully and waits until it has returned; `body` gets the port and the hub. Over
    /// TLS, the TLS handler waits 30 s for a client's `close_notify` once the server closes a
    /// connection, and the server must have stopped within 15 s: only if every connection it
    /// closes closes at once.
    func withServer(tls: Bool = false, _ body: @escaping @Sendable (_ port: Int, _ hub: Hub) async throws -> Void) async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        let router = Router(context: HubRequestContext.self)
        try await hub.addRoutes(to: router, configuration: HubTLSTests.http)
        router.get("/hello") { _, _ in "hi" }
        let listening = NIOLockedValueBox<Int?>(nil)
        let server = try hub.server(
            router.buildResponder(),
            host: "127.0.0.1",
            port: 0,
            tlsConfiguration: tls ? try HubTLSTests.serverTLS().closingAfter(.seconds(30)) : nil,
            serverName: "test",
            onServerRunning: { channel in listening.withLockedValue { $0 = channel.localAddress?.port } },
            logger: Logger(label: "hub")
        )
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [], logger: Logger(label: "services"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for _ in 0..<500 where listening.withLockedValue({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
            let port = try #require(listening.withLockedValue { $0 })
            do {
                try await body(port, hub)
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            tasks.addTask {
                try await Task.sleep(for: .seconds(15))
                throw ServerDidNotStop()
            }
            try await tasks.next()  // the server's, unless it did not stop in time (then it stops at 30 s)
            tasks.cancelAll()
        }
    }

    struct ServerDidNotStop: Error, CustomStringConvertible {
        var description: String { "the server did not stop within 15 s of its graceful stop" }
    }

    /// Waits, for at most 10 s, until `received` contains `expected`.
    func wait(for expected: String, in received: ReceivedText) async throws {
        for _ in 0..<1_000 where !received.text.contains(expected) { try await Task.sleep(for: .milliseconds(10)) }
    }

    /// Sends on `channel` a publish at the door of update `one` (`data: x`) on topic `t`.
    func publishOne(on channel: any Channel) async throws {
        let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: HubHTTPTests.secret)
        let form = "topic=t&id=one&data=x"
        try await channel.writeAndFlush(
            ByteBuffer(
                string: "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                    + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(form.utf8.count)\r\n\r\n\(form)"
            )
        )
    }

    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func theHubsRequestsAndTheAppsAreServed(tls: Bool) async throws {
        try await self.withServer(tls: tls) { port, hub in
            let alpn = tls ? ["http/1.1"] : nil
            let (subscriber, stream) = try await connectRaw(to: port, alpn: alpn)
            try await subscriber.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: ":\n", in: stream)
            #expect(stream.text.hasPrefix("HTTP/1.1 200 OK\r\n"))

            // A publish at the door, then the app's route and a subscription the route refuses,
            // on the same connection (handed on after the publish).
            let (client, answers) = try await connectRaw(to: port, alpn: alpn)
            try await self.publishOne(on: client)
            try await self.wait(for: "\r\n\r\none", in: answers)
            try await self.wait(for: "id: one\ndata: x\n\n", in: stream)
            #expect(stream.text.contains("id: one\ndata: x\n\n"), "the subscriber has the update")
            try await client.writeAndFlush(ByteBuffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: "\r\n\r\nhi", in: answers)
            let hello = answers.text.components(separatedBy: "\r\n\r\none").last ?? ""
            #expect(hello.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(hello)")
            #expect(hello.contains("Server: test\r\n") && hello.contains("Date: "))
            try await client.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: "missing 'topic'", in: answers)
            #expect(answers.text.contains("HTTP/1.1 400 Bad Request\r\n"))
            try await client.close()
            try await subscriber.close()

            guard tls else { return }
            // HTTP/2, which the app's channel serves.
            var configuration = HTTPClient.Configuration()
            configuration.tlsConfiguration = .makeClientConfiguration()
            configuration.tlsConfiguration?.certificateVerification = .none  // the fixture is self-signed
            let http2 = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            do {
                let response = try await http2.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/hello"), timeout: .seconds(10))
                #expect(response.version == .http2)
                #expect(String(buffer: try await response.body.collect(upTo: 1 << 10)) == "hi")
            } catch {
                try await http2.shutdown()
                throw error
            }
            try await http2.shutdown()
        }
    }

    /// The answers the door writes itself name the server as the app's do: a subscription's
    /// stream, a publish's answer (the request reader's, and the door's to a request NIO's decoder
    /// read), and the refusal of a request that does not parse (at the door, and on a connection
    /// handed on to the app); over TLS too, in HTTP/1.1.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func theDoorsAnswersNameTheServer(tls: Bool) async throws {
        try await self.withServer(tls: tls) { port, _ in
            /// What a new connection gets for `requests`, each after the first sent once the app
            /// has answered `hi`, once it contains `expected`.
            func answer(to requests: String..., containing expected: String) async throws -> String {
                let (channel, received) = try await connectRaw(to: port, alpn: tls ? ["http/1.1"] : nil)
                for (index, request) in requests.enumerated() {
                    if index > 0 { try await self.wait(for: "\r\n\r\nhi", in: received) }
                    try await channel.writeAndFlush(ByteBuffer(string: request))
                }
                try await self.wait(for: expected, in: received)
                channel.close(promise: nil)  // (unless the server closed it)
                return received.text
            }
            let stream = try await answer(to: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n", containing: ":\n")
            #expect(stream.hasPrefix("HTTP/1.1 200 OK\r\n") && stream.contains("\r\nServer: test\r\n"), "\(stream)")

            let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: HubHTTPTests.secret)
            for target in ["", "?a=query"] {  // the reader takes the first; the door the second, from NIO's decoder
                let form = "topic=t&data=x"
                let published = try await answer(
                    to: "POST /.well-known/mercure\(target) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                        + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(form.utf8.count)\r\n\r\n\(form)",
                    containing: "\r\n\r\nurn:uuid:"
                )
                #expect(published.hasPrefix("HTTP/1.1 200 OK\r\n") && published.contains("\r\nServer: test\r\n"), "\(published)")
            }

            let refusedAtTheDoor = try await answer(to: "NOT HTTP\r\n\r\n", containing: "not valid HTTP/1.1")
            #expect(refusedAtTheDoor.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && refusedAtTheDoor.contains("\r\nServer: test\r\n"))
            // After the app's answer, on the connection the door handed on.
            let refusedOnceHandedOn = try await answer(to: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "NOT HTTP\r\n\r\n", containing: "not valid HTTP/1.1")
            let refusal = refusedOnceHandedOn.components(separatedBy: "\r\n\r\nhi").last ?? ""
            #expect(refusal.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && refusal.contains("\r\nServer: test\r\n"), "\(refusedOnceHandedOn)")
        }
    }

    /// A client that sends its requests and then closes its side of the connection gets them all
    /// answered before the server closes (the connection takes a half-closure).
    @Test(.timeLimit(.minutes(1)))
    func requestsSentBeforeTheClientsEndAreAnswered() async throws {
        try await self.withServer { port, hub in
            let (channel, received) = try await connectRaw(to: port)
            try await self.publishOne(on: channel)
            try await channel.writeAndFlush(ByteBuffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await channel.close(mode: .output)
            for _ in 0..<1_000 where channel.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!channel.isActive, "the server closes once it has answered")
            #expect(received.text.hasPrefix("HTTP/1.1 200 OK\r\n") && received.text.hasSuffix("\r\n\r\nhi"), "\(received.text)")
            #expect(received.text.contains("\r\n\r\none"))
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one"])
        }
    }

    /// An HTTP/1.1 request with no `Host`, any request with two (RFC 9112, section 3.2), or with a
    /// `Transfer-Encoding` that does not end with `chunked` (section 6.3), is answered `400` with
    /// the reason, then the connection closes and nothing after the request is read: at the door,
    /// on a connection handed on to the app, and pipelined behind a request the app answers first.
    /// An HTTP/1.0 request may have no `Host`.
    @Test(.timeLimit(.minutes(1)))
    func aRequestWithoutOneHostOrWithABodyOfUnknownLengthIsRefused() async throws {
        try await self.withServer { port, hub in
            /// What a new connection gets for `request` once the server closed it (or ten seconds went by).
            func answer(to request: String) async throws -> String {
                let (channel, received) = try await connectRaw(to: port)
                try await channel.writeAndFlush(ByteBuffer(string: request))
                for _ in 0..<1_000 where channel.isActive { try await Task.sleep(for: .milliseconds(10)) }
                #expect(!channel.isActive, "the server closed the connection: \(request.debugDescription)")
                channel.close(promise: nil)
                return received.text
            }
            let none = "an HTTP/1.1 request must have a Host field\n"
            let two = "a request must have one Host field, not 2\n"
            let gzip = "the last transfer coding of a request must be chunked (its body's length cannot be known), not 'gzip'\n"
            let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: HubHTTPTests.secret)
            let publish = "POST /.well-known/mercure HTTP/1.1\r\nAuthorization: Bearer \(token)\r\nContent-Length: 16\r\n"
            let later = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"  // never read
            for (request, reason) in [
                ("GET /.well-known/mercure?topic=t HTTP/1.1\r\n\r\n", none),
                ("GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", two),
                (publish + "Host: x\r\nhost: x\r\n\r\ntopic=t&data=one", two),
                (publish + "\r\ntopic=t&data=one", none),
                ("GET /hello HTTP/1.1\r\n\r\n", none),
                ("GET /hello HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n", two),
                ("POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", gzip),
                ("GET /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", gzip),
            ] {
                // (Bytes after a head with such a coding, a `Content-Length` with it, or `chunked`
                // before another coding make NIO's decoder fail at once, with a reason of its own:
                // "unknown (http_parser error)".)
                let answer = try await answer(to: reason == gzip ? request : request + later)
                #expect(answer.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(request.debugDescription): \(answer)")
                #expect(answer.hasSuffix("\r\n\r\n\(reason)"), "answered once, with the reason: \(answer)")
            }
            #expect(try await hub.store.updates(through: .max).isEmpty, "nothing published")
            #expect(hub.subscriberCount == 0)

            // Once the app has the connection: after its answer, and pipelined behind a request.
            let (channel, received) = try await connectRaw(to: port)
            try await channel.writeAndFlush(ByteBuffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: "\r\n\r\nhi", in: received)
            try await channel.writeAndFlush(ByteBuffer(string: later + "GET /hello HTTP/1.1\r\n\r\n" + later))
            for _ in 0..<1_000 where channel.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!channel.isActive)
            let answers = received.text.components(separatedBy: "\r\n\r\nhi")
            #expect(answers.count == 3 && answers.dropLast().allSatisfy { $0.hasPrefix("HTTP/1.1 200 OK\r\n") }, "\(received.text)")
            #expect(answers.last?.hasPrefix("HTTP/1.1 400 Bad Request\r\n") == true, "then the refusal: \(received.text)")
            #expect(received.text.hasSuffix("\r\n\r\n\(none)"))

            let (handedOn, handedOnAnswers) = try await connectRaw(to: port)
            try await handedOn.writeAndFlush(ByteBuffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: "\r\n\r\nhi", in: handedOnAnswers)
            try await handedOn.writeAndFlush(ByteBuffer(string: "POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"))
            for _ in 0..<1_000 where handedOn.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(handedOnAnswers.text.hasSuffix("\r\n\r\n\(gzip)"), "\(handedOnAnswers.text)")

            let (old, oldAnswer) = try await connectRaw(to: port)
            try await old.writeAndFlush(ByteBuffer(string: "GET /hello HTTP/1.0\r\n\r\n"))
            for _ in 0..<1_000 where old.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(oldAnswer.text.hasPrefix("HTTP/1.0 200 OK\r\n") && oldAnswer.text.hasSuffix("\r\n\r\nhi"), "\(oldAnswer.text)")
        }
    }

    /// Plain HTTP to the TLS port is answered, as by nginx, with a `400` that says to use
    /// `https://` (not a failed handshake, which a client reports as an empty reply), once, from
    /// the request's first bytes, and the connection closes; TLS clients are served as before.
    @Test(.timeLimit(.minutes(1)))
    func plainHTTPToTheTLSPortIsToldToUseHTTPS() async throws {
        try await self.withServer(tls: true) { port, _ in
            let (plain, answer) = try await connectRaw(to: port)
            try await plain.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.1\r\n"))
            try await Task.sleep(for: .milliseconds(50))
            try? await plain.writeAndFlush(ByteBuffer(string: "Host: x\r\n\r\n"))  // (the server may have answered and closed)
            try await self.wait(for: "use an https:// URL\n", in: answer)
            for _ in 0..<500 where plain.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!plain.isActive, "closed after the answer")
            #expect(answer.text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(answer.text)")
            #expect(answer.text.contains("\r\nServer: test\r\n"))
            #expect(answer.text.hasSuffix("\r\n\r\nthis port speaks HTTPS: use an https:// URL\n"), "answered once: \(answer.text)")

            let (secure, stream) = try await connectRaw(to: port, alpn: ["http/1.1"])
            try await secure.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: ":\n", in: stream)
            #expect(stream.text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(stream.text)")
            try await secure.close()
        }
    }

    /// Without TLS the listener leaves `TCP_NODELAY` off, which a subscriber's connection keeps
    /// (the default configuration); the door turns it on for a publisher's connection and for one
    /// it hands on to the app. Over TLS (on for HTTP/2) the door turns it off for a subscriber.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func onlyASubscribersConnectionLetsTheKernelMergeWrites(tls: Bool) async throws {
        try await self.withServer(tls: tls) { port, _ in
            let alpn = tls ? ["http/1.1"] : nil
            let (subscriber, stream) = try await connectRaw(to: port, alpn: alpn)
            try await subscriber.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: ":\n", in: stream)
            let (publisher, answers) = try await connectRaw(to: port, alpn: alpn)
            try await self.publishOne(on: publisher)
            try await self.wait(for: "\r\n\r\none", in: answers)
            // The update went through the subscriber's direct writes, set up after the option.
            try await self.wait(for: "id: one\ndata: x\n\n", in: stream)
            let (app, hello) = try await connectRaw(to: port, alpn: alpn)
            try await app.writeAndFlush(ByteBuffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: "\r\n\r\nhi", in: hello)
            for (channel, noDelay) in [(subscriber, false), (publisher, true), (app, true)] {
                let option = try #require(
                    HubHTTPTests.noDelayOption(ofSocketFrom: channel.localAddress!.port!, to: port),
                    "the server's end of the connection is in this process"
                )
                #expect((option != 0) == noDelay, "\(noDelay ? "on" : "off") expected")
            }
            for channel in [subscriber, publisher, app] { try await channel.close() }
        }
    }

    /// Stopping gracefully ends the subscriptions' streams and closes the connections the app
    /// has, then the server returns.
    @Test(.timeLimit(.minutes(1))) func aGracefulStopEndsStreamsAndClosesConnections() async throws {
        let connections = NIOLockedValueBox<[(any Channel, ReceivedText)]>([])
        try await self.withServer { port, hub in
            let (subscriber, stream) = try await connectRaw(to: port)
            try await subscriber.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: ":\n", in: stream)
            let (idle, answers) = try await connectRaw(to: port)
            try await idle.writeAndFlush(ByteBuffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
            try await self.wait(for: "\r\n\r\nhi", in: answers)
            #expect(hub.subscriberCount == 1)
            connections.withLockedValue { $0 = [(subscriber, stream), (idle, answers)] }
        }
        // The server has returned.
        let (subscriber, stream) = try #require(connections.withLockedValue { $0.first })
        let (idle, _) = try #require(connections.withLockedValue { $0.last })
        for _ in 0..<500 where subscriber.isActive || idle.isActive { try await Task.sleep(for: .milliseconds(10)) }
        #expect(stream.text.hasSuffix("\r\n\r\n:\n"), "nothing after the stream's last bytes")
        #expect(!subscriber.isActive && !idle.isActive, "the connections closed: the end of a stream")
    }
}

extension TLSConfiguration {
    /// This configuration with `timeout` for the peer's `close_notify` once a connection closes.
    func closingAfter(_ timeout: TimeAmount) -> TLSConfiguration {
        var configuration = self
        configuration.shutdownTimeout = timeout
        return configuration
    }
}
