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

/// Three `herald serve` nodes on one PostgreSQL, behind nginx as the load balancer, as the
/// deployment guide (docs/DEPLOYMENT.md) sets them up.
@Suite(
    "A cluster behind nginx",
    .enabled(if: ThrowawayPostgres.binaries != nil && Nginx.binary != nil, "PostgreSQL or nginx is not installed (scripts/install-test-tools.sh installs both)")
)
struct ClusterServeTests {
    let serve = ServeCommandTests()
    static let key = String(repeating: "c", count: 40)

    @Test func everySubscriberGetsEveryUpdateOnceInOrderThroughAKilledNodeAndADatabaseRestart() async throws {
        try await ThrowawayPostgres.withServer { database in
            var nodes: [(process: Process, url: String)] = []
            defer { nodes.forEach { $0.process.stop() } }
            for _ in 0..<3 {
                let (process, url, _) = try self.serve.startHub(key: Self.key, arguments: ["--store", database.url])
                nodes.append((process, url))
            }
            let nginx = try await Nginx.start(balancing: nodes.map { URL(string: $0.url)!.port! })
            defer { nginx.stop() }
            let balanced = "http://127.0.0.1:\(nginx.port)/.well-known/mercure"

            // Six subscribers through the load balancer: two on each node.
            let total = 36
            let listeners = (0..<6).map { _ in
                Task {
                    try await runHerald(
                        ["listen", balanced + "?topic=cluster", "--json", "--max-events", "\(total)"],
                        timeLimit: 120
                    )
                }
            }
            defer { listeners.forEach { $0.cancel() } }
            try await Self.waitForSubscribers(6, on: nodes.map(\.url))
            for node in nodes { #expect(try await Self.subscribers(on: node.url) == 2, "round robin puts two on each node") }

            // Published through each node, and through the balancer.
            var number = 0
            func publish(through hubs: [String]) async throws {
                for _ in 0..<12 {
                    number += 1
                    try await self.publish(id: "u\(number)", to: hubs[number % hubs.count])
                }
            }
            try await publish(through: nodes.map(\.url) + [balanced])

            // A node dies: its subscribers reconnect through nginx to the others and resume from
            // their Last-Event-ID, including what was published before they were back.
            kill(nodes[2].process.processIdentifier, SIGKILL)
            try await publish(through: [nodes[0].url, nodes[1].url, balanced])
            try await Self.waitForSubscribers(6, on: [nodes[0].url, nodes[1].url])

            // PostgreSQL restarts: a publish meanwhile is refused with 503, not acknowledged and lost;
            // afterwards the nodes reconnect and carry on.
            database.stop()
            let refused = try await runHerald(["publish", "--hub", nodes[0].url, "--topic", "cluster", "--id", "refused", "--key", Self.key])
            #expect(refused.status == 1)
            #expect(refused.standardError.contains("503"), "\(refused.standardError)")
            try await database.start()
            try await publish(through: [nodes[0].url, nodes[1].url, balanced])

            for listener in listeners {
                let result = try await listener.value
                #expect(result.status == 0, "\(result.standardError)")
                #expect(Self.eventIDs(result.standardOutput) == (1...total).map { "u\($0)" }, "every update once, in order, and not the refused one")
            }
        }
    }

    @Test func aNodeFrozenWhilePublishingDoesNotStopTheOthers() async throws {
        try await ThrowawayPostgres.withServer { database in
            let (fast, fastURL, _) = try self.serve.startHub(key: Self.key, arguments: ["--store", database.url])
            defer { fast.stop() }
            let (frozen, frozenURL, _) = try self.serve.startHub(key: Self.key, arguments: ["--store", database.url])
            defer {
                kill(frozen.processIdentifier, SIGCONT)
                frozen.stop()
            }
            async let listened = runHerald(["listen", fastURL + "?topic=cluster", "--json", "--max-events", "5"], timeLimit: 60)
            try await Self.waitForSubscribers(1, on: [fastURL])
            // The frozen node publishes flat out, and is stopped while it holds the shared append
            // lock, mid-transaction.
            let load = Process()
            load.executableURL = heraldExecutable
            load.arguments = ["bench", "--hub", frozenURL, "--key", Self.key, "--subscribers", "1", "--publishers", "8", "--duration", "30"]
            load.standardOutput = FileHandle.nullDevice
            load.standardError = FileHandle.nullDevice
            try load.run()
            defer { load.stop() }
            try await Task.sleep(for: .seconds(1))
            var holdsTheLock = false
            for _ in 0..<200 where !holdsTheLock {
                kill(frozen.processIdentifier, SIGSTOP)
                holdsTheLock = try await database.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == "1"
                if !holdsTheLock { kill(frozen.processIdentifier, SIGCONT) }
            }
            try #require(holdsTheLock, "the node was never caught holding the lock")

            for number in 1...5 { try await self.publish(id: "f\(number)", to: fastURL) }
            let result = try await listened
            #expect(result.status == 0, "\(result.standardError)")
            #expect(Self.eventIDs(result.standardOutput) == (1...5).map { "f\($0)" })
        }
    }

    /// Publishes `id` on `hub`, again while the hub answers 503 (the database is coming back); a
    /// 409 then means an earlier attempt was stored after all.
    private func publish(id: String, to hub: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let result = try await runHerald(["publish", "--hub", hub, "--topic", "cluster", "--data", id, "--id", id, "--key", Self.key])
            if result.status == 0 || result.standardError.contains("409") { return }
            guard result.standardError.contains("503"), ContinuousClock.now < deadline else {
                Issue.record("publishing \(id) on \(hub) failed: \(result.standardError)")
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The `lastEventId` of each line `herald listen --json` printed.
    static func eventIDs(_ output: String) -> [String] {
        output.split(separator: "\n").map { line in
            String(line.split(separator: "\"lastEventId\": \"").last?.prefix { $0 != "\"" } ?? "")
        }
    }

    /// The subscribers a node holds, from its /metrics.
    static func subscribers(on hub: String) async throws -> Int {
        let metrics = hub.replacingOccurrences(of: "/.well-known/mercure", with: "/metrics")
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: metrics), timeout: .seconds(10))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        let line = text.split(separator: "\n").first { $0.hasPrefix("herald_subscribers ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) } ?? 0
    }

    /// Waits (at most 30 s) until `hubs` hold `count` subscribers between them.
    static func waitForSubscribers(_ count: Int, on hubs: [String]) async throws {
        var held = 0
        for _ in 0..<300 {
            held = 0
            for hub in hubs { held += try await Self.subscribers(on: hub) }
            if held == count { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("the hubs hold \(held) subscribers, not \(count)")
    }
}
