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
import NIOPosix
import Testing

/// A short run of `herald bench` against `herald serve`: a smoke test of the load generator (the
/// benchmark itself is not part of the test command).
@Suite("herald bench")
struct BenchCommandTests {
    let serve = ServeCommandTests()

    func report(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func everyPublishReachesEverySubscriberOfItsTopic() async throws {
        let (hub, url, token) = try self.serve.startHub()
        defer { if hub.isRunning { hub.terminate() } }
        let result = try await runHerald([
            "bench", "--hub", url, "--token", token, "--subscribers", "30", "--topics", "3", "--rate", "200",
            "--duration", "1.5", "--server-pid", String(hub.processIdentifier),
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let report = try self.report(result.standardOutput)
        #expect(report["connected"] as? Int == 30)
        let published = try #require(report["published"] as? Int)
        #expect(published >= 250, "200/s for 1.5 s: \(published)")
        // Round-robin over three topics of ten subscribers each: ten deliveries per publish.
        #expect(report["expectedDeliveries"] as? Int == published * 10)
        #expect(report["delivered"] as? Int == published * 10)
        #expect(report["completeness"] as? Double == 1)
        let latency = try #require(report["latency"] as? [String: Double])
        #expect(latency["p50"]! > 0 && latency["p50"]! <= latency["p99"]! && latency["p99"]! <= latency["max"]!)
        // At a rate, also from the time each publish was due: never before it was sent.
        let fromSchedule = try #require(report["latencyFromSchedule"] as? [String: Double])
        #expect(fromSchedule["p50"]! >= latency["p50"]! && fromSchedule["max"]! >= latency["max"]!)
        let serverCPU = try #require(report["serverCPUSeconds"] as? Double)
        #expect(serverCPU > 0, "read from /proc")
        let kernelCPU = try #require(report["serverSystemCPUSeconds"] as? Double)
        #expect(kernelCPU >= 0 && kernelCPU <= serverCPU + 1e-9, "the kernel's part: \(kernelCPU) of \(serverCPU)")
        let generatorCPU = try #require(report["generatorCPUSeconds"] as? Double)
        #expect(generatorCPU > 0, "its own")
        // CPU times by the processes' CPU clocks, not in the clock ticks of /proc (hundredths of
        // a second), which 30 connections may not even reach.
        let perConnection = try #require(report["serverCPUMicrosecondsPerConnection"] as? Double)
        for (name, ticks) in [("server's, connecting", perConnection * 30 / 10_000), ("generator's", generatorCPU * 100)] {
            #expect(ticks > 0 && abs(ticks - ticks.rounded()) > 1e-6, "the \(name) CPU time, in ticks: \(ticks)")
        }
        #expect(result.standardError.contains("subscribers 30/30"), "the progress line")
        // The progress line ends before the connections close: none after it counts what closing does.
        #expect(result.standardError.hasSuffix("\n"), "\(result.standardError)")
        let lastLine = result.standardError.split(separator: "\r").last ?? ""
        #expect(lastLine.contains("errors 0") && lastLine.hasSuffix("   \n"), "\(lastLine)")
    }

    @Test(.enabled(if: Nginx.binary != nil, "nginx is not installed (scripts/install-test-tools.sh installs it)"))
    func publishersConnectAgainWhenTheHubClosesTheirConnections() async throws {
        let (hub, url, token) = try self.serve.startHub()
        defer { if hub.isRunning { hub.terminate() } }
        // nginx closes each client connection after its third request; flat out, the next request
        // of a publisher often finds its connection closing.
        let nginx = try await Nginx.start(balancing: [try #require(URL(string: url)?.port)], keepaliveRequests: 3)
        defer { nginx.stop() }
        let result = try await runHerald([
            "bench", "--hub", "http://127.0.0.1:\(nginx.port)/.well-known/mercure", "--token", token,
            "--subscribers", "4", "--publishers", "2", "--duration", "1",
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let report = try self.report(result.standardOutput)
        // More than the six requests two connections of three take: the publishers connected again.
        let published = try #require(report["published"] as? Int)
        #expect(published > 6, "\(published)")
        #expect(report["publishErrors"] as? Int == 0)
        #expect(report["delivered"] as? Int == published * 4)
    }

    @Test func overTLSTheCertificateGivenIsTrusted() async throws {
        let (hub, url, token) = try self.serve.startHub(arguments: [
            "--tls-cert", ServeCommandTests.tlsFixture("cert.pem"),
            "--tls-key", ServeCommandTests.tlsFixture("key.pem"),
        ])
        defer { if hub.isRunning { hub.terminate() } }
        let arguments = ["bench", "--hub", url, "--token", token, "--subscribers", "10", "--rate", "100", "--duration", "1"]
        let result = try await runHerald(arguments + ["--ca-cert", ServeCommandTests.tlsFixture("cert.pem")])
        #expect(result.status == 0, "\(result.standardError)")
        let report = try self.report(result.standardOutput)
        let published = try #require(report["published"] as? Int)
        #expect(published >= 50, "100/s for 1 s: \(published)")
        #expect(report["delivered"] as? Int == published * 10)
        let untrusted = try await runHerald(arguments + ["--drain", "0.5"])
        #expect(untrusted.status == 1)
        let port = try #require(URL(string: url)?.port)
        let reason = "no TLS with 127.0.0.1:\(port): the server's certificate is not trusted (--ca-cert adds a certificate to trust)\n"
        #expect(untrusted.standardError.contains(reason), "\(untrusted.standardError)")
    }

    @Test func aHubThatRefusesIsReportedWithAnExitStatus() async throws {
        let (hub, url, _) = try self.serve.startHub()
        defer { if hub.isRunning { hub.terminate() } }
        let forged = try await runHerald([
            "bench", "--hub", url, "--key", "not the key of this hub, though long enough", "--subscribers", "2",
            "--duration", "0.5", "--rate", "20", "--drain", "0.5",
        ])
        #expect(forged.status == 1)
        #expect(forged.standardError.contains("publish errors"))
        let nobody = try await runHerald(["bench", "--hub", "http://127.0.0.1:1/.well-known/mercure", "--idle", "--subscribers", "1"])
        #expect(nobody.status == 1)
        #expect(nobody.standardError.contains("cannot connect a subscriber: 127.0.0.1:1: connection refused"), "\(nobody.standardError)")
        // A hub that keeps the connection open after its refusal: the reason is read to the end of
        // its body, not to the connection's.
        let (closed, closedURL, _) = try self.serve.startHub(key: String(repeating: "k", count: 40), anonymous: false)
        defer { if closed.isRunning { closed.terminate() } }
        let anonymous = try await runHerald(["bench", "--hub", closedURL, "--idle", "--subscribers", "1"], timeLimit: 8)
        #expect(anonymous.status == 1)
        #expect(
            anonymous.standardError.contains(
                "the hub answered 401 Unauthorized: subscribing needs a JWT signed with the subscriber key (this hub does not allow anonymous subscribers)\n"
            ),
            "\(anonymous.standardError)"
        )
        // With a token signed by the hub's key, the same subscribers get every event.
        let key = String(repeating: "k", count: 40)
        let run = ["bench", "--hub", closedURL, "--key", key, "--subscribers", "2", "--duration", "0.5", "--rate", "20", "--drain", "2"]
        let keyed = try await runHerald(run + ["--subscriber-key", key])
        #expect(keyed.status == 0, "\(keyed.standardError)")
        let report = try self.report(keyed.standardOutput)
        #expect(report["completeness"] as? Double == 1)
        #expect((report["delivered"] as? Int ?? 0) >= 10)
        let both = try await runHerald(run + ["--subscriber-key", key, "--subscriber-token", "t"])
        #expect(both.status == 64)
        #expect(both.standardError.contains("give either --subscriber-token or --subscriber-key, not both."), "\(both.standardError)")
    }

    /// `--in-flight` as large as `--subscribers` opens them all at once (a reconnect storm), and
    /// every one is counted once open.
    @Test func aReconnectStormOpensEverySubscriberAtOnce() async throws {
        let (hub, url, _) = try self.serve.startHub(key: String(repeating: "k", count: 40))
        defer { if hub.isRunning { hub.terminate() } }
        let storm = try await runHerald(["bench", "--hub", url, "--idle", "--subscribers", "500", "--in-flight", "500", "--duration", "0.2"])
        #expect(storm.status == 0, "\(storm.standardError)")
        #expect(try self.report(storm.standardOutput)["connected"] as? Int == 500)
        let none = try await runHerald(["bench", "--hub", url, "--idle", "--in-flight", "0"])
        #expect(none.status == 64)
        #expect(none.standardError.contains("--in-flight must be at least 1."), "\(none.standardError)")
    }

    /// Infinity, NaN and numbers too large for a duration are usage errors, not a crash.
    @Test(arguments: [
        (["--duration=inf"], "--duration must be a number of seconds above 0, at most 86400."),
        (["--duration=0"], "--duration must be a number of seconds above 0"),
        (["--drain=1e300"], "--drain must be a number of seconds from 0 (no wait) to 86400."),
        (["--drain=nan"], "--drain must be a number of seconds"),
        (["--rate=inf"], "--rate must be a number of publishes a second"),
        (["--rate=-1"], "--rate must be a number of publishes a second"),
    ])
    func aTimeOrRateOutOfRangeIsAUsageError(_ arguments: [String], reason: String) async throws {
        let result = try await runHerald(["bench", "--hub", "http://127.0.0.1:1/.well-known/mercure", "--key", "k"] + arguments)
        #expect(result.status == 64, "\(result.standardError)")
        #expect(result.standardError.contains(reason), "\(result.standardError)")
    }

    /// A refused subscription is reported with the hub's reason, when its body gives one as text.
    @Test(arguments: [("text/plain", ": topic not allowed\n"), ("text/html", "\n")])
    func aRefusedSubscriptionIsReportedWithTheHubsReason(contentType: String, said: String) async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(.forbidden, ["Content-Type": contentType])
            try await responder.write("topic\nnot allowed")
            try await responder.end()
        } _: { server in
            let result = try await runHerald(["bench", "--hub", server.url + "/.well-known/mercure", "--idle", "--subscribers", "1"])
            #expect(result.status == 1)
            #expect(result.standardError.contains("a subscription failed: the hub answered 403 Forbidden\(said)"), "\(result.standardError)")
        }
    }

    /// A hub out of open files leaves new connections waiting in its backlog: connected, never
    /// answered. The bench says so rather than wait for ever.
    @Test func aHubThatNeverAnswersIsReportedWithAnExitStatus() async throws {
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { _ in MultiThreadedEventLoopGroup.singleton.any().makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(silent.localAddress?.port)
        let result = try await runHerald(["bench", "--hub", "http://127.0.0.1:\(port)/.well-known/mercure", "--idle", "--subscribers", "2"])
        try await silent.close()
        #expect(result.status == 1)
        #expect(result.standardError.contains("a subscription failed: the hub did not answer within 10 s"), "\(result.standardError)")
    }

    @Test func moreSubscribersThanOpenFilesIsAnErrorBeforeConnecting() async throws {
        let result = try await runHerald(
            ["bench", "--hub", "http://127.0.0.1:1/.well-known/mercure", "--idle", "--subscribers", "1000"],
            openFiles: (soft: 256, hard: 512)
        )
        #expect(result.status == 1)
        // The soft limit was raised to the hard one; then the connections do not fit.
        #expect(result.standardError.contains("--subscribers 1000 needs about 1068 open files, and this process may have 512"), "\(result.standardError)")
        #expect(!result.standardError.contains("cannot connect"), "before connecting")
    }
}
