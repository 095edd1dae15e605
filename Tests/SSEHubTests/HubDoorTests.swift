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
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Testing

@testable import SSEHub

/// The door of `Hub.http1Server`, on a channel the test writes to and reads from.
@Suite("Hub door")
struct HubDoorTests {
    static let key = "the door tests' key, long enough for HS256"
    /// The door's request timeout, in the testing event loop's time.
    static let requestTimeout = Duration.seconds(60)

    /// A hub with its routes added (anonymous subscribers, publishers with tokens signed with
    /// `key`, no heartbeat), and its HTTP/1 channel.
    func withDoor(
        store: any EventStore = InMemoryEventStore(),
        corsOrigins: [String] = [],
        _ body: (Hub, HubHTTP1Channel) async throws -> Void
    ) async throws {
        let hub = try await Hub(store: store)
        var http = Hub.HTTPConfiguration()
        http.corsOrigins = corsOrigins
        http.allowsAnonymousSubscribers = true
        http.heartbeat = nil
        http.publisherKey = JWTKey(algorithm: .hs256, key: Self.key)
        try await hub.addRoutes(to: Router(context: HubRequestContext.self), configuration: http)
        let http1 = HTTP1Channel(responder: { _, _, _ in Issue.record("the test hands no connection to Hummingbird's handler") })
        try await body(hub, HubHTTP1Channel(hub: hub, http1: http1, requestTimeout: Self.requestTimeout))
    }

    /// A connected channel set up as the server sets up a connection, with `request` read from it;
    /// and the channel of the connection that the server's task gets, if any.
    func connection(
        _ server: HubHTTP1Channel,
        reading request: String
    ) async throws -> (NIOAsyncTestingChannel, handedOn: (any Channel)?) {
        let (channel, handedOn) = try await self.openConnection(server, reading: request)
        return (channel, try await handedOn.get()?.channel)
    }

    /// A connected channel set up as the server sets up a connection, with `request` read from it;
    /// and the future connection that the server's task gets, if any.
    func openConnection(
        _ server: HubHTTP1Channel,
        reading request: String
    ) async throws -> (NIOAsyncTestingChannel, EventLoopFuture<NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?>) {
        let channel = NIOAsyncTestingChannel()
        let value = try await channel.eventLoop.flatSubmit { server.setup(channel: channel, logger: Logger(label: "test")) }.get()
        try await channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        do {
            try await channel.writeInbound(ByteBuffer(string: request))
        } catch is HTTPParserError {
            // Not HTTP: the door answers it (see `aRequestThatDoesNotParseIsAnswered400WithTheReason`).
        }
        return (channel, value.handedOn)
    }

    /// A publish request of `form`, with a token for every topic unless `token` says otherwise.
    func publishRequest(_ form: String, token: String? = nil, headers: String = "") async throws -> String {
        let token = if let token { token } else { try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: Self.key) }
        return "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
            + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(form.utf8.count)\r\n\(headers)\r\n\(form)"
    }

    /// What the channel writes, as text, until it contains `expected` (at most 10 s).
    func written(by channel: NIOAsyncTestingChannel, until expected: String) async throws -> String {
        var text = ""
        for _ in 0..<1_000 where !text.contains(expected) {
            await channel.testingEventLoop.run()  // what the loop gave itself to do
            if let bytes = try await channel.readOutbound(as: ByteBuffer.self) {
                text += String(buffer: bytes)
            } else {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        return text
    }

    @Test func aSubscriptionIsAnsweredAtTheDoorWithNoTaskForTheConnection() async throws {
        try await self.withDoor { hub, server in
            try await hub.publish(Update(id: "before", topics: ["t"], data: "replayed"))
            let (channel, handedOn) = try await self.connection(
                server,
                reading: "GET /.well-known/mercure?topic=t&lastEventID=earliest HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            #expect(handedOn == nil, "the server's task for the connection ends at once")
            let head = try await self.written(by: channel, until: "id: before\ndata: replayed\n\n")
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(head.contains("Content-Type: text/event-stream\r\n"))
            #expect(head.contains("Last-Event-ID: earliest\r\n"))
            #expect(!head.lowercased().contains("transfer-encoding"), "the body runs to the close, not in chunks")
            #expect(head.contains("Date: "))
            #expect(head.contains("Connection: close\r\n"), "the connection serves no request after the stream")
            #expect(head.hasSuffix("\r\n\r\n:\nid: before\ndata: replayed\n\n"), "the opening comment and the replay, as they are")
            #expect(hub.subscriberCount == 1)

            try await hub.publish(Update(id: "live", topics: ["t"], data: "x"))
            let live = try await self.written(by: channel, until: "id: live\ndata: x\n\n")
            #expect(live == "id: live\ndata: x\n\n", "the event's bytes alone")
            // The HTTP handlers and the door have left the connection, which waits for no more requests.
            let pipeline = channel.pipeline
            let left = try await channel.testingEventLoop.executeInContext {
                [
                    (try? pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)) == nil,
                    (try? pipeline.syncOperations.handler(type: HTTPResponseEncoder.self)) == nil,
                    (try? pipeline.syncOperations.handler(type: HubDoor.self)) == nil,
                ]
            }
            #expect(left == [true, true, true])
            // What the client sends now is dropped; the stream goes on.
            try await channel.writeInbound(ByteBuffer(string: "not HTTP\r\n\r\n"))
            try await hub.publish(Update(id: "after", topics: ["t"], data: "y"))
            #expect(try await self.written(by: channel, until: "id: after\ndata: y\n\n") == "id: after\ndata: y\n\n")

            // The client goes away: so does the subscription.
            try await channel.close()
            for _ in 0..<500 where hub.subscriberCount == 1 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(hub.subscriberCount == 0)
        }
    }

    /// With no replay to read and no token to verify, the subscription opens within the read of
    /// its request: no task at all. What the client sent after it in the same read is dropped.
    @Test func aSubscriptionWithNothingToWaitForIsOpenedWithinItsRead() async throws {
        try await self.withDoor { hub, server in
            let (channel, _) = try await self.openConnection(server, reading: "")
            let request = "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n"
            let count = try await channel.testingEventLoop.executeInContext {
                channel.pipeline.fireChannelRead(ByteBuffer(string: request))
                return hub.subscriberCount
            }
            #expect(count == 1, "subscribed within the read")
            #expect(try await self.written(by: channel, until: "\r\n\r\n:\n").hasPrefix("HTTP/1.1 200 OK\r\n"))
            try await hub.publish(Update(id: "live", topics: ["t"], data: "x"))
            #expect(try await self.written(by: channel, until: "id: live\ndata: x\n\n") == "id: live\ndata: x\n\n")
            try await channel.close()
            for _ in 0..<500 where hub.subscriberCount == 1 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(hub.subscriberCount == 0)
        }
    }

    @Test func theStreamEndsCleanlyWhenTheServerStops() async throws {
        try await self.withDoor { hub, server in
            let (channel, _) = try await self.connection(server, reading: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = try await self.written(by: channel, until: ":\n")
            try await hub.publish(Update(id: "last", topics: ["t"], data: "x"))
            try await channel.testingEventLoop.executeInContext { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
            var end = ""
            for _ in 0..<500 where channel.isActive {
                await channel.testingEventLoop.run()
                while let bytes = try await channel.readOutbound(as: ByteBuffer.self) { end += String(buffer: bytes) }
                try await Task.sleep(for: .milliseconds(10))
            }
            while let bytes = try await channel.readOutbound(as: ByteBuffer.self) { end += String(buffer: bytes) }
            #expect(!channel.isActive, "the connection closes: the end of a body without a length")
            #expect(end == "id: last\ndata: x\n\n", "after what was published before the stop")
            for _ in 0..<500 where hub.subscriberCount == 1 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(hub.subscriberCount == 0)
        }
    }

    @Test(arguments: [
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",  // no token
        "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\nContent-Length: 0\r\n\r\n",
        "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
        "GET /.well-known/mercure/subscriptions HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n",  // no topic: the route says why
        "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /.well-known/mercure?topic=t HTTP/1.0\r\nHost: x\r\n\r\n",  // 1.0 ends the stream by closing
        "POST /.well-known/mercure HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ])
    func everythingElseGoesOnToHummingbird(_ request: String) async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.connection(server, reading: request)
            let connection = try #require(handedOn)
            #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil, "the door answered nothing")
            #expect(hub.subscriberCount == 0)
            #expect(connection === channel)
            try await channel.close()
        }
    }

    /// A request that NIO's decoder cannot parse, first on its connection or after a publish, is
    /// answered at the door with the decoder's reason; then the connection closes.
    @Test(arguments: [
        ("NOT HTTP\r\n\r\n", "invalid HTTP method"),
        ("POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 1\t\r\n\r\nx", "invalid character in content-length header"),
        ("GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nX:\u{1}\r\n\r\n", "invalid character in header"),
    ], [false, true])
    func aRequestThatDoesNotParseIsAnswered400WithTheReason(request: (String, reason: String), afterAPublish: Bool) async throws {
        try await self.withDoor { hub, server in
            let publish = afterAPublish ? try await self.publishRequest("topic=t&id=first&data=1") : ""
            let (channel, handedOn) = try await self.openConnection(server, reading: publish + request.0)
            let answers = try await self.written(by: channel, until: request.reason)
            let refusal = answers.components(separatedBy: "\r\n\r\nfirst").last ?? ""
            #expect(answers.hasPrefix(afterAPublish ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.1 400 Bad Request\r\n"), "\(answers)")
            #expect(refusal.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && refusal.contains("\r\nConnection: close\r\n"), "\(refusal)")
            #expect(refusal.hasSuffix("\r\n\r\nthe request is not valid HTTP/1.1: \(request.reason)\n"), "\(refusal)")
            for _ in 0..<500 where channel.isActive {
                await channel.testingEventLoop.run()
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(!channel.isActive, "then the connection closes")
            #expect(try await handedOn.get() == nil, "with no task for it")
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == (afterAPublish ? ["first"] : []))
        }
    }

    /// A field's value is read without the spaces and tabs after it, which NIO's decoder keeps, as
    /// the request reader and the routes read it.
    @Test(arguments: [
        "",  // read by the request reader
        "Connection: te\r\n",  // read by NIO's decoder: the reader takes only `Connection: keep-alive`
    ])
    func anOriginIsReadWithoutTheSpacesAfterIt(fields: String) async throws {
        try await self.withDoor(corsOrigins: ["https://a.example"]) { hub, server in
            let request = "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\(fields)Origin: https://a.example \t\r\n\r\n"
            let (channel, handedOn) = try await self.connection(server, reading: request)
            #expect(handedOn == nil, "opened at the door")
            let head = try await self.written(by: channel, until: "\r\n\r\n")
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n") && head.contains("\r\nAccess-Control-Allow-Origin: https://a.example\r\n"), "\(head)")
            try await channel.close()
        }
    }

    @Test func aPublishReadByNIOsDecoderIsTakenWithSpacesAfterItsFieldsValues() async throws {
        try await self.withDoor { hub, server in
            let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: Self.key)
            let form = "topic=t&id=spaced&data=1"
            // `Connection: te`: not the reader's, whose own reading of such values the shape tests check.
            let request = "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nConnection: te\r\nAuthorization: Bearer \(token) \r\n"
                + "Content-Type: application/x-www-form-urlencoded\t\r\nContent-Length: \(form.utf8.count) \r\n\r\n\(form)"
            let (channel, handedOn) = try await self.openConnection(server, reading: request)
            let answer = try await self.written(by: channel, until: "\r\n\r\nspaced")
            #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n") && answer.hasSuffix("\r\n\r\nspaced"), "\(answer)")
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["spaced"])
            try await channel.close()
            #expect(try await handedOn.get() == nil, "answered at the door")
        }
    }

    /// Once the connection is Hummingbird's: a request that does not parse, coming after the last
    /// one was answered, gets the door's 400 with the reason; one that comes while a request is
    /// under way is left to Hummingbird, whose answer to that request may have begun.
    @Test(.timeLimit(.minutes(1)), arguments: [true, false])
    func aRequestThatDoesNotParseAfterAHandOnIsAnsweredWithTheReasonIfNoneIsUnderWay(answeredFirst: Bool) async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            let connection = try #require(try await handedOn.get())
            let malformed = "GET /healthz HTTP/1.1\r\nHost: x\r\nX:\u{1}\r\n\r\n"
            try await connection.executeThenClose { inbound, outbound in
                var requests = inbound.makeAsyncIterator()
                guard case .head(let head)? = try await requests.next(), case .end? = try await requests.next() else {
                    Issue.record("not the handed-on request whole")
                    return
                }
                #expect(head.path == "/healthz")
                if answeredFirst {
                    try await outbound.write(.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "2"])))
                    try await outbound.write(.body(ByteBuffer(string: "ok")))
                    try await outbound.write(.end(nil))
                    #expect(try await self.written(by: channel, until: "\r\n\r\nok").hasPrefix("HTTP/1.1 200 OK\r\n"))
                }
                do {
                    try await channel.writeInbound(ByteBuffer(string: malformed))
                } catch is HTTPParserError {
                    // (What reaches the end of the pipeline: the error Hummingbird's handlers get.)
                }
                if answeredFirst {
                    let refusal = try await self.written(by: channel, until: "invalid character in header")
                    #expect(refusal.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && refusal.contains("\r\nConnection: close\r\n"), "\(refusal)")
                    #expect(refusal.hasSuffix("\r\n\r\nthe request is not valid HTTP/1.1: invalid character in header\n"), "\(refusal)")
                    #expect(try await requests.next() == nil, "then the connection closes, and Hummingbird's handlers get no error")
                } else {
                    await #expect(throws: HTTPParserError.self, "Hummingbird's handlers get the error") { _ = try await requests.next() }
                    #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil, "and nothing was answered for them")
                }
            }
            #expect(hub.subscriberCount == 0)
        }
    }

    @Test(.timeLimit(.minutes(1))) func publishesAreAnsweredAtTheDoorOneAfterAnother() async throws {
        try await self.withDoor { hub, server in
            let (subscription, _) = try await hub.subscribe([TopicSelector("t")], lastEventID: nil)
            // Two requests in one read, as a pipelining client sends them.
            let (channel, handedOn) = try await self.openConnection(
                server,
                reading: try await self.publishRequest("topic=t&id=one&data=1") + self.publishRequest("topic=t&id=two&data=2")
            )
            let answers = try await self.written(by: channel, until: "\r\n\r\ntwo")
            #expect(answers.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 3, "two answers")
            let one = try #require(answers.range(of: "\r\n\r\none"))
            #expect(answers.range(of: "\r\n\r\ntwo").map { one.upperBound <= $0.lowerBound } == true, "in order")
            #expect(answers.contains("Content-Length: 3\r\n"))
            #expect(answers.contains("Content-Type: text/plain; charset=utf-8\r\n"))
            #expect(answers.contains("Date: "))
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one", "two"])

            // The connection stays open for the next one, and the server's task has nothing to do.
            try await channel.writeInbound(ByteBuffer(string: try await self.publishRequest("topic=t&id=three&data=3")))
            _ = try await self.written(by: channel, until: "\r\n\r\nthree")
            #expect(channel.isActive)
            var delivered = ""
            for try await event in subscription.prefix(3) { delivered += String(buffer: event) }
            #expect(delivered == "id: one\ndata: 1\n\nid: two\ndata: 2\n\nid: three\ndata: 3\n\n")

            try await channel.close()
            #expect(try await handedOn.get() == nil)
        }
    }

    @Test func aPublishUnderWayWhenTheServerStopsIsAnsweredThenTheConnectionCloses() async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: "")
            let request = try await self.publishRequest("topic=t&id=one&data=1")
            // Both on the loop at once: the publish's task, which answers through the loop, cannot have answered.
            try await channel.testingEventLoop.executeInContext {
                channel.pipeline.fireChannelRead(ByteBuffer(string: request))
                channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
            let answer = try await self.written(by: channel, until: "\r\n\r\none")
            #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(answer.contains("\r\nConnection: close\r\n"), "the answer says the connection closes")
            let ended = NIOLockedValueBox(false)
            handedOn.whenComplete { _ in ended.withLockedValue { $0 = true } }
            for _ in 0..<500 where channel.isActive || !ended.withLockedValue({ $0 }) {
                await channel.testingEventLoop.run()
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(!channel.isActive, "the connection closes")
            #expect(ended.withLockedValue { $0 }, "and the server's task for it ends")
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one"])
        }
    }

    /// A client that sends its publishes and closes its side (`shutdown(SHUT_WR)`) gets every one
    /// it sent whole answered, then the connection closes: publishes the reader takes, and (with a
    /// query) publishes the door reads. The request it had begun, cut off in its head or its body,
    /// does not lose them.
    @Test(arguments: ["", "?q"], [false, true])
    func publishesSentBeforeTheClientClosedItsSideAreAllAnswered(query: String, cutInBody: Bool) async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: "")
            var requests = ""
            for id in ["one", "two", "three"] {
                requests += try await self.publishRequest("topic=t&id=\(id)&data=1")
                    .replacingOccurrences(of: "mercure HTTP", with: "mercure\(query) HTTP")
            }
            // The start of one more, which cannot come whole now: NIO's decoder fails it at the
            // end of input, after the three it read whole.
            let begun = "POST /.well-known/mercure\(query) HTTP/1.1\r\n"
                + (cutInBody ? "Host: x\r\nContent-Length: 9\r\n\r\ntopic" : "")
            try await channel.testingEventLoop.executeInContext { [requests] in
                channel.pipeline.fireChannelRead(ByteBuffer(string: requests + begun))
                channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            }
            let answers = try await self.written(by: channel, until: "\r\n\r\nthree")
            #expect(answers.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 4, "three answers: \(answers)")
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one", "two", "three"])
            if !query.isEmpty && !cutInBody {
                // The decoder fails the request begun between requests, as when it comes alone.
                let refusal = try await self.written(by: channel, until: "stream ended at an unexpected time")
                #expect(refusal.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(refusal)")
            }
            for _ in 0..<500 where channel.isActive {
                await channel.testingEventLoop.run()
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(!channel.isActive, "then the connection closes")
            #expect(try await handedOn.get() == nil)
        }
    }

    @Test func aPublishThatFailsItsChecksGoesOnToTheRoute() async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: try await self.publishRequest("topic=t&id=one&data=1"))
            _ = try await self.written(by: channel, until: "\r\n\r\none")
            // Not allowed to publish to this topic: the route says why, and has the connection from then on.
            let forbidden = try await self.publishRequest(
                "topic=u&data=2",
                token: try await Hub.developmentToken(publish: ["t"], subscribe: nil, key: Self.key)
            )
            try await channel.writeInbound(ByteBuffer(string: forbidden))
            let connection = try #require(try await handedOn.get())
            #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil, "the door answered nothing")
            var parts: [HTTPRequestPart] = []
            // What was handed on is in the connection's stream already; it ends with the connection.
            try await channel.close()
            try? await connection.executeThenClose { inbound, _ in
                for try await part in inbound { parts.append(part) }
            }
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one"])
            guard case .head(let head)? = parts.first else {
                Issue.record("no head: \(parts)")
                return
            }
            #expect(head.method == .post)
            #expect(parts.count == 3, "the head, the body, the end")
        }
    }

    @Test func aPublishWithAnAcceptedTokenThatTheStoreRefusesGoesOnToTheRoute() async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: try await self.publishRequest("topic=t&id=one&data=1"))
            _ = try await self.written(by: channel, until: "\r\n\r\none")
            // The same token, accepted now (the door stores the update from its loop), and an ID
            // the history holds: the route answers (409), with the request whole.
            try await channel.writeInbound(ByteBuffer(string: try await self.publishRequest("topic=t&id=one&data=2")))
            let handed = NIOLockedValueBox(false)
            handedOn.whenComplete { _ in handed.withLockedValue { $0 = true } }
            var answered = ""
            for _ in 0..<1_000 where !handed.withLockedValue({ $0 }) && answered.isEmpty {
                await channel.testingEventLoop.run()
                if let bytes = try await channel.readOutbound(as: ByteBuffer.self) {
                    answered += String(buffer: bytes)
                } else {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            #expect(answered == "", "the door answered nothing")
            try #require(handed.withLockedValue { $0 })
            let connection = try #require(try await handedOn.get())
            var body = ""
            try await channel.close()
            try? await connection.executeThenClose { inbound, _ in
                for try await part in inbound {
                    if case .body(let buffer) = part { body += String(buffer: buffer) }
                }
            }
            #expect(body == "topic=t&id=one&data=2")
            #expect(try await hub.store.updates(through: .max).map(\.update.data) == ["1"])
        }
    }

    @Test func aRequestPipelinedAfterAPublishGoesOnWhole() async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(
                server,
                reading: try await self.publishRequest("topic=t&id=one&data=1") + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            _ = try await self.written(by: channel, until: "\r\n\r\none")
            let connection = try #require(try await handedOn.get())
            var parts: [HTTPRequestPart] = []
            // What was handed on is in the connection's stream already; it ends with the connection.
            try await channel.close()
            try? await connection.executeThenClose { inbound, _ in
                for try await part in inbound { parts.append(part) }
            }
            guard case .head(let head)? = parts.first else {
                Issue.record("no head: \(parts)")
                return
            }
            #expect(head.path == "/healthz")
            #expect(parts.count == 2, "the head and the end")
        }
    }

    /// NIO's encoder pairs each response with its request's method, to send no body to a `HEAD`:
    /// the answers to publishes must take their turns there too.
    @Test func aHeadRequestAfterPublishesIsAnsweredWithNoBody() async throws {
        try await self.withDoor { hub, server in
            let publishes = [
                try await self.publishRequest("topic=t&id=one&data=1"), try await self.publishRequest("topic=t&id=two&data=2"),
            ]
            let (channel, handedOn) = try await self.openConnection(
                server,
                reading: publishes.joined() + "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            _ = try await self.written(by: channel, until: "\r\n\r\ntwo")
            let connection = try #require(try await handedOn.get())
            try await connection.executeThenClose { inbound, outbound in
                for try await part in inbound {
                    if case .end = part { break }
                }
                try await outbound.write(.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "5"])))
                try await outbound.write(.body(ByteBuffer(string: "hello")))
                try await outbound.write(.end(nil))
            }
            var answer = ""
            while let bytes = try await channel.readOutbound(as: ByteBuffer.self) { answer += String(buffer: bytes) }
            #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(answer)")
            #expect(answer.contains("Content-Length: 5\r\n"), "\(answer)")
            #expect(!answer.contains("hello"), "a response to HEAD has no body: \(answer)")
        }
    }

    /// Whether the request reader is still ahead of the decoder on `channel`.
    func hasRequestReader(_ channel: NIOAsyncTestingChannel) async throws -> Bool {
        try await channel.testingEventLoop.executeInContext {
            (try? channel.pipeline.syncOperations.handler(type: RequestReader.self)) != nil
        }
    }

    @Test func aPublishCutIntoReadsOfAByteIsReadAheadOfTheDecoder() async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: "")
            for byte in try await self.publishRequest("topic=t&id=one&data=1").utf8 {
                try await channel.writeInbound(ByteBuffer(bytes: [byte]))
            }
            let answer = try await self.written(by: channel, until: "\r\n\r\none")
            #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nDate: "))
            #expect(try await self.hasRequestReader(channel), "the reader stays for the next publish")
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one"])
            try await channel.close()
            #expect(try await handedOn.get() == nil)
        }
    }

    /// The door answers a publish the reader does not take (here for its query) as the reader
    /// answers the others.
    @Test func theReadersAnswerIsTheDoors() async throws {
        try await self.withDoor { hub, server in
            func answer(_ request: String, id: String) async throws -> (String, readerStays: Bool) {
                let (channel, _) = try await self.openConnection(server, reading: request)
                let answer = try await self.written(by: channel, until: "\r\n\r\n\(id)")
                let stays = try await self.hasRequestReader(channel)
                try await channel.close()
                // The date, which may have turned a second between the two.
                let lines = answer.components(separatedBy: "\r\n").filter { !$0.hasPrefix("Date: ") }
                return (lines.joined(separator: "\r\n").replacingOccurrences(of: id, with: "ID"), stays)
            }
            let read = try await answer(try await self.publishRequest("topic=t&id=one&data=1"), id: "one")
            let viaDoor = try await answer(
                try await self.publishRequest("topic=t&id=two&data=2").replacingOccurrences(of: "mercure HTTP", with: "mercure?via=door HTTP"),
                id: "two"
            )
            #expect(read.readerStays)
            #expect(!viaDoor.readerStays, "the reader left at the query")
            #expect(read.0 == viaDoor.0)
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one", "two"])
        }
    }

    /// What the reader does not frame the way every HTTP/1.1 parser would goes to NIO's decoder,
    /// whole: the reader neither answers nor stores it.
    @Test(arguments: [
        "Content-Length: 14\r\nContent-Length: 140\r\n",
        "Content-Length: +14\r\n",
        "Content-Length: 14\r\n Folded: x\r\n",
        "Content-Length: 14\nX: y\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 14\r\n",
    ])
    func aPublishNotOfThePlainShapeGoesToNIOsDecoder(_ fields: String) async throws {
        try await self.withDoor { hub, server in
            let token = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: Self.key)
            let request = "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                + "Content-Type: application/x-www-form-urlencoded\r\n\(fields)\r\ntopic=t&data=1"
            let (channel, _) = try await self.openConnection(server, reading: request)
            #expect(try await !self.hasRequestReader(channel))
            await channel.testingEventLoop.run()
            #expect(try await hub.store.updates(through: .max).isEmpty)
            try? await channel.close()
        }
    }

    @Test func theShapeOfPublishRequestsTheReaderTakes() throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldCount = 5
        limits.maxHeaderFieldSize = 40
        func head(_ text: String) -> RequestReader.Head? {
            Array(text.utf8).withUnsafeBytes { RequestReader.Head.parse($0, maximumBody: 100, limits: limits) }
        }
        let line = "POST /.well-known/mercure HTTP/1.1\r\n"
        let text = line + "host: x\r\nCONTENT-length:  12 \r\nAuthorization: Bearer t\r\nConnection: Keep-Alive\r\nX:\r\n\r\n"
        let taken = try #require(head(text))
        #expect(taken.length == text.utf8.count)
        #expect(taken.contentLength == 12)
        #expect(taken.authorizations == 1)
        #expect(taken.authorization.map { Array(Array(text.utf8)[$0]) } == Array("Bearer t".utf8))
        #expect(taken.contentTypes == 0)
        // (Every request below has one `Host`, or the reader leaves it to the door, which refuses it.)
        let hosted = line + "Host: x\r\n"
        #expect(head(hosted + "Content-Length: 100\r\n\r\n")?.contentLength == 100)
        #expect(head(hosted + "Content-Length: 1\r\nA: 1\r\nB: 2\r\nX: " + String(repeating: "v", count: 39) + "\r\n\r\n") != nil)
        for refused in [
            "POST /.well-known/mercure?x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.0\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
            "post /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 1\r\n\r\n",  // no Host
            hosted + "Host: x\r\nContent-Length: 1\r\n\r\n",  // two
            hosted + "\r\n",
            hosted + "Content-Length: 1\r\nContent-Length: 1\r\n\r\n",
            hosted + "Content-Length: +1\r\n\r\n",
            hosted + "Content-Length: 1 1\r\n\r\n",
            hosted + "Content-Length: 1\t\r\n\r\n",  // NIO's decoder refuses it
            hosted + "Content-Length:\r\n\r\n",
            hosted + "Content-Length: 1234567890\r\n\r\n",
            hosted + "Content-Length: 101\r\n\r\n",
            hosted + "Content-Length: 1\r\n folded\r\n\r\n",
            hosted + "Content-Length: 1\nX: y\r\n\r\n",
            hosted + "Content-Length: 1\r\nX: a\rb\r\n\r\n",
            hosted + "Content-Length: 1\r\nX y: z\r\n\r\n",
            hosted + "Content-Length: 1\r\n: z\r\n\r\n",
            hosted + "Content-Length: 1\r\nX: \u{0}\r\n\r\n",
            hosted + "Content-Length: 1\r\nX: \u{7F}\r\n\r\n",
            hosted + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            hosted + "Content-Length: 1\r\nexpect: 100-continue\r\n\r\n",
            hosted + "Content-Length: 1\r\nUpgrade: h2c\r\n\r\n",
            hosted + "Content-Length: 1\r\nOrigin: https://a.example\r\n\r\n",
            hosted + "Content-Length: 1\r\nConnection: close\r\n\r\n",
            hosted + "Content-Length: 1\r\n\r\n\r\n",
            hosted + "Content-Length: 1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",  // six fields, NIO's decoder takes five
            hosted + "Content-Length: 1\r\nX: " + String(repeating: "v", count: 40) + "\r\n\r\n",  // a field of 41 bytes
        ] {
            #expect(head(refused) == nil, "\(refused.debugDescription)")
        }
    }

    @Test func theShapeOfSubscribeRequestsTheReaderTakes() throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldCount = 4
        func head(_ text: String) -> RequestReader.Head? {
            Array(text.utf8).withUnsafeBytes { RequestReader.Head.parse($0, maximumBody: 100, limits: limits) }
        }
        let line = "GET /.well-known/mercure?topic=%2Fa&topic=b HTTP/1.1\r\n"
        let text = line + "host: x\r\nOrigin: https://a.example\r\nLast-Event-ID:  e 1 \r\nConnection: keep-alive\r\n\r\n"
        let taken = try #require(head(text)?.subscribe, "a subscription, with no body")
        #expect(head(text)?.length == text.utf8.count)
        // As NIO's decoder gives it.
        #expect(taken.method == .GET)
        #expect(taken.version == .http1_1)
        #expect(taken.uri == "/.well-known/mercure?topic=%2Fa&topic=b")
        #expect(taken.headers.map { "\($0.name)=\($0.value)" } == ["host=x", "Origin=https://a.example", "Last-Event-ID=e 1", "Connection=keep-alive"])
        #expect(taken.isKeepAlive)
        #expect(head("GET /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")?.subscribe?.uri == "/.well-known/mercure")
        #expect(head("POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")?.subscribe == nil, "a publish")
        // (Every request below has one `Host`, or the reader leaves it to the door, which refuses it.)
        let hosted = line + "Host: x\r\n"
        for refused in [
            "GET /.well-known/mercure?topic=t HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercure?topic=t  HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercurex HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercure/subscriptions HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercure?topic=t#f HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercure?topic=\u{E9} HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercure?topic=t\tx HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://x/.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n",
            "get /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n",
            "HEAD /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n",
            hosted + "Content-Length: 1\r\n\r\n",
            hosted + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n",
            hosted + "Content-Length: 0 \t\r\n\r\n",
            hosted + "Transfer-Encoding: chunked\r\n\r\n",
            hosted + "Upgrade: websocket\r\n\r\n",
            hosted + "Expect: 100-continue\r\n\r\n",
            hosted + "Connection: close\r\n\r\n",
            hosted + "Connection: keep-alive, Upgrade\r\n\r\n",
            hosted + "X: 1\r\n folded\r\n\r\n",
            hosted + "X: 1\nY: 2\r\n\r\n",
            hosted + "X y: 1\r\n\r\n",
            hosted + "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",  // five fields, NIO's decoder takes four
            "GET /.well-known/mercure?topic=t HTTP/1.1\r\n\r\n",  // no Host
            hosted + "Host: x\r\n\r\n",  // two
        ] {
            #expect(head(refused) == nil, "\(refused.debugDescription)")
        }
    }

    /// A subscribe request read as bytes never brings NIO's decoder and encoder into the pipeline,
    /// even when it comes a byte at a time.
    @Test func aSubscriptionCutIntoReadsOfAByteIsReadWithNoDecoder() async throws {
        try await self.withDoor { hub, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: "")
            let decoders = DecoderWatch()
            try await channel.pipeline.addHandler(decoders, position: .first).get()
            for byte in "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n".utf8 {
                try await channel.writeInbound(ByteBuffer(bytes: [byte]))
            }
            #expect(try await self.written(by: channel, until: "\r\n\r\n:\n").hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(try await handedOn.get() == nil)
            #expect(hub.subscriberCount == 1)
            #expect(decoders.seen.withLockedValue { $0 } == false, "no decoder was added")
            try await channel.close()
        }
    }

    /// A subscribe request that fails its checks goes on to the route, and what the client sent
    /// after it goes on too, whole and in order; the answer to a `HEAD` among them has no body.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func aSubscriptionThatFailsItsChecksGoesOnToTheRouteWithWhatCameAfter(replay: Bool) async throws {
        try await self.withDoor { hub, server in
            // No topic: refused at once, or after a task when there is a replay to read first.
            let target = replay ? "/.well-known/mercure?lastEventID=earliest" : "/.well-known/mercure"
            let (channel, handedOn) = try await self.openConnection(
                server,
                reading: "GET \(target) HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: y\r\n\r\n"
            )
            let connection = try #require(try await handedOn.get())
            #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil, "the door answered nothing")
            #expect(hub.subscriberCount == 0)
            var parts: [String] = []
            try await connection.executeThenClose { inbound, outbound in
                for try await part in inbound {
                    switch part {
                    case .head(let head): parts.append("\(head.method) \(head.path ?? "")")
                    case .body: parts.append("body")
                    case .end: parts.append("end")
                    }
                    guard case .end = part else { continue }
                    let body = parts.count == 2 ? "nope" : "hello"
                    try await outbound.write(.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "\(body.utf8.count)"])))
                    try await outbound.write(.body(ByteBuffer(string: body)))
                    try await outbound.write(.end(nil))
                    if parts.count == 4 { break }
                }
            }
            #expect(parts == ["GET \(target)", "end", "HEAD /healthz", "end"])
            var answers = ""
            while let bytes = try await channel.readOutbound(as: ByteBuffer.self) { answers += String(buffer: bytes) }
            #expect(answers.contains("\r\n\r\nnope"), "\(answers)")
            #expect(!answers.contains("hello"), "a response to HEAD has no body: \(answers)")
        }
    }

    /// A subscription being opened or a publish being stored: the connection reads on until the
    /// next request begins to come.
    @Test(arguments: [false, true])
    func aConnectionReadsOnWhileItsRequestIsCheckedUntilTheNextRequestComes(subscribes: Bool) async throws {
        try await self.withDoor { hub, server in
            let (channel, _) = try await self.openConnection(server, reading: "")
            let reads = ReadCounter()
            try await channel.pipeline.addHandler(reads, position: .first).get()
            // With a replay to read: a task opens it (one without is opened within the read).
            let subscribe = "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: earliest\r\n\r\n"
            let request = subscribes ? subscribe : try await self.publishRequest("topic=t&id=one&data=1")
            let next = "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n"
            // All on the loop at once: the request's task, which answers through the loop, cannot have answered.
            // The count with the read held is taken there too: the request may be answered as soon as the block ends.
            let (whileChecking, onceNextCame, held) = try await channel.testingEventLoop.executeInContext {
                channel.pipeline.fireChannelRead(ByteBuffer(string: request))
                let before = reads.count.withLockedValue { $0 }
                channel.pipeline.read()
                let whileChecking = reads.count.withLockedValue { $0 } - before
                channel.pipeline.fireChannelRead(ByteBuffer(string: next))
                channel.pipeline.read()
                let held = reads.count.withLockedValue { $0 }
                return (whileChecking, held - before - whileChecking, held)
            }
            #expect(whileChecking == 1, "a read goes on while the request is checked")
            #expect(onceNextCame == 0, "and waits once the next request came")
            let answer = try await self.written(by: channel, until: subscribes ? "\r\n\r\n:\n" : "\r\n\r\none")
            #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(answer)")
            #expect(reads.count.withLockedValue { $0 } == held + 1, "the held read goes on once it is answered")
            if subscribes {
                #expect(hub.subscriberCount == 1)
            } else {
                #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one"])
            }
            try await channel.close()
        }
    }

    @Test func aConnectionThatSendsNoRequestIsClosedAtTheRequestTimeout() async throws {
        try await self.withDoor { _, server in
            let (channel, handedOn) = try await self.openConnection(server, reading: "")
            let timeout = TimeAmount(Self.requestTimeout)
            await channel.testingEventLoop.advanceTime(by: timeout - .milliseconds(1))
            #expect(channel.isActive, "not before the timeout")
            await channel.testingEventLoop.advanceTime(by: .milliseconds(1))
            try #require(!channel.isActive, "closed at the timeout")
            #expect(try await handedOn.get() == nil, "with no task for it")
            #expect(try await channel.readOutbound(as: ByteBuffer.self) == nil, "and nothing said: no request began")
        }
    }

    @Test func aPublishThatDoesNotComeWholeInTimeIsAnswered408() async throws {
        try await self.withDoor { hub, server in
            let request = try await self.publishRequest("topic=t&id=one&data=1")
            let (channel, handedOn) = try await self.openConnection(server, reading: String(request.dropLast(4)))
            await channel.testingEventLoop.advanceTime(by: TimeAmount(Self.requestTimeout))
            let answer = try await self.written(by: channel, until: "seconds\n")
            #expect(answer.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), "\(answer)")
            #expect(answer.contains("Connection: close\r\n"))
            #expect(answer.hasSuffix("\r\n\r\nthe request did not come whole within 60.0 seconds\n"), "\(answer)")
            for _ in 0..<500 where channel.isActive {
                await channel.testingEventLoop.run()
                try await Task.sleep(for: .milliseconds(10))
            }
            try #require(!channel.isActive, "then the connection closes")
            #expect(try await handedOn.get() == nil)
            #expect(try await hub.store.updates(through: .max).isEmpty)
        }
    }

    @Test func aKeptAliveConnectionHasTheWholeTimeoutAgainFromEachAnswer() async throws {
        try await self.withDoor { hub, server in
            let (channel, _) = try await self.openConnection(server, reading: "")
            let timeout = TimeAmount(Self.requestTimeout)
            await channel.testingEventLoop.advanceTime(by: timeout - .seconds(1))
            try await channel.writeInbound(ByteBuffer(string: try await self.publishRequest("topic=t&id=one&data=1")))
            _ = try await self.written(by: channel, until: "\r\n\r\none")
            await channel.testingEventLoop.advanceTime(by: timeout - .seconds(1))
            #expect(channel.isActive, "counted from the answer, not from the opening")
            await channel.testingEventLoop.advanceTime(by: .seconds(1))
            #expect(!channel.isActive)
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one"])
        }
    }

    @Test(.timeLimit(.minutes(1))) func aPublishStillBeingStoredAtTheRequestTimeoutIsAnswered() async throws {
        let store = HeldStore()
        try await self.withDoor(store: store) { hub, server in
            let (channel, _) = try await self.openConnection(server, reading: try await self.publishRequest("topic=t&id=one&data=1"))
            let timeout = TimeAmount(Self.requestTimeout)
            await channel.testingEventLoop.advanceTime(by: timeout + .seconds(1))
            #expect(channel.isActive, "the request came whole: the timeout does not close the connection")
            store.release()
            _ = try await self.written(by: channel, until: "\r\n\r\none")
            await channel.testingEventLoop.advanceTime(by: timeout - .seconds(1))
            #expect(channel.isActive, "counted from the answer")
            await channel.testingEventLoop.advanceTime(by: .seconds(1))
            #expect(!channel.isActive)
            #expect(try await hub.store.updates(through: .max).map(\.update.id) == ["one"])
        }
    }

    @Test func aSubscriptionsStreamIsNotTimed() async throws {
        try await self.withDoor { hub, server in
            let (channel, _) = try await self.connection(server, reading: "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = try await self.written(by: channel, until: ":\n")
            await channel.testingEventLoop.advanceTime(by: TimeAmount(Self.requestTimeout) * 3)
            #expect(channel.isActive)
            try await hub.publish(Update(id: "late", topics: ["t"], data: "x"))
            _ = try await self.written(by: channel, until: "id: late\ndata: x\n\n")
            #expect(hub.subscriberCount == 1)
            try await channel.close()
        }
    }

    @Test func httpDates() {
        #expect(HubDoor.httpDate(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HubDoor.httpDate(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HubDoor.httpDate(951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
        #expect(HubDoor.httpDate(1_798_761_599) == "Thu, 31 Dec 2026 23:59:59 GMT")
    }

    @Test(arguments: [
        "/.well-known/mercure?topic=a&topic=b", "/", "//twice", "/a:b", "/spaces%20and?q=%ZZ",
        "http://example.com/x?y", "http://example.com", "*", "", "example.com:443",
    ])
    func theCodecConvertsARequestAsNIOsCodecDoes(_ uri: String) throws {
        var headers: HTTPHeaders = ["Host": "example.com", "Cookie": "a=1", "cookie": "b=2", "X-Other": "x"]
        headers.add(name: "X-Other", value: "y")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: uri, headers: headers)
        let nios = Result { try HTTPRequest(head, secure: false, splitCookie: false) }
        let ours = Result { try HubHTTP1Codec.request(head) }
        switch (nios, ours) {
        case (.success(let nios), .success(let ours)): #expect(nios == ours)
        case (.failure(let nios), .failure(let ours)): #expect("\(nios)" == "\(ours)")
        default: Issue.record("\(nios) against \(ours)")
        }
        let unknown = HTTPRequestHead(version: .http1_1, method: .RAW(value: "BREW"), uri: uri, headers: headers)
        #expect(try HubHTTP1Codec.request(unknown) == HTTPRequest(unknown, secure: false, splitCookie: false))
    }

    @Test func anHTTP10RequestOrOneThatDoesNotKeepItsConnectionSaysCloseAsHummingbirdReadsIt() throws {
        func connection(_ version: HTTPVersion, _ headers: HTTPHeaders) throws -> String? {
            try HubHTTP1Codec.request(HTTPRequestHead(version: version, method: .GET, uri: "/", headers: headers))
                .headerFields[.connection]
        }
        #expect(try connection(.http1_0, [:]) == "close")
        #expect(try connection(.http1_0, ["Connection": "keep-alive"]) == "close", "its answer may end with the connection")
        #expect(try connection(.http1_1, [:]) == nil)
        #expect(try connection(.http1_1, ["Connection": "Close"]) == "close", "Hummingbird closes on `close` alone")
    }

    @Test func aFieldValueReadInPlaceIsTheSubscriptValue() {
        let fields: HTTPFields = [
            .contentLength: "12", .connection: "keep-alive", .connection: "Close", .cookie: "a=1", .cookie: "b=2",
        ]
        for name in [HTTPField.Name.contentLength, .connection, .cookie, .origin] {
            #expect(fields.value(of: name) == fields[name], "\(name)")
        }
        #expect(fields.value(of: .contentLength) == "12")
        #expect(fields.value(of: .connection) == "keep-alive, Close", "several: joined")
        #expect(fields.value(of: .origin) == nil)
        #expect(Hub.closesAfterResponse(fields))
    }
}

/// A history in memory whose appends wait until `release()`.
private final class HeldStore: EventStore {
    private let store = InMemoryEventStore()
    private let released = NIOLockedValueBox(false)

    func release() {
        self.released.withLockedValue { $0 = true }
    }

    func append(_ updates: [Update]) async throws -> [StoredUpdate] {
        for _ in 0..<5_000 where !self.released.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
        return try await self.store.append(updates)
    }

    func lastSequence() async throws -> UInt64 { try await self.store.lastSequence() }
    func lastEventID() async throws -> String? { try await self.store.lastEventID() }
    func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
        try await self.store.updates(after: lastEventID, through: last)
    }
    func updates(through last: UInt64) async throws -> [StoredUpdate] { try await self.store.updates(through: last) }
    func size() async throws -> EventStoreSize { try await self.store.size() }
}

/// Sees whether NIO's decoder is ever added behind it.
private final class DecoderWatch: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let seen = NIOLockedValueBox(false)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.look(context)
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.look(context)
        context.fireChannelReadComplete()
    }

    private func look(_ context: ChannelHandlerContext) {
        if (try? context.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)) != nil {
            self.seen.withLockedValue { $0 = true }
        }
    }
}

/// Counts the reads that reach the start of the pipeline.
private final class ReadCounter: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = NIOAny
    let count = NIOLockedValueBox(0)

    func read(context: ChannelHandlerContext) {
        self.count.withLockedValue { $0 += 1 }
        context.read()
    }
}
