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
import HummingbirdCore
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SSEClient
import Testing

@testable import SSEHub

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The Mercure endpoints on a live server, with a real HTTP client.
@Suite("Hub over HTTP")
struct HubHTTPTests {
    static let secret = "a test secret that is long enough"

    func withHub(
        heartbeat: KeepAlive? = KeepAlive(),
        maximumPublishSize: Int = 1 << 20,
        anonymous: Bool = true,
        publishOrigins: [String] = [],
        corsOrigins: [String] = [],
        tracksSubscriptions: Bool = false,
        dashboard: Hub.Dashboard? = nil,
        _ body: @escaping @Sendable (_ base: String) async throws -> Void
    ) async throws {
        var configuration = Hub.Configuration()
        configuration.tracksSubscriptions = tracksSubscriptions
        let hub = try await Hub(store: InMemoryEventStore(), configuration: configuration)
        var http = Hub.HTTPConfiguration()
        http.heartbeat = heartbeat
        http.maximumPublishSize = maximumPublishSize
        http.publisherKey = JWTKey(algorithm: .hs256, key: Self.secret)
        http.subscriberKey = http.publisherKey
        http.allowsAnonymousSubscribers = anonymous
        http.publishOrigins = publishOrigins
        http.corsOrigins = corsOrigins
        http.dashboard = dashboard
        try await self.serve(hub, http) { port in
            try await body("http://127.0.0.1:\(port)/.well-known/mercure")
        }
    }

    /// Serves `hub`'s routes on a live server, in the request context `herald serve` uses (so
    /// subscribers' events go straight to their channels), and with its server, whose door answers
    /// subscriptions (`door: false`: Hummingbird's own, where the route answers them); `body` gets
    /// the server's port.
    func serve(
        _ hub: Hub,
        _ http: Hub.HTTPConfiguration,
        door: Bool = true,
        requestTimeout: Duration = .seconds(60),
        _ body: @escaping @Sendable (_ port: Int) async throws -> Void
    ) async throws {
        let router = Router(context: HubRequestContext.self)
        try await hub.addRoutes(to: router, configuration: http)
        let app = Application(
            router: router,
            server: door ? hub.http1Server(requestTimeout: requestTimeout) : .http1(),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            logger: Logger(label: "hub")
        )
        try await app.test(.live) { client in
            try await body(client.port!)
        }
    }

    /// POSTs a form with a publisher token that may publish anywhere; returns the status and the body.
    func publish(
        _ base: String,
        _ form: String,
        contentType: String = "application/x-www-form-urlencoded",
        headers: HTTPHeaders? = nil
    ) async throws -> (HTTPResponseStatus, String) {
        var request = HTTPClientRequest(url: base)
        request.method = .POST
        if let headers {
            request.headers = headers
        } else {
            let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: Self.secret)
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
        }
        request.headers.add(name: "Content-Type", value: contentType)
        request.body = .bytes(ByteBuffer(string: form))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (response.status, String(buffer: try await response.body.collect(upTo: 1 << 16)))
    }

    /// Reads a subscription's raw stream until `done` says it has enough (at most 10 s).
    func subscription(
        _ url: String,
        headers: HTTPHeaders = [:],
        until done: @escaping @Sendable (String) -> Bool
    ) async throws -> (HTTPHeaders, String) {
        var request = HTTPClientRequest(url: url)
        request.headers = headers
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        var text = ""
        if response.status == .ok {
            let deadline = ContinuousClock.now + .seconds(10)
            for try await chunk in response.body {
                text += String(buffer: chunk)
                if done(text) || ContinuousClock.now > deadline { break }
            }
        } else {
            text = String(buffer: try await response.body.collect(upTo: 1 << 16))
        }
        return (response.headers, text)
    }

    /// The default configuration, changed by `change`.
    static func http(_ change: (inout Hub.HTTPConfiguration) -> Void) -> Hub.HTTPConfiguration {
        var http = Hub.HTTPConfiguration()
        change(&http)
        return http
    }

    @Test(arguments: [
        (http { $0.corsOrigins = ["https://app.example.com/"] }, "corsOrigins: 'https://app.example.com/' is not an origin"),
        (http { $0.corsOrigins = ["https://app.example.com", "HTTPS://app.example.com"] }, "corsOrigins: 'HTTPS://app.example.com' is not an origin"),
        (http { $0.publishOrigins = ["https://app.example.com:443"] }, "publishOrigins: 'https://app.example.com:443' is not an origin"),
        (http { $0.publishOrigins = ["*"] }, "publishOrigins: '*' is not taken"),
        (http { $0.heartbeat = KeepAlive(interval: .zero) }, "heartbeat's interval must be positive"),
        (http { $0.writeTimeout = .milliseconds(-1) }, "writeTimeout must be positive"),
        (http { $0.maximumPublishSize = 0 }, "maximumPublishSize must be at least 1 (it is 0)"),
        (http { $0.maximumTopicsPerSubscription = 0 }, "maximumTopicsPerSubscription must be at least 1 (it is 0)"),
    ])
    func aSettingTheRoutesCannotWorkWithIsRefusedWithItsName(_ http: Hub.HTTPConfiguration, _ reason: String) async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        await #expect {
            try await hub.addRoutes(to: Router(), configuration: http)
        } throws: { error in
            (error as? Hub.ConfigurationError)?.description.contains(reason) == true
        }
    }

    @Test func originsAsBrowsersSendThemAreTaken() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.corsOrigins = ["https://app.example.com", "http://localhost:8080", "https://[::1]:8443", "http://127.0.0.1"]
        http.publishOrigins = http.corsOrigins
        try await hub.addRoutes(to: Router(), configuration: http)
    }

    @Test(arguments: [(0, 1 << 20, "subscriberQueueLimit must be at least 1 (it is 0)"), (1_000, -1, "subscriberQueueBytes must be at least 1 (it is -1)")])
    func aHubWithAQueueLimitThatIsNotPositiveIsRefused(updates: Int, bytes: Int, reason: String) async throws {
        var configuration = Hub.Configuration()
        configuration.subscriberQueueLimit = updates
        configuration.subscriberQueueBytes = bytes
        await #expect {
            _ = try await Hub(store: InMemoryEventStore(), configuration: configuration)
        } throws: { error in
            (error as? Hub.ConfigurationError)?.description == reason
        }
    }

    @Test func publishAndSubscribe() async throws {
        try await self.withHub { base in
            let source = EventSource(url: base + "?topic=" + "https://example.com/books/{id}".addingPercentEncoding)
            var iterator = source.makeAsyncIterator()
            let received = Task { try await iterator.next() }
            for _ in 0..<500 where source.state != .open { try await Task.sleep(for: .milliseconds(10)) }
            let (status, id) = try await self.publish(base, "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=line+1%0Aline+2&type=book&retry=700")
            #expect(status == .ok)
            #expect(id.hasPrefix("urn:uuid:"))
            let event = try #require(try await received.value)
            #expect(event.id == id)
            #expect(event.type == "book")
            #expect(event.data == "line 1\nline 2")
            #expect(event.retry == .milliseconds(700))
            source.close()
        }
    }

    @Test func theDashboardIsOnePageWithOnlyTheTokensItWasGiven() async throws {
        @Sendable func origin(_ base: String) -> String { String(base.dropLast("/.well-known/mercure".count)) + "/" }
        try await self.withHub { base in
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: origin(base)), timeout: .seconds(10))
            #expect(response.status == .notFound, "no dashboard unless configured")
        }
        let dashboard = Hub.Dashboard(publisherToken: "abc.DEF-_.ghi</script><b>", subscriberToken: nil)
        try await self.withHub(dashboard: dashboard) { base in
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: origin(base)), timeout: .seconds(10))
            let page = String(buffer: try await response.body.collect(upTo: 1 << 20))
            #expect(response.status == .ok)
            #expect(response.headers.first(name: "Content-Type") == "text/html; charset=utf-8")
            #expect(response.headers.first(name: "Content-Security-Policy")?.contains("connect-src 'self'") == true)
            #expect(page.contains(#"{publisherToken: "abc.DEF-_.ghiscriptb", subscriberToken: null}"#))
            #expect(page.contains("new EventSource("))
            #expect(!page.contains("src=") && !page.contains("<link") && !page.contains("@import"), "no external assets")
        }
    }

    /// Every way of writing a subscription: answered at the door of the hub's server; straight to
    /// the channel by the route (with ``HubRequestContext``); and through the response writer (with
    /// any other context).
    @Test(arguments: ["door", "direct", "writer"])
    func aClientThatStopsReadingIsCutAtTheWriteTimeout(way: String) async throws {
        var configuration = Hub.Configuration()
        configuration.subscriberQueueLimit = 1_000_000  // only the write timeout can cut it
        configuration.subscriberQueueBytes = 1 << 40
        let hub = try await Hub(store: InMemoryEventStore(), configuration: configuration)
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        http.heartbeat = nil
        http.writeTimeout = .milliseconds(300)
        if way == "writer" {
            let router = Router()
            try await hub.addRoutes(to: router, configuration: http)
            try await self.checkCutAtWriteTimeout(hub: hub, router: router, server: .http1())
        } else {
            let router = Router(context: HubRequestContext.self)
            try await hub.addRoutes(to: router, configuration: http)
            try await self.checkCutAtWriteTimeout(hub: hub, router: router, server: way == "door" ? hub.http1Server() : .http1())
        }
    }

    private func checkCutAtWriteTimeout<Context: RequestContext>(hub: Hub, router: Router<Context>, server: HTTPServerBuilder) async throws
    where Context.Source == ApplicationRequestContextSource {
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            logger: Logger(label: "hub")
        )
        try await app.test(.live) { client in
            // A subscriber that never reads: the kernel's buffers fill, then the hub's write waits.
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.autoRead, value: false)
                .channelOption(.socketOption(.so_rcvbuf), value: 4096)
                .connect(host: "127.0.0.1", port: client.port!).get()
            let request = "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"
            try await channel.writeAndFlush(ByteBuffer(string: request))
            for _ in 0..<500 where hub.subscriberCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(hub.subscriberCount == 1)
            let big = String(repeating: "x", count: 256 * 1024)
            var published = 0
            while hub.subscriberCount == 1, published < 400 {
                try await hub.publish(Update(id: "big\(published)", topics: ["t"], data: big))
                published += 1
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(hub.subscriberCount == 0, "cut after \(published) updates of 256 KiB")
            try await channel.close()
        }
    }

    @Test(arguments: [true, false])
    func aSubscriberThatHangsUpIsGone(door: Bool) async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        try await self.serve(hub, http, door: door) { port in
            // Kept alive, the request's handler has returned (or the door answered) and only the
            // connection's closing says the client left; with `Connection: close`, the route's
            // handler waits on the request instead.
            for connectionHeader in ["", "Connection: close\r\n"] {
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(host: "127.0.0.1", port: port).get()
                let request = "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\(connectionHeader)\r\n"
                try await channel.writeAndFlush(ByteBuffer(string: request))
                for _ in 0..<500 where hub.subscriberCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
                #expect(hub.subscriberCount == 1)
                try await hub.publish(Update(id: "for-\(connectionHeader.count)", topics: ["t"], data: "x"))
                try await channel.close()
                for _ in 0..<500 where hub.subscriberCount == 1 { try await Task.sleep(for: .milliseconds(10)) }
                #expect(hub.subscriberCount == 0, "\(connectionHeader)")
            }
        }
    }

    @Test(arguments: [false, true])
    func theKernelMergesASubscribersWritesUnlessToldNotTo(tcpNoDelay: Bool) async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        http.tcpNoDelay = tcpNoDelay
        try await self.serve(hub, http) { port in
            let (channel, received) = try await connectRaw(to: port)
            try await channel.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"))
            for _ in 0..<500 where hub.subscriberCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
            // An event that arrives went through the hub's direct writes, set up after the option.
            try await hub.publish(Update(id: "e", topics: ["t"], data: "x"))
            for _ in 0..<500 where !received.text.contains("id: e\n") { try await Task.sleep(for: .milliseconds(10)) }
            #expect(received.text.contains("id: e\ndata: x\n\n"))
            let option = try #require(
                Self.noDelayOption(ofSocketFrom: channel.localAddress!.port!, to: port),
                "the server's end of the connection is in this process"
            )
            #expect((option != 0) == tcpNoDelay)
            try await channel.close()
        }
    }

    /// The door's first read of a connection is small (see `HubHTTP1Channel.reads`): larger
    /// requests come in several reads.
    @Test func requestsLargerThanTheFirstReadAreReadWhole() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        http.publisherKey = JWTKey(algorithm: .hs256, key: Self.secret)
        try await self.serve(hub, http) { port in
            let (channel, received) = try await connectRaw(to: port)
            let cookie = String(repeating: "c", count: 6_000)
            try await channel.writeAndFlush(ByteBuffer(string:
                "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nCookie: a=\(cookie)\r\n\r\n"
            ))
            for _ in 0..<500 where hub.subscriberCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
            let data = String(repeating: "d", count: 5_000)
            let hubURL = "http://127.0.0.1:\(port)/.well-known/mercure"
            let (status, _) = try await self.publish(hubURL, "topic=t&id=big&data=\(data)")
            #expect(status == .ok)
            for _ in 0..<500 where !received.text.hasSuffix("\n\n") { try await Task.sleep(for: .milliseconds(10)) }
            #expect(received.text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(received.text.prefix(100))")
            #expect(received.text.hasSuffix("\r\n\r\n:\nid: big\ndata: \(data)\n\n"))
            try await channel.close()
        }
    }

    /// A pipelining client on a real socket: its publishes, a request the hub's door hands to
    /// Hummingbird in the middle, more publishes, then the end of its side. Every request it sent is
    /// answered, in order, then the server closes.
    @Test(.timeLimit(.minutes(1))) func pipelinedPublishesAndTheClientsEndAreAllAnsweredInOrder() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.publisherKey = JWTKey(algorithm: .hs256, key: Self.secret)
        try await self.serve(hub, http) { port in
            let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: Self.secret)
            func publish(_ n: Int) -> String {
                let form = "topic=t&id=u\(n)&data=\(n)"
                return "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                    + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(form.utf8.count)\r\n\r\n\(form)"
            }
            let (channel, received) = try await connectRaw(to: port)
            let requests = (0..<100).map(publish).joined() + "GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n" + (100..<105).map(publish).joined()
            try await channel.writeAndFlush(ByteBuffer(string: requests))
            try await channel.close(mode: .output)
            for _ in 0..<1_000 where channel.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!channel.isActive, "the server closes once it has answered")
            let text = received.text
            let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.prefix(3) }
            #expect(statuses == Array(repeating: "200", count: 100) + ["404"] + Array(repeating: "200", count: 5), "\(statuses)")
            let stored = try await hub.store.updates(through: .max).map(\.update.id)
            #expect(stored == (0..<105).map { "u\($0)" })
            let answered = stored.compactMap { id in text.range(of: "\r\n\r\n\(id)").map(\.lowerBound) }
            #expect(answered.count == 105 && zip(answered, answered.dropFirst()).allSatisfy { $0 < $1 }, "in order")
        }
    }

    /// (Behind Hummingbird's own `.http1()` the connection stays open: Hummingbird closes on
    /// `Connection: close` alone.)
    @Test func anHTTP10PublishIsAnsweredThenItsConnectionCloses() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.publisherKey = JWTKey(algorithm: .hs256, key: Self.secret)
        try await self.serve(hub, http) { port in
            let (channel, received) = try await connectRaw(to: port)
            let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: Self.secret)
            try await channel.writeAndFlush(ByteBuffer(string:
                "POST /.well-known/mercure HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                    + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntopic=t"
            ))
            // An HTTP/1.0 client without `keep-alive` reads the answer until the server closes.
            for _ in 0..<500 where channel.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!channel.isActive, "the server closed the connection")
            #expect(received.text.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(received.text)")
            #expect(received.text.hasSuffix("\r\n\r\n" + (try await hub.store.lastEventID() ?? "none")))
        }
    }

    @Test func aClientThatDoesNotSendItsRequestInTimeIsClosed() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.publisherKey = JWTKey(algorithm: .hs256, key: Self.secret)
        let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: Self.secret)
        // Long enough for the request's first part to come before it, on a loaded machine too.
        try await self.serve(hub, http, requestTimeout: .seconds(1)) { port in
            let (idle, _) = try await connectRaw(to: port)
            let (slow, received) = try await connectRaw(to: port)
            try await slow.writeAndFlush(ByteBuffer(string:
                "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                    + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 20\r\n\r\ntopic=t"
            ))
            for _ in 0..<500 where idle.isActive || slow.isActive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!idle.isActive, "the server closed the connection that sent nothing")
            #expect(!slow.isActive, "and the one whose request stopped coming")
            #expect(received.text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), "\(received.text)")
            #expect(received.text.hasSuffix("\r\n\r\nthe request did not come whole within 1.0 seconds\n"))
            #expect(try await hub.store.lastEventID() == nil)
            try? await idle.close()  // (the server's shutdown would wait for them)
            try? await slow.close()
        }
    }

    @Test func aConnectionHandedToTheRoutesIsClosedWhenIdleButNotWhileItStreams() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        http.heartbeat = nil
        // A timeout long enough for each request to come in time, on a loaded machine too.
        try await self.serve(hub, http, requestTimeout: .seconds(1)) { port in
            // A request that is not the hub's: the door hands the connection on to the routes.
            let (idle, answer) = try await connectRaw(to: port)
            try await idle.writeAndFlush(ByteBuffer(string: "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n"))
            // The same, then a subscription, which the route answers.
            let (streaming, stream) = try await connectRaw(to: port)
            try await streaming.writeAndFlush(ByteBuffer(string:
                "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\nGET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"
            ))
            try await expectIdleClosedButNotTheStream(
                hub,
                idle: (idle, answer),
                streaming: (streaming, stream),
                chunked: true,
                timeout: .seconds(1)
            )
        }
    }

    @Test func anHTTP10SubscriberGetsItsStreamUnchunkedUntilTheConnectionCloses() async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        http.heartbeat = nil
        try await self.serve(hub, http) { port in
            let (channel, received) = try await connectRaw(to: port)
            try await channel.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?topic=t HTTP/1.0\r\nHost: x\r\n\r\n"))
            for _ in 0..<500 where hub.subscriberCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
            try await hub.publish(Update(id: "e", topics: ["t"], data: "x"))
            for _ in 0..<500 where !received.text.contains("id: e\n") { try await Task.sleep(for: .milliseconds(10)) }
            let text = received.text
            #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(text)")
            #expect(!text.lowercased().contains("transfer-encoding"), "HTTP/1.0 has no chunks")
            #expect(text.hasSuffix("\r\n\r\n:\nid: e\ndata: x\n\n"), "the stream as it is: \(text)")
            try await channel.close()
            for _ in 0..<500 where hub.subscriberCount == 1 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(hub.subscriberCount == 0)
        }
    }

    @Test func subscribersOfOverlappingTopicsGetEveryEventOnceInHistoryOrder() async throws {
        let hub = try await Hub(store: InMemoryEventStore(retention: try Retention(count: 100_000)))
        var http = Hub.HTTPConfiguration()
        http.allowsAnonymousSubscribers = true
        http.heartbeat = nil
        try await self.serve(hub, http) { port in
            // Three routes: a, b, and both; publishes from several tasks at once, so that a loop's
            // drain holds runs of events for different routes.
            var subscribers: [(topics: Set<String>, received: ReceivedText, channel: any Channel)] = []
            for query in ["topic=a", "topic=b", "topic=a&topic=b"] {
                let (channel, received) = try await connectRaw(to: port)
                try await channel.writeAndFlush(ByteBuffer(string: "GET /.well-known/mercure?\(query) HTTP/1.1\r\nHost: x\r\n\r\n"))
                subscribers.append((Set(query.split(separator: "&").map { String($0.dropFirst("topic=".count)) }), received, channel))
            }
            for _ in 0..<500 where hub.subscriberCount < 3 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(hub.subscriberCount == 3)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<4 {
                    group.addTask {
                        for n in 0..<50 { try await hub.publish(Update(id: "e\(task)-\(n)", topics: [n % 3 == 0 ? "b" : "a"], data: "x")) }
                    }
                }
                try await group.waitForAll()
            }
            let (replay, _) = try await hub.subscribe([TopicSelector("*")], lastEventID: "earliest")
            let history = try events(in: try await take(200, from: replay))
            for subscriber in subscribers {
                let expected = history.filter { event in
                    let n = Int(event.id!.split(separator: "-")[1])!
                    return subscriber.topics.contains(n % 3 == 0 ? "b" : "a")
                }.map(\.id)
                let ids: () -> [String?] = {
                    subscriber.received.text.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("id: ") }.map { String($0.dropFirst(4)) }
                }
                for _ in 0..<500 where ids().count < expected.count { try await Task.sleep(for: .milliseconds(10)) }
                #expect(ids() == expected, "\(subscriber.topics)")
                try await subscriber.channel.close()
            }
        }
    }

    /// The `TCP_NODELAY` option of this process's socket on `port` connected to `peerPort`.
    static func noDelayOption(ofSocketFrom peerPort: Int, to port: Int) -> Int32? {
        for fd in Int32(0)..<65_536 {
            var local = sockaddr_in()
            var peer = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let named = withUnsafeMutablePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
            }
            guard named, Int(UInt16(bigEndian: local.sin_port)) == port else { continue }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let connected = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
            }
            guard connected, Int(UInt16(bigEndian: peer.sin_port)) == peerPort else { continue }
            var value: Int32 = -1
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &size) == 0 else { return nil }
            return value
        }
        return nil
    }

    @Test func subscribeHeadersAndTheOpeningComment() async throws {
        try await self.withHub { base in
            let (headers, text) = try await self.subscription(base + "?topic=*") { $0.hasPrefix(":\n") }
            #expect(headers.first(name: "Content-Type") == "text/event-stream")
            #expect(headers.first(name: "Cache-Control") == "private, no-cache, no-store, must-revalidate, max-age=0")
            #expect(headers.first(name: "X-Accel-Buffering") == "no")
            #expect(headers.first(name: "Last-Event-ID") == nil, "not asked for")
            #expect(text.hasPrefix(":\n"))
        }
    }

    @Test func resumeWithLastEventIDFromTheHeaderOrTheQuery() async throws {
        try await self.withHub { base in
            for n in 1...3 { _ = try await self.publish(base, "topic=t&id=e\(n)&data=\(n)") }
            let (headerResume, fromHeader) = try await self.subscription(base + "?topic=t", headers: ["Last-Event-ID": "e1"]) {
                $0.contains("data: 3\n\n")
            }
            #expect(headerResume.first(name: "Last-Event-ID") == "e1")
            #expect(fromHeader == ":\nid: e2\ndata: 2\n\nid: e3\ndata: 3\n\n")

            let (queryResume, fromQuery) = try await self.subscription(base + "?topic=t&lastEventID=e2") { $0.contains("data: 3\n\n") }
            #expect(queryResume.first(name: "Last-Event-ID") == "e2")
            #expect(fromQuery == ":\nid: e3\ndata: 3\n\n")

            let (both, _) = try await self.subscription(base + "?topic=t&lastEventID=e1", headers: ["Last-Event-ID": "e2"]) {
                $0.contains("data: 3\n\n")
            }
            #expect(both.first(name: "Last-Event-ID") == "e2", "the header wins")

            let (earliest, all) = try await self.subscription(base + "?topic=t&lastEventID=earliest") { $0.contains("data: 3\n\n") }
            #expect(earliest.first(name: "Last-Event-ID") == "earliest")
            #expect(all.contains("data: 1\n") && all.contains("data: 2\n"))
        }
    }

    @Test func heartbeatsKeepAnIdleSubscriptionAlive() async throws {
        try await self.withHub(heartbeat: KeepAlive(interval: .milliseconds(100))) { base in
            // (Several may come in one read of the body, which runs to the close.)
            let (_, text) = try await self.subscription(base + "?topic=t") { $0.utf8.count >= 6 }
            #expect(text.hasPrefix(":\n:\n:\n") && text.replacingOccurrences(of: ":\n", with: "").isEmpty, "\(text)")
        }
    }

    @Test(arguments: [
        ("data=x", HTTPResponseStatus.badRequest, "missing 'topic'"),
        ("topic=t&id=a%0Ab", .badRequest, "'id' must not contain CR, LF or NUL"),
        ("topic=t&retry=soon", .badRequest, "'retry' must be a whole number"),
    ])
    func badPublishesSayWhy(_ form: String, _ status: HTTPResponseStatus, _ reason: String) async throws {
        try await self.withHub { base in
            let (got, body) = try await self.publish(base, form)
            #expect(got == status)
            #expect(body.contains(reason), "\(body)")
        }
    }

    @Test func otherPublishMistakes() async throws {
        try await self.withHub(maximumPublishSize: 100) { base in
            let (json, jsonBody) = try await self.publish(base, #"{"topic": "t"}"#, contentType: "application/json")
            #expect(json == .unsupportedMediaType)
            #expect(jsonBody.contains("x-www-form-urlencoded"))
            let (short, _) = try await self.publish(base, "topic=t", contentType: "application/x-www-form")
            #expect(short == .unsupportedMediaType)
            let mixedCaseType = "Application/X-WWW-Form-URLEncoded; charset=UTF-8"
            let (mixedCase, _) = try await self.publish(base, "topic=t", contentType: mixedCaseType)
            #expect(mixedCase == .ok)
            let (large, _) = try await self.publish(base, "topic=t&data=" + String(repeating: "x", count: 200))
            #expect(large == .payloadTooLarge)
            #expect(try await self.publish(base, "topic=t&id=same").0 == .ok)
            let (duplicate, duplicateBody) = try await self.publish(base, "topic=t&id=same")
            #expect(duplicate == .conflict)
            #expect(duplicateBody.contains("already published"))
        }
    }

    @Test func corsAllowsOnlyTheListedOrigins() async throws {
        try await self.withHub(corsOrigins: ["https://app.example.com"]) { base in
            let (allowed, _) = try await self.subscription(base + "?topic=t", headers: ["Origin": "https://app.example.com"]) {
                $0.hasPrefix(":\n")
            }
            #expect(allowed.first(name: "Access-Control-Allow-Origin") == "https://app.example.com")
            #expect(allowed.first(name: "Access-Control-Allow-Credentials") == "true")
            let (other, _) = try await self.subscription(base + "?topic=t", headers: ["Origin": "https://evil.example"]) {
                $0.hasPrefix(":\n")
            }
            #expect(other.first(name: "Access-Control-Allow-Origin") == nil)

            var preflight = HTTPClientRequest(url: base)
            preflight.method = .OPTIONS
            preflight.headers = ["Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"]
            let answer = try await HTTPClient.shared.execute(preflight, timeout: .seconds(10))
            #expect(answer.status == .noContent)
            #expect(answer.headers.first(name: "Access-Control-Allow-Origin") == "https://app.example.com")
            #expect(answer.headers.first(name: "Access-Control-Allow-Headers")?.contains("Authorization") == true)

            // An error is readable by the allowed page too.
            let (status, _) = try await self.publish(base, "data=x", headers: ["Origin": "https://app.example.com"])
            #expect(status == .unauthorized)
        }
    }

    /// The routes' refusals read as the door's: the reason, as one line of plain text.
    @Test(arguments: [true, false])
    func refusalsAreALineOfPlainText(door: Bool) async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var http = Hub.HTTPConfiguration()
        http.publisherKey = JWTKey(algorithm: .hs256, key: Self.secret)
        http.subscriberKey = http.publisherKey
        try await self.serve(hub, http, door: door) { port in
            let base = "http://127.0.0.1:\(port)/.well-known/mercure"
            let refusals: [(String, HTTPMethod, HTTPResponseStatus, String)] = [
                ("?topic=t", .GET, .unauthorized, "subscribing needs a JWT signed with the subscriber key (this hub does not allow anonymous subscribers)"),
                ("", .POST, .unauthorized, "publishing needs a JWT signed with the publisher key: send 'Authorization: Bearer <JWT>'"),
            ]
            for (query, method, status, reason) in refusals {
                var request = HTTPClientRequest(url: base + query)
                request.method = method
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
                #expect(response.status == status)
                #expect(response.headers.first(name: "Content-Type") == "text/plain; charset=utf-8")
                #expect(String(buffer: try await response.body.collect(upTo: 1 << 16)) == reason + "\n")
            }
            let token = try await Hub.developmentToken(publish: ["*"], subscribe: ["*"], key: Self.secret)
            var missing = HTTPClientRequest(url: base)
            missing.headers.add(name: "Authorization", value: "Bearer \(token)")
            let response = try await HTTPClient.shared.execute(missing, timeout: .seconds(10))
            #expect(response.status == .badRequest)
            #expect(response.headers.first(name: "Content-Type") == "text/plain; charset=utf-8")
            let said = String(buffer: try await response.body.collect(upTo: 1 << 16))
            #expect(said == "missing 'topic' query parameter: say which topics to subscribe to\n")
        }
    }

    @Test func subscribingNeedsATopic() async throws {
        try await self.withHub { base in
            var request = HTTPClientRequest(url: base)
            request.headers.add(name: "Accept", value: "text/event-stream")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            #expect(response.status == .badRequest)
            #expect(String(buffer: try await response.body.collect(upTo: 1 << 16)).contains("missing 'topic'"))
        }
    }
}

/// On a server whose request timeout is `timeout`, expects `idle`, answered `404` (its connection
/// and what it received), to close once it waits the timeout for its next request; and
/// `streaming`, subscribed to the topic `t`, to be open two timeouts later and get the next event,
/// which the test publishes: as a chunk if `chunked` (a route's stream), else as it is (the door's,
/// whose body runs to the close). Closes both.
func expectIdleClosedButNotTheStream(
    _ hub: Hub,
    idle: (channel: any Channel, received: ReceivedText),
    streaming: (channel: any Channel, received: ReceivedText),
    chunked: Bool,
    timeout: Duration
) async throws {
    for _ in 0..<500 where idle.channel.isActive { try await Task.sleep(for: .milliseconds(10)) }
    #expect(!idle.channel.isActive, "closed once it waited the timeout for a request after its answer")
    #expect(idle.received.text.hasPrefix("HTTP/1.1 404 Not Found\r\n"), "\(idle.received.text)")
    for _ in 0..<500 where hub.subscriberCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
    try await Task.sleep(for: timeout * 2)
    #expect(streaming.channel.isActive, "a stream is not timed")
    try await hub.publish(Update(id: "e", topics: ["t"], data: "x"))
    for _ in 0..<500 where !streaming.received.text.contains("id: e\n") { try await Task.sleep(for: .milliseconds(10)) }
    let text = streaming.received.text
    if chunked {
        #expect(text.hasSuffix("\r\n\r\n2\r\n:\n\r\nf\r\nid: e\ndata: x\n\n\r\n"), "the opening comment, then the event, as chunks: \(text)")
    } else {
        #expect(text.hasSuffix("\r\n\r\n:\nid: e\ndata: x\n\n"), "the opening comment, then the event: \(text)")
    }
    try? await idle.channel.close()
    try? await streaming.channel.close()
}

/// A TCP connection to the server on `port`, over TLS when `alpn` is given (offering those
/// protocols, and trusting any certificate), and what it receives, as text.
func connectRaw(to port: Int, alpn: [String]? = nil) async throws -> (any Channel, ReceivedText) {
    let received = ReceivedText()
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.certificateVerification = .none  // the test certificate is self-signed
    tls.applicationProtocols = alpn ?? []
    let context = try NIOSSLContext(configuration: tls)
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if alpn != nil {
                    let tls = try NIOSSLClientHandler(context: context, serverHostname: nil)
                    try channel.pipeline.syncOperations.addHandler(tls)
                }
                try channel.pipeline.syncOperations.addHandler(received)
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
    return (channel, received)
}

/// Collects what a raw client connection receives, as text.
final class ReceivedText: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let received = NIOLockedValueBox("")

    var text: String { self.received.withLockedValue { $0 } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        self.received.withLockedValue { $0 += String(buffer: bytes) }
    }
}

extension String {
    /// Percent-encodes everything but unreserved characters, as for a query value.
    var addingPercentEncoding: String {
        var encoded = ""
        for byte in self.utf8 {
            if (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || "-._~".utf8.contains(byte) {
                encoded.append(Character(Unicode.Scalar(byte)))
            } else {
                encoded += "%" + String(byte, radix: 16, uppercase: true).leftPadded
            }
        }
        return encoded
    }

    fileprivate var leftPadded: String { self.count == 1 ? "0" + self : self }
}
