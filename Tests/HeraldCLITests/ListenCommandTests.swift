//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import HeraldTestSupport
import NIOCore
import NIOHTTP1
import Testing

/// `herald listen`, run as a process against a live server on 127.0.0.1.
@Suite("herald listen")
struct ListenCommandTests {
    @Test func printsJSONLinesLikeDecodeAndReconnectsWithLastEventID() async throws {
        try await withTestServer { _, index, responder in
            if index == 0 {
                try await responder.stream("retry: 10\nid: 1\nevent: price\ndata: 42\n\n: keep-alive\nid: 2\ndata: half")
            } else {
                try await responder.stream("id: 3\ndata: resumed\n\n")
            }
        } _: { server in
            let result = try await runHerald(["listen", server.url, "--json", "--max-events", "2"])
            #expect(result.status == 0, "\(result.standardError)")
            #expect(
                result.standardOutput == """
                    {"retry": 10}
                    {"type": "price", "data": "42", "lastEventId": "1"}
                    {"type": "message", "data": "resumed", "lastEventId": "3"}

                    """
            )
            #expect(server.requests[1].headers["Last-Event-ID"] == ["1"], "the unfinished event's id is not used")
        }
    }

    @Test func printsAReadableFormByDefault() async throws {
        try await withTestServer { _, _, responder in
            try await responder.stream("id: 7\nevent: update\ndata: line one\ndata: line two\n\ndata: plain\n\n")
        } _: { server in
            let result = try await runHerald(["listen", server.url, "--max-events", "2"])
            #expect(result.status == 0)
            #expect(result.standardOutput == "update #7\n  line one\n  line two\nmessage #7\n  plain\n")
        }
    }

    @Test func sendsHeadersMethodBodyAndLastEventID() async throws {
        try await withTestServer { _, _, responder in
            try await responder.stream("data: ok\n\n")
        } _: { server in
            let result = try await runHerald([
                "listen", server.url, "--max-events", "1", "-H", "Authorization: Bearer abc",
                "--header", "X-Trace:  1 2 ", "--method", "post", "--data", "{\"q\": 1}", "--last-event-id", "99",
            ])
            #expect(result.status == 0, "\(result.standardError)")
            let request = try #require(server.requests.first)
            #expect(request.method == .POST)
            #expect(request.body == "{\"q\": 1}")
            #expect(request.headers["Authorization"] == ["Bearer abc"])
            #expect(request.headers["X-Trace"] == ["1 2"])
            #expect(request.headers["Last-Event-ID"] == ["99"])
        }
    }

    @Test func noContentExitsZero() async throws {
        try await withTestServer { _, index, responder in
            if index == 0 {
                try await responder.stream("data: before\n\n")
            } else {
                try await responder.head(.noContent, [:])
                try await responder.end()
            }
        } _: { server in
            let result = try await runHerald(["listen", server.url, "--json"])
            #expect(result.status == 0)
            #expect(result.standardOutput == #"{"type": "message", "data": "before", "lastEventId": ""}"# + "\n")
            #expect(server.requests.count == 2)
        }
    }

    @Test func aServerErrorExitsNonZeroWithTheReason() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(.internalServerError, ["Content-Type": "text/plain"])
            try await responder.write("the history is unavailable\n")
            try await responder.end()
        } _: { server in
            let result = try await runHerald(["listen", server.url])
            #expect(result.status == 1)
            #expect(result.standardError.contains("status 500, not 200: not reconnecting (it said: the history is unavailable)"))
            #expect(server.requests.count == 1, "no reconnection after a 500")
        }
    }

    @Test func aWrongContentTypeExitsNonZeroWithTheReason() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(.ok, ["Content-Type": "text/html"])
            try await responder.end()
        } _: { server in
            let result = try await runHerald(["listen", server.url])
            #expect(result.status == 1)
            #expect(result.standardError.contains("text/html"))
        }
    }

    @Test func redirectsAreFollowed() async throws {
        try await withTestServer { request, _, responder in
            if request.uri == "/from" {
                try await responder.head(.temporaryRedirect, ["Location": "/to"])
                try await responder.end()
            } else {
                try await responder.stream("data: arrived\n\n")
            }
        } _: { server in
            let result = try await runHerald(["listen", server.url + "/from", "--json", "--max-events", "1"])
            #expect(result.status == 0)
            #expect(result.standardOutput.contains(#""data": "arrived""#))
        }
    }

    @Test func eventsDeliveredByteByByteArePrintedWhole() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head()
            for byte in "event: e\r\ndata: é\r\n\r\n".utf8 {
                try await responder.outbound.write(.body(.byteBuffer(ByteBuffer(bytes: [byte]))))
            }
            try await responder.end()
        } _: { server in
            let result = try await runHerald(["listen", server.url, "--json", "--max-events", "1"])
            #expect(result.standardOutput == #"{"type": "e", "data": "é", "lastEventId": ""}"# + "\n")
        }
    }

    @Test func noReconnectEndsWithTheStream() async throws {
        try await withTestServer { _, _, responder in
            try await responder.stream("data: once\n\n")
        } _: { server in
            let result = try await runHerald(["listen", server.url, "--json", "--no-reconnect"])
            #expect(result.status == 0)
            #expect(server.requests.count == 1)
        }
    }

    @Test func timeoutExitsZero() async throws {
        try await withTestServer { _, _, responder in
            try await responder.head()
            try await responder.write("data: first\n\n")
            try await Task.sleep(for: .seconds(30))
        } _: { server in
            // Long enough for the process to start and connect on a loaded machine.
            let result = try await runHerald(["listen", server.url, "--json", "--timeout", "6"], timeLimit: 20)
            #expect(result.status == 0)
            #expect(result.standardOutput == #"{"type": "message", "data": "first", "lastEventId": ""}"# + "\n")
        }
    }

    @Test func anUnreachableHostExitsNonZeroOnceTheAttemptsAreUsedUpAndSaysEachReconnection() async throws {
        // Port 1: nothing listens there. (Not a port that was just free: a server of another test
        // running meanwhile could be given it, and answer.)
        let url = "http://127.0.0.1:1/"
        // A connect timeout past the run's time limit: each refused connection fails at once.
        let result = try await runHerald(["listen", url, "--max-attempts", "1", "--connect-timeout", "100"])
        #expect(result.status == 1)
        #expect(result.standardError.components(separatedBy: "reconnecting").count == 2, "\(result.standardError)")
        #expect(result.standardError.contains("gave up after 1 reconnection attempt to \(url): connection refused\n"), "\(result.standardError)")
        #expect(result.standardError.contains("error=connection refused"), "\(result.standardError)")
        let once = try await runHerald(["listen", url, "--no-reconnect", "--connect-timeout", "100"])
        #expect(once.status == 1)
        #expect(!once.standardError.contains("reconnecting"), "\(once.standardError)")
        #expect(once.standardError.contains("gave up after one connection to \(url), with reconnection off: connection refused\n"), "\(once.standardError)")
    }

    /// A `Last-Event-ID` or a header that cannot be sent ends the command at once, saying which.
    @Test func aHeaderThatCannotBeSentIsReportedAtOnce() async throws {
        // Port 1, where nothing listens: the header is refused before any connection.
        let result = try await runHerald(["listen", "http://127.0.0.1:1/", "--last-event-id", "a\nX-Injected: yes"])
        #expect(result.status == 1)
        #expect(!result.standardError.contains("reconnecting"), "\(result.standardError)")
        #expect(
            result.standardError.contains(#"cannot send the request to http://127.0.0.1:1/: invalidHeaderFieldValues(["a\nX-Injected: yes"])"#),
            "\(result.standardError)"
        )
    }

    @Test(arguments: [
        ["listen"], ["listen", "http://x", "-H", "no colon"], ["listen", "http://x", "--max-events", "0"],
        ["listen", "http://x", "--timeout", "-1"], ["listen", "http://x", "--method", "GE T"],
        // Infinity, NaN and numbers too large for a duration: usage errors, not a crash.
        ["listen", "http://x", "--timeout=inf"], ["listen", "http://x", "--timeout=nan"],
        ["listen", "http://x", "--connect-timeout=1e300"], ["listen", "http://x", "--read-timeout=inf"],
    ])
    func badArgumentsAreUsageErrors(_ arguments: [String]) async throws {
        let result = try await runHerald(arguments)
        #expect(result.status == 64, "\(result.standardError)")
        #expect(result.standardError.contains("Usage: herald listen"))
    }
}
