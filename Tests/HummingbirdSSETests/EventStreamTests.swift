//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import HTTPTypes
import HeraldTestSupport
import Hummingbird
import HummingbirdSSE
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import SSEClient
import Testing

@Suite("HummingbirdSSE")
struct EventStreamTests {
    func application(_ configure: (Router<BasicRequestContext>) -> Void) -> some ApplicationProtocol {
        let router = Router()
        configure(router)
        return Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            logger: Logger(label: "test")
        )
    }

    // Live servers only: HummingbirdTesting's `.router` hands the request's end to the body only
    // after the handler has started, and when the stream ends first Hummingbird's
    // `consumeWithCancellationOnInboundClose` drops its body source unfinished, which traps.
    @Test func headersAndExactBytes() async throws {
        let app = self.application { router in
            router.get("events") { _, _ in
                EventStream(
                    [ServerSentEvent(data: "one\ntwo"), try ServerSentEvent(type: "price", data: " 42", id: "7")].async,
                    keepAlive: nil
                )
            }
        }
        try await app.test(.live) { client in
            try await client.execute(uri: "/events", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/event-stream")
                #expect(response.headers[.cacheControl] == "no-cache, no-transform")
                #expect(response.headers[HTTPField.Name("X-Accel-Buffering")!] == "no")
                #expect(response.headers[.contentLength] == nil)
                #expect(String(buffer: response.body) == ":\ndata: one\ndata: two\n\nid: 7\nevent: price\ndata:  42\n\n")
            }
        }
    }

    @Test func lastEventIDFromTheHeaderOrTheQuery() async throws {
        let cases: [(String, HTTPFields, String)] = [
            ("/resume", [:], "none"),
            ("/resume", [HTTPField.Name("Last-Event-ID")!: "41"], "41"),
            ("/resume?lastEventID=9", [:], "9"),
            ("/resume?lastEventID=9", [HTTPField.Name("Last-Event-ID")!: "41"], "41"),
            ("/resume?lastEventID=", [:], "none"),
        ]
        for (uri, headers, expected) in cases {
            // A server each: the connection closes when the stream ends.
            let app = self.application { router in
                router.get("resume") { request, _ in
                    EventStream([ServerSentEvent(data: request.lastEventID ?? "none")].async, keepAlive: nil)
                }
            }
            try await app.test(.live) { client in
                try await client.execute(uri: uri, method: .get, headers: headers) { response in
                    #expect(String(buffer: response.body) == ":\ndata: \(expected)\n\n", "\(uri) \(headers)")
                }
            }
        }
    }

    @Test func theEventsAreCancelledWhenTheClientGoesAway() async throws {
        let terminated = NIOLockedValueBox(false)
        let app = self.application { router in
            router.get("forever") { _, _ in
                let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
                continuation.onTermination = { _ in terminated.withLockedValue { $0 = true } }
                continuation.yield(ServerSentEvent(data: "hello"))
                return EventStream(events)
            }
        }
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let source = EventSource(url: "http://127.0.0.1:\(port)/forever")
            var iterator = source.makeAsyncIterator()
            #expect(try await iterator.next()?.data == "hello")
            #expect(!terminated.withLockedValue { $0 })
            source.close()
            for _ in 0..<1000 where !terminated.withLockedValue({ $0 }) {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(terminated.withLockedValue { $0 }, "the producing sequence was cancelled")
        }
    }

    @Test func keepAliveCommentsReachTheClient() async throws {
        let app = self.application { router in
            router.get("quiet") { _, _ in
                let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
                Task {
                    // Long beside the interval: under load the response may start late.
                    try await Task.sleep(for: .seconds(2))
                    continuation.yield(ServerSentEvent(data: "finally"))
                    continuation.finish()
                }
                return EventStream(events, keepAlive: KeepAlive(interval: .milliseconds(100), comment: "still here"))
            }
        }
        try await app.test(.live) { client in
            try await client.execute(uri: "/quiet", method: .get) { response in
                let body = String(buffer: response.body)
                #expect(body.hasPrefix(":\n: still here\n"))
                #expect(body.hasSuffix("data: finally\n\n"))
                let comments = body.split(separator: "\n").filter { $0 == ": still here" }.count
                #expect(comments >= 1, "keep-alive comments in the silence: \(body)")  // timing: SSENIOTests, on a manual clock
            }
        }
    }

    @Test func aBrowserLikeClientResumesFromLastEventID() async throws {
        // Each connection sends three numbered events after the last one the client saw, then ends.
        let app = self.application { router in
            router.get("numbers") { request, _ in
                let start = Int(request.lastEventID ?? "0") ?? 0
                return EventStream(
                    try (start + 1...start + 3).map { try ServerSentEvent(data: "n\($0)", id: String($0), retry: .milliseconds(10)) }.async,
                    keepAlive: nil
                )
            }
        }
        try await app.test(.live) { client in
            let port = try #require(client.port)
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
