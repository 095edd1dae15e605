//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import Foundation
import HeraldTestSupport
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `herald serve --store postgres://…`: the history lives in PostgreSQL, across restarts of the hub.
@Suite("herald serve on PostgreSQL", .enabled(if: ThrowawayPostgres.binaries != nil, "PostgreSQL is not installed"))
struct PostgresServeTests {
    let serve = ServeCommandTests()

    @Test func theHistoryOutlivesTheHub() async throws {
        try await ThrowawayPostgres.with { url in
            let (first, hub, token) = try self.serve.startHub(arguments: ["--store", url])
            let id = try await self.serve.publish(hub, "topic=t&data=kept+in+postgres", token: token)
            first.stop()

            // A new hub on the same database replays it.
            let (second, again, _) = try self.serve.startHub(arguments: ["--store", url])
            defer { second.stop() }
            let result = try await runHerald(["listen", again + "?topic=t", "--json", "--max-events", "1", "--last-event-id", "earliest"])
            #expect(result.status == 0, "\(result.standardError)")
            #expect(result.standardOutput == #"{"type": "message", "data": "kept in postgres", "lastEventId": "\#(id)"}"# + "\n")
        }
    }

    @Test func anUpdatePublishedOnOneNodeReachesASubscriberOfAnother() async throws {
        try await ThrowawayPostgres.with { url in
            let (one, hubOne, token) = try self.serve.startHub(arguments: ["--store", url])
            defer { one.stop() }
            let (two, hubTwo, _) = try self.serve.startHub(arguments: ["--store", url])
            defer { two.stop() }
            async let listened = runHerald(["listen", hubTwo + "?topic=shared", "--json", "--max-events", "1"], timeLimit: 20)
            // Publish once the listener is connected to node two (its /metrics counts it).
            let metrics = hubTwo.replacingOccurrences(of: "/.well-known/mercure", with: "/metrics")
            for _ in 0..<200 {
                let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: metrics), timeout: .seconds(10))
                if String(buffer: try await response.body.collect(upTo: 1 << 20)).contains("herald_subscribers 1") { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            let id = try await self.serve.publish(hubOne, "topic=shared&data=from+node+one", token: token)
            let result = try await listened
            #expect(result.status == 0, "\(result.standardError)")
            #expect(result.standardOutput == #"{"type": "message", "data": "from node one", "lastEventId": "\#(id)"}"# + "\n")
        }
    }

    @Test func aBadStoreURLIsRefusedWithAReason() async throws {
        let result = try await runHerald(["serve", "--port", "0", "--store", "mysql://nope"])
        #expect(result.status == 1)
        #expect(result.standardError.contains("postgres://user:password@host:5432/database"))
        let unreachable = try await runHerald(["serve", "--port", "0", "--store", "postgres://herald:secret@127.0.0.1:1/db"], timeLimit: 60)
        #expect(unreachable.status == 1)
        #expect(
            unreachable.standardError.contains(
                "cannot use the PostgreSQL history at postgres://herald:***@127.0.0.1:1/db: cannot connect to PostgreSQL at 127.0.0.1:1: connection refused\n"
            ),
            "\(unreachable.standardError)"
        )
        #expect(!unreachable.standardError.contains("secret"))
    }

    /// A database that refuses the hub says why, in PostgreSQL's words, rather than look like one
    /// that does not answer (its pool would keep trying, and say nothing).
    @Test func aDatabaseThatRefusesTheHubIsReportedWithItsReason() async throws {
        try await ThrowawayPostgres.with { url in
            // The server's URL is postgres://herald@127.0.0.1:PORT/postgres.
            let missing = url.replacingOccurrences(of: "/postgres", with: "/nosuchdb")
            let refused = try await runHerald(["serve", "--port", "0", "--store", missing], timeLimit: 60)
            #expect(refused.status == 1)
            #expect(
                refused.standardError.contains("\(missing): PostgreSQL refused the connection: database \"nosuchdb\" does not exist\n"),
                "\(refused.standardError)"
            )
        }
    }
}

extension Process {
    /// SIGTERM, then waits (at most 20 s, polling: waitUntilExit can hang when run from the tests'
    /// tasks) for the process to end, before its database goes away.
    func stop() {
        guard self.isRunning else { return }
        self.terminate()
        for _ in 0..<2_000 where self.isRunning { usleep(10_000) }
        if self.isRunning { kill(self.processIdentifier, SIGKILL) }
    }
}
