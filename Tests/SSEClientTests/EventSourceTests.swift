//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing

import HeraldTestSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import SSEClient

struct TimedOut: Error {}

/// Runs `body`, failing with `TimedOut` after `seconds`: no test can hang.
func withTimeLimit<T: Sendable>(_ seconds: Double = 10, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let result = try await group.next()!, let value = Optional(result) else { throw TimedOut() }
        return value
    }
}

/// The first `count` events of `source`, then closes it.
func firstEvents(_ count: Int, of source: EventSource, within seconds: Double = 10) async throws -> [ServerSentEvent] {
    try await withTimeLimit(seconds) {
        var events: [ServerSentEvent] = []
        for try await event in source {
            events.append(event)
            if events.count == count { break }
        }
        source.close()
        return events
    }
}

/// A configuration for tests: quick reconnection, so that nothing waits for seconds.
func quick(_ change: (inout EventSource.Configuration) -> Void = { _ in }) -> EventSource.Configuration {
    var configuration = EventSource.Configuration()
    configuration.reconnectionTime = .milliseconds(20)
    configuration.maximumReconnectionDelay = .milliseconds(100)
    change(&configuration)
    return configuration
}

extension EventSource {
    /// A source that waits on a manual clock.
    convenience init(onManual clock: ManualClock, url: String, configuration: Configuration) {
        self.init(url: url, configuration: configuration, httpClient: nil, logger: Logger(label: "test"), clock: clock)
    }
}

@Suite("EventSource against a live server")
struct EventSourceTests {
    @Test func sendsTheHeadersOfABrowserAndReceivesEvents() async throws {
        try await withTestServer { _, _, responder in
            try await responder.stream("id: 1\nevent: price\ndata: 42\n\ndata: a\ndata: b\n\n")
        } _: { server in
            let source = EventSource(url: server.url + "/events", configuration: quick())
            let events = try await firstEvents(2, of: source)
            #expect(events.map(\.data) == ["42", "a\nb"])
            #expect(events.map(\.type) == ["price", "message"])
            #expect(events.map(\.id) == ["1", "1"])
            let request = try #require(server.requests.first)
            #expect(request.uri == "/events")
            #expect(request.method == .GET)
            #expect(request.headers["Accept"] == ["text/event-stream"])
            #expect(request.headers["Cache-Control"] == ["no-cache"])
            #expect(request.headers["Last-Event-ID"].isEmpty)
        }
    }

    @Test func reconnectsWithLastEventIDAfterTheStreamEnds() async throws {
        try await withTestServer { _, index, responder in
            try await responder.stream("id: \(index + 1)\ndata: event \(index + 1)\n\n")
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let events = try await firstEvents(3, of: source)
            #expect(events.map(\.data) == ["event 1", "event 2", "event 3"])
            #expect(server.requests.prefix(3).map { $0.headers["Last-Event-ID"] } == [[], ["1"], ["2"]])
        }
    }

    @Test func anUnfinishedEventIsDroppedAndItsIDNotUsed() async throws {
        try await withTestServer { _, index, responder in
            if index == 0 {
                try await responder.stream("id: 1\ndata: kept\n\nid: 2\ndata: never dispatched\n")
            } else {
                try await responder.stream("data: second connection\n\n")
            }
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let events = try await firstEvents(2, of: source)
            #expect(events.map(\.data) == ["kept", "second connection"])
            #expect(server.requests[1].headers["Last-Event-ID"] == ["1"])
        }
    }

    @Test func aResetIDIsNotSent() async throws {
        try await withTestServer { _, index, responder in
            try await responder.stream(index == 0 ? "id: 1\ndata: a\n\nid\ndata: b\n\n" : "data: c\n\n")
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            _ = try await firstEvents(3, of: source)
            #expect(server.requests[1].headers["Last-Event-ID"].isEmpty)
        }
    }

    @Test func theInitialLastEventIDIsSentOnTheFirstConnection() async throws {
        try await withTestServer { _, _, responder in
            try await responder.stream("data: x\n\n")
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick { $0.lastEventID = "41" })
            _ = try await firstEvents(1, of: source)
            #expect(server.requests[0].headers["Last-Event-ID"] == ["41"])
        }
    }

    @Test(arguments: ["text/event-stream; charset=utf-8", "Text/Event-Stream", "text/event-stream;charset=UTF-8"])
    func contentTypeParametersAndCaseAreAccepted(_ contentType: String) async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(.ok, ["Content-Type": contentType])
            try await responder.write("data: ok\n\n")
            try await responder.end()
        } _: { server in
            let events = try await firstEvents(1, of: EventSource(url: server.url, configuration: quick()))
            #expect(events.map(\.data) == ["ok"])
        }
    }

    @Test(arguments: [HTTPResponseStatus.internalServerError, .unauthorized, .notFound, .serviceUnavailable])
    func anotherStatusFailsWithoutReconnecting(_ status: HTTPResponseStatus) async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(status, ["Content-Type": "text/plain"])
            try await responder.end()
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
            #expect(error.code == .unexpectedStatus)
            #expect(error.status == Int(status.code))
            #expect(error.reason == nil)
            #expect(server.requests.count == 1)
            #expect(source.state == .closed)
        }
    }

    @Test(arguments: [
        ("text/plain; charset=utf-8", "Missing topic\r\n\tparameter\n", "Missing topic parameter" as String?),
        ("application/problem+json", #"{"title": "Forbidden"}"#, #"{"title": "Forbidden"}"#),
        ("Application/JSON", #"{"error":"expired"}"#, #"{"error":"expired"}"#),
        ("text/html", "<h1>403 Forbidden</h1>", nil),
        ("application/octet-stream", "reason", nil),
        ("text/plain", " \n ", nil),
    ])
    func theReasonOfARefusalIsKeptWhenItIsText(_ contentType: String, _ body: String, _ reason: String?) async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(.forbidden, ["Content-Type": contentType])
            try await responder.write(body)
            try await responder.end()
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
            #expect(error.status == 403)
            #expect(error.reason == reason)
            let said = reason.map { " (it said: \($0))" } ?? ""
            #expect(error.description == "\(server.url) answered with status 403, not 200: not reconnecting\(said)")
        }
    }

    @Test func theReasonOfARefusalIsBoundedInSizeAndInTime() async throws {
        // A body longer than the limit keeps its start.
        try await withTestServer { _, _, responder in
            try await responder.head(.badRequest, ["Content-Type": "text/plain"])
            try await responder.write(String(repeating: "abcdefgh", count: 200))
            try await responder.end()
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
            #expect(error.reason == String(repeating: "abcdefgh", count: 64))
        }
        // A body that never ends is read for the connect timeout, and keeps what came.
        try await withTestServer { _, _, responder in
            try await responder.head(.serviceUnavailable, ["Content-Type": "text/plain"])
            try await responder.write("try again later")
            try await Task.sleep(for: .seconds(60))
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick { $0.connectTimeout = .milliseconds(300) })
            let error = try await #require(throws: EventSourceError.self) {
                _ = try await firstEvents(1, of: source, within: 5)
            }
            #expect(error.status == 503)
            #expect(error.reason == "try again later")
        }
    }

    @Test(arguments: ["text/plain", "application/json", "", "text/event-streams"])
    func aWrongContentTypeFailsWithoutReconnecting(_ contentType: String) async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(.ok, contentType.isEmpty ? [:] : ["Content-Type": contentType])
            try await responder.write("data: not read\n\n")
            try await responder.end()
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
            #expect(error.code == .unexpectedContentType)
            #expect(server.requests.count == 1)
        }
    }

    @Test func noContentStopsForGood() async throws {
        try await withTestServer { _, index, responder in
            if index == 0 {
                try await responder.stream("data: last\n\n")
            } else {
                try await responder.head(.noContent, [:])
                try await responder.end()
            }
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let events = try await withTimeLimit {
                var events: [ServerSentEvent] = []
                for try await event in source { events.append(event) }
                return events
            }
            #expect(events.map(\.data) == ["last"])
            #expect(server.requests.count == 2)
            #expect(source.state == .closed)
        }
    }

    @Test(arguments: [HTTPResponseStatus.movedPermanently, .found, .seeOther, .temporaryRedirect, .permanentRedirect])
    func redirectsAreFollowed(_ status: HTTPResponseStatus) async throws {
        try await withTestServer { request, _, responder in
            if request.uri == "/old" {
                try await responder.head(status, ["Location": "/new"])
                try await responder.end()
            } else {
                try await responder.stream("data: moved\n\n")
            }
        } _: { server in
            let events = try await firstEvents(1, of: EventSource(url: server.url + "/old", configuration: quick()))
            #expect(events.map(\.data) == ["moved"])
            #expect(server.requests.map(\.uri).prefix(2) == ["/old", "/new"])
        }
    }

    @Test func retrySetsTheReconnectionTime() async throws {
        try await withTestServer { _, index, responder in
            try await responder.stream(index == 0 ? "retry: 1234\ndata: a\n\n" : "data: b\n\n")
        } _: { server in
            let clock = ManualClock()
            let source = EventSource(onManual: clock, url: server.url, configuration: quick { $0.readTimeout = nil })
            try await withTimeLimit { () async throws in
                var iterator = source.makeAsyncIterator()
                #expect(try await iterator.next()?.data == "a")
                // The stream has ended: the source sleeps for the reconnection time, and no longer.
                while clock.sleepingUntil.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
                #expect(clock.sleepingUntil == [clock.now.advanced(by: .milliseconds(1234))])
                #expect(server.requests.count == 1)
                #expect(source.reconnectionTime == .milliseconds(1234))
                clock.advance(by: .milliseconds(1233))
                #expect(server.requests.count == 1)
                clock.advance(by: .milliseconds(1))
                #expect(try await iterator.next()?.data == "b")
                #expect(server.requests.count == 2)
                source.close()
            }
        }
    }

    @Test func aStalledStreamIsDroppedAfterTheReadTimeout() async throws {
        try await withTestServer { _, index, responder in
            if index == 0 {
                try await responder.head()
                try await responder.write("data: then silence\n\n")
                try await Task.sleep(for: .seconds(30))
            } else {
                try await responder.stream("data: after the timeout\n\n")
            }
        } _: { server in
            let clock = ManualClock()
            let source = EventSource(onManual: clock, url: server.url, configuration: quick { $0.readTimeout = .seconds(5) })
            try await withTimeLimit { () async throws in
                var iterator = source.makeAsyncIterator()
                #expect(try await iterator.next()?.data == "then silence")
                // The watchdog waits for 5 s of silence on the manual clock.
                while !clock.sleepingUntil.contains(where: { $0.offset == .seconds(5) }) {
                    try await Task.sleep(for: .milliseconds(5))
                }
                #expect(server.requests.count == 1)
                clock.advance(by: .seconds(5))
                // The source reconnects after the reconnection time (at most 100 ms here), whatever
                // else sleeps on the clock meanwhile: time moves on until the event arrives.
                let ticker = Task {
                    while !Task.isCancelled {
                        clock.advance(by: .milliseconds(50))
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
                defer { ticker.cancel() }
                #expect(try await iterator.next()?.data == "after the timeout")
                source.close()
            }
        }
    }

    @Test func aSlowConsumerIsNotAStalledStream() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head()
            try await responder.write("data: a\n\ndata: b\n\n")
            try await Task.sleep(for: .seconds(30))
        } _: { server in
            let clock = ManualClock()
            let source = EventSource(onManual: clock, url: server.url, configuration: quick { $0.readTimeout = .seconds(5) })
            try await withTimeLimit { () async throws in
                var iterator = source.makeAsyncIterator()
                #expect(try await iterator.next()?.data == "a")
                // "b" waits for the consumer, who takes a long time over "a".
                while clock.sleepingUntil.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
                clock.advance(by: .seconds(60))
                try await Task.sleep(for: .milliseconds(50))
                #expect(try await iterator.next()?.data == "b")
                #expect(source.state == .open, "time spent waiting for the consumer is not silence")
                #expect(server.requests.count == 1)
                source.close()
            }
        }
    }

    @Test func keepAliveCommentsKeepAStreamAlive() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head()
            for _ in 0..<40 {
                try await responder.write(": keep-alive\n")
                try await Task.sleep(for: .milliseconds(60))
            }
            try await responder.write("data: done\n\n")
            try await responder.end()
        } _: { server in
            // Comments 60 ms apart for 2.4 s, then the event: a 1 s read timeout would fire if the
            // comments did not count, and leaves a busy machine plenty of slack if they do.
            let source = EventSource(url: server.url, configuration: quick { $0.readTimeout = .seconds(1) })
            let events = try await firstEvents(1, of: source)
            #expect(events.map(\.data) == ["done"])
            #expect(server.requests.count == 1, "comments count as activity: no reconnection")
        }
    }

    /// Timeouts and waits longer than a clock counts (some 292 years) wait "for ever": the
    /// connection's, the read's, and the reconnection's, which `close()` ends.
    @Test func timeoutsAndWaitsOfCenturiesWaitForEver() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head()
            try await responder.write("data: a\n\n")
            try await responder.end()
        } _: { server in
            let source = EventSource(
                url: server.url,
                configuration: quick {
                    $0.connectTimeout = .seconds(Int64.max)
                    $0.readTimeout = .seconds(Int64.max)
                    $0.reconnectionTime = .seconds(Int64.max)
                    $0.maximumReconnectionDelay = .seconds(Int64.max)
                }
            )
            try await withTimeLimit {
                var iterator = source.makeAsyncIterator()
                #expect(try await iterator.next()?.data == "a")
                // The stream ended: the source waits to reconnect, until it is closed.
                while source.state != .connecting { try await Task.sleep(for: .milliseconds(5)) }
                try await Task.sleep(for: .milliseconds(100))
                #expect(source.state == .connecting && server.requests.count == 1)
                source.close()
                #expect(try await iterator.next() == nil)
            }
        }
    }

    @Test func eventsDeliveredOneByteAtATime() async throws {
        let stream = "retry: 10\r\nid: 9\r\nevent: e\r\ndata: é😀\r\n\r\n"
        try await withTestServer { _, _, responder in
            try await responder.head()
            for byte in stream.utf8 {
                try await responder.outbound.write(.body(.byteBuffer(ByteBuffer(bytes: [byte]))))
            }
            try await responder.end()
        } _: { server in
            let events = try await firstEvents(1, of: EventSource(url: server.url, configuration: quick()))
            #expect(events.first?.data == "é😀")
            #expect(events.first?.type == "e")
            #expect(events.first?.id == "9")
        }
    }

    @Test func headersAreRecomputedOnEveryConnection() async throws {
        let counter = NIOLockedValueBox(0)
        try await withTestServer { _, _, responder in
            try await responder.stream("data: x\n\n")
        } _: { server in
            let source = EventSource(
                url: server.url,
                configuration: quick {
                    $0.headers = ["X-Static": "s", "Authorization": "Bearer stale"]
                    $0.headerProvider = {
                        let count = counter.withLockedValue { value in
                            value += 1
                            return value
                        }
                        return ["Authorization": "Bearer token-\(count)"]
                    }
                }
            )
            _ = try await firstEvents(3, of: source)
            #expect(server.requests.prefix(3).map { $0.headers["Authorization"] } == [["Bearer token-1"], ["Bearer token-2"], ["Bearer token-3"]])
            #expect(server.requests.allSatisfy { $0.headers["X-Static"] == ["s"] })
        }
    }

    @Test func postsABody() async throws {
        try await withTestServer { request, _, responder in
            try await responder.stream("data: you said \(request.body)\n\n")
        } _: { server in
            let source = EventSource(
                url: server.url,
                configuration: quick {
                    $0.method = .POST
                    $0.body = Array(#"{"prompt": "hi"}"#.utf8)
                    $0.headers = ["Content-Type": "application/json"]
                }
            )
            let events = try await firstEvents(2, of: source)
            #expect(events.map(\.data) == [#"you said {"prompt": "hi"}"#, #"you said {"prompt": "hi"}"#])
            #expect(server.requests.prefix(2).allSatisfy { $0.method == .POST })
        }
    }

    @Test func gzipResponsesAreDecoded() async throws {
        try await withTestServer(compress: true) { _, _, responder in
            try await responder.stream(String(repeating: "data: compressed\n\n", count: 50))
        } _: { server in
            let events = try await firstEvents(50, of: EventSource(url: server.url, configuration: quick()))
            #expect(events.count == 50 && events.allSatisfy { $0.data == "compressed" })
            #expect(server.requests[0].headers["Accept-Encoding"].first?.contains("gzip") == true)
        }
    }

    /// A header that cannot be sent fails the source at once, with no request and no retry (every
    /// attempt would fail the same way), rather than back off for ever.
    @Test(arguments: [
        ("lastEventID", "line\r\nX-Injected: yes", #"invalidHeaderFieldValues(["line\r\nX-Injected: yes"])"#),
        ("value", "a\nb", #"invalidHeaderFieldValues(["a\nb"])"#),
        ("name", "Bad Name", #"invalidHeaderFieldNames(["Bad Name"])"#),
    ])
    func aHeaderThatCannotBeSentFailsAtOnce(_ place: String, _ text: String, _ said: String) async throws {
        try await withTestServer { _, _, responder in
            try await responder.stream("data: never\n\n")
        } _: { server in
            let source = EventSource(
                url: server.url,
                configuration: quick {
                    switch place {
                    case "lastEventID": $0.lastEventID = text
                    case "value": $0.headers.add(name: "X-Value", value: text)
                    default: $0.headers.add(name: text, value: "x")
                    }
                }
            )
            let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
            #expect(error.code == .invalidHeader)
            #expect(
                "\(error)"
                    == "cannot send the request to \(server.url): \(said) (a header's name must be a token, and its value must hold no line break or NUL)"
            )
            #expect(server.requests.isEmpty)
            #expect(source.state == .closed)
        }
    }

    @Test(.timeLimit(.minutes(1))) func anUnreachableServerFailsOnceTheAttemptsAreUsedUp() async throws {
        // Port 1: nothing listens there. (Not a port that was just free: a server of another
        // test running meanwhile could be given it, and answer.)
        let url = "http://127.0.0.1:1/"
        let source = EventSource(
            url: url,
            configuration: quick {
                $0.maximumAttempts = 3
                // Past the time limit: each refused connection fails its attempt at once, rather
                // than being tried again until this deadline.
                $0.connectTimeout = .seconds(120)
            }
        )
        let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
        #expect(error.code == .attemptsExhausted)
        #expect(error.underlying != nil)
        #expect("\(error)" == "gave up after 3 reconnection attempts to \(url): connection refused")
        #expect(source.state == .closed)
    }

    @Test(.timeLimit(.minutes(1))) func aHostThatDoesNotResolveIsSaidByName() async throws {
        // `.invalid` never resolves (RFC 6761), with or without a network.
        let source = EventSource(url: "http://nonexistent.invalid/events", configuration: quick { $0.maximumAttempts = 0 })
        let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
        #expect(error.code == .attemptsExhausted)
        let reason = "with reconnection off: cannot resolve nonexistent.invalid: "
        #expect("\(error)".hasPrefix("gave up after one connection to http://nonexistent.invalid/events, \(reason)"), "\(error)")
    }

    @Test func networkErrorsAreSaidPlainlyAndOthersKeepTheirOwnDescription() {
        let reset = IOError(errnoCode: ECONNRESET, reason: "read(descriptor:pointer:size:)")
        #expect(describe(networkError: reset) == "connection reset by peer")
        #expect(describe(networkError: HTTPClientError.remoteConnectionClosed) == "the server closed the connection")
        #expect(describe(networkError: HTTPClientError.invalidURL) == "\(HTTPClientError.invalidURL)")
        for timeout in [HTTPClientError.connectTimeout, .deadlineExceeded, .readTimeout] {
            #expect(describe(networkError: timeout) == "no answer within the time allowed")
        }
        // TLS: the certificate not trusted is said by `herald`'s tests, from a real handshake.
        #expect(
            describe(networkError: NIOSSLError.handshakeFailed(.sslError([.eofDuringHandshake])))
                == "the server closed the connection during the TLS handshake (is it an https server?)"
        )
        #expect(describe(networkError: NIOSSLExtraError.failedToValidateHostname) == "the server's certificate is not for the host of the URL")
        #expect(!isUntrustedCertificate(NIOSSLError.handshakeFailed(.sslError([.eofDuringHandshake]))))
    }

    @Test func withoutReconnectionTheSourceEndsWithTheStream() async throws {
        try await withTestServer { _, _, responder in
            try await responder.stream("data: only\n\n")
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick { $0.maximumAttempts = 0 })
            let events = try await withTimeLimit {
                var events: [ServerSentEvent] = []
                for try await event in source { events.append(event) }
                return events
            }
            #expect(events.map(\.data) == ["only"])
            #expect(server.requests.count == 1)
        }
    }

    @Test func closeEndsTheIterationAndTheConnection() async throws {
        let disconnected = NIOLockedValueBox(false)
        try await withTestServer { _, _, responder in
            try await responder.head()
            try await responder.write("data: first\n\n")
            do {
                for _ in 0..<1000 {
                    try await Task.sleep(for: .milliseconds(10))
                    try await responder.write(": ping\n")
                }
            } catch {
                disconnected.withLockedValue { $0 = true }
            }
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            try await withTimeLimit { () async throws in
                var iterator = source.makeAsyncIterator()
                #expect(try await iterator.next()?.data == "first")
                Task { source.close() }
                #expect(try await iterator.next() == nil)
            }
            #expect(source.state == .closed)
            try await withTimeLimit {
                while !disconnected.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(server.requests.count == 1)
        }
    }

    @Test func cancellingTheConsumerClosesTheSource() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head()
            try await responder.write("data: first\n\n")
            try await Task.sleep(for: .seconds(30))
        } _: { server in
            let source = EventSource(url: server.url, configuration: quick())
            let consumer = Task {
                var count = 0
                for try await _ in source { count += 1 }
                return count
            }
            try await withTimeLimit {
                while source.state != .open { try await Task.sleep(for: .milliseconds(5)) }
            }
            consumer.cancel()
            let count = try await withTimeLimit { try await consumer.value }
            #expect(count <= 1)
            try await withTimeLimit {
                while source.state != .closed { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
    }

    @Test func anInvalidURLFails() async throws {
        let source = EventSource(url: "ftp://example.com/events")
        let error = try await #require(throws: EventSourceError.self) { _ = try await firstEvents(1, of: source) }
        #expect(error.code == .invalidURL)
    }
}
