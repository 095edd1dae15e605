//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import HeraldTestSupport
import NIOConcurrencyHelpers
import SSEClient
import Testing
import Vapor
import VaporSSE
import VaporTesting

/// Runs `body` against a live Vapor server on 127.0.0.1 with the routes `configure` adds.
func withLiveApp(_ configure: (Application) throws -> Void, _ body: (Int) async throws -> Void) async throws {
    try await withApp { app in
        try configure(app)
        try await app.server.start(address: .hostname("127.0.0.1", port: 0))
        let port = try #require(app.http.server.shared.localAddress?.port)
        try await body(port)
        await app.server.shutdown()
    }
}

/// The status, headers and whole body of a GET.
func get(_ url: String, headers: HTTPHeaders = [:]) async throws -> (HTTPResponseStatus, HTTPHeaders, String) {
    var request = HTTPClientRequest(url: url)
    request.headers = headers
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
    let body = try await response.body.collect(upTo: 1 << 20)
    return (response.status, response.headers, String(buffer: body))
}

@Suite("VaporSSE")
struct VaporEventStreamTests {
    @Test func headersAndExactBytes() async throws {
        try await withLiveApp { app in
            app.get("events") { _ in
                EventStream(
                    [ServerSentEvent(data: "one\ntwo"), try ServerSentEvent(type: "price", data: " 42", id: "7")].async,
                    keepAlive: nil
                )
            }
        } _: { port in
            let (status, headers, body) = try await get("http://127.0.0.1:\(port)/events")
            #expect(status == .ok)
            #expect(headers.first(name: "Content-Type") == "text/event-stream")
            #expect(headers.first(name: "Cache-Control") == "no-cache, no-transform")
            #expect(headers.first(name: "X-Accel-Buffering") == "no")
            #expect(headers.first(name: "Content-Length") == nil)
            #expect(body == ":\ndata: one\ndata: two\n\nid: 7\nevent: price\ndata:  42\n\n")
        }
    }

    @Test func lastEventIDFromTheHeaderOrTheQuery() async throws {
        try await withLiveApp { app in
            app.get("resume") { request in
                EventStream([ServerSentEvent(data: request.lastEventID ?? "none")].async, keepAlive: nil)
            }
        } _: { port in
            let cases: [(String, HTTPHeaders, String)] = [
                ("/resume", [:], "none"),
                ("/resume", ["Last-Event-ID": "41"], "41"),
                ("/resume?lastEventID=9", [:], "9"),
                ("/resume?lastEventID=9", ["Last-Event-ID": "41"], "41"),
                ("/resume?lastEventID=", [:], "none"),
            ]
            for (path, headers, expected) in cases {
                let (_, _, body) = try await get("http://127.0.0.1:\(port)\(path)", headers: headers)
                #expect(body == ":\ndata: \(expected)\n\n", "\(path) \(headers)")
            }
        }
    }

    @Test func keepAliveCommentsReachTheClient() async throws {
        try await withLiveApp { app in
            app.get("quiet") { _ in
                let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
                Task {
                    // Long beside the interval: under load the response may start late.
                    try await Task.sleep(for: .seconds(2))
                    continuation.yield(ServerSentEvent(data: "finally"))
                    continuation.finish()
                }
                return EventStream(events, keepAlive: KeepAlive(interval: .milliseconds(100), comment: "still here"))
            }
        } _: { port in
            let (_, _, body) = try await get("http://127.0.0.1:\(port)/quiet")
            #expect(body.hasPrefix(":\n: still here\n"))
            #expect(body.hasSuffix("data: finally\n\n"))
            let comments = body.split(separator: "\n").filter { $0 == ": still here" }.count
            #expect(comments >= 1, "keep-alive comments in the silence: \(body)")  // timing: SSENIOTests, on a manual clock
        }
    }

    @Test func theEventsAreCancelledOnceTheClientIsGone() async throws {
        // Vapor does not say when a client leaves: the next write (here a keep-alive) notices.
        let terminated = NIOLockedValueBox(false)
        try await withLiveApp { app in
            app.get("forever") { _ in
                let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
                continuation.onTermination = { _ in terminated.withLockedValue { $0 = true } }
                continuation.yield(ServerSentEvent(data: "hello"))
                return EventStream(events, keepAlive: KeepAlive(interval: .milliseconds(50)))
            }
        } _: { port in
            let source = EventSource(url: "http://127.0.0.1:\(port)/forever")
            var iterator = source.makeAsyncIterator()
            #expect(try await iterator.next()?.data == "hello")
            source.close()
            for _ in 0..<1000 where !terminated.withLockedValue({ $0 }) {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(terminated.withLockedValue { $0 }, "the producing sequence was cancelled")
        }
    }

    @Test func aBrowserLikeClientResumesFromLastEventID() async throws {
        try await withLiveApp { app in
            app.get("numbers") { request in
                let start = Int(request.lastEventID ?? "0") ?? 0
                return EventStream(
                    try (start + 1...start + 3).map { try ServerSentEvent(data: "n\($0)", id: String($0), retry: .milliseconds(10)) }.async,
                    keepAlive: nil
                )
            }
        } _: { port in
            let source = EventSource(url: "http://127.0.0.1:\(port)/numbers")
            var received: [String] = []
            for try await event in source {
                received.append(event.data)
                if received.count == 7 { break }
            }
            source.close()
            #expect(received == (1...7).map { "n\($0)" }, "no gap and no duplicate across reconnections")
        }
    }
}
