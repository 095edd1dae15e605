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
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `herald serve` as a process, with `herald listen` subscribing and an HTTP client publishing.
@Suite("herald serve")
struct ServeCommandTests {
    /// Starts `herald serve` on a free port with its history in `database` (by default, a new one
    /// removed when the process ends), and no key: development mode. Returns the process, the
    /// hub's URL and the publisher token it printed (its `standardError` is a `Pipe`, read up to
    /// there). With `key`, the hub's publisher key, and anonymous subscribers unless `anonymous`
    /// is false; the token is then empty.
    func startHub(
        database: String? = nil,
        key: String? = nil,
        anonymous: Bool = true,
        arguments: [String] = [],
        environment extra: [String: String] = [:],
        openFiles: (soft: Int, hard: Int)? = nil
    ) throws -> (Process, String, String) {
        let process = Process()
        let path = database ?? temporarySQLitePath()
        if database == nil {
            process.terminationHandler = { _ in removeSQLiteFiles(path) }
        }
        // An SQLite file of its own, unless `arguments` say where the history is.
        let place = arguments.contains("--store") || arguments.contains("--in-memory") ? [] : ["--database", path]
        process.runHerald(
            ["serve", "--port", "0", "--heartbeat", "1"] + place
                + (key.map { ["--publisher-jwt-key", $0] + (anonymous ? ["--anonymous"] : []) } ?? []) + arguments,
            openFiles: openFiles
        )
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "MERCURE_PUBLISHER_JWT_KEY")
        environment.removeValue(forKey: "MERCURE_SUBSCRIBER_JWT_KEY")
        environment.removeValue(forKey: "HERALD_STORE")
        process.environment = environment.merging(extra) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        var url: String?
        var sawDevelopmentMode = false
        do {
            while Date() < deadline {
                let line = try readLine(from: errors.fileHandleForReading.fileDescriptor, within: deadline.timeIntervalSinceNow)
                if let range = line.range(of: "hub listening on ") {
                    url = String(line[range.upperBound...].prefix { $0 != " " })
                }
                if line.contains("DEVELOPMENT MODE, NOT FOR PRODUCTION") { sawDevelopmentMode = true }
                if key != nil, let url {
                    return (process, url, "")
                }
                if line.contains("publisher token"), let url {
                    let token = try readLine(from: errors.fileHandleForReading.fileDescriptor, within: deadline.timeIntervalSinceNow)
                    #expect(sawDevelopmentMode, "development mode says so loudly")
                    return (process, url, token)
                }
            }
            throw ProcessTimeout()
        } catch {
            // The caller gets no process to stop: a hub left running would outlive the tests.
            process.terminate()
            throw error
        }
    }

    func publish(_ hub: String, _ form: String, token: String) async throws -> String {
        var request = HTTPClientRequest(url: hub)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.body = .bytes(ByteBuffer(string: form))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(response.status == .ok)
        return String(buffer: try await response.body.collect(upTo: 1 << 16))
    }

    @Test func publishedUpdatesReachASubscriberAndTheHubStopsOnSIGTERM() async throws {
        let (hub, url, token) = try self.startHub()
        defer { if hub.isRunning { hub.terminate() } }
        #expect(url.hasPrefix("http://127.0.0.1:") && url.hasSuffix("/.well-known/mercure"))

        let first = try await self.publish(url, "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=first&type=book", token: token)
        let second = try await self.publish(url, "topic=https%3A%2F%2Fexample.com%2Fbooks%2F2&data=second", token: token)
        _ = try await self.publish(url, "topic=https%3A%2F%2Fexample.com%2Fauthors%2F1&data=not+for+this+subscriber", token: token)
        // Resuming from `earliest` makes the test independent of when the subscriber connects.
        let result = try await runHerald([
            "listen", url + "?topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D", "--json", "--max-events", "2",
            "--last-event-id", "earliest",
        ])
        #expect(result.status == 0, "\(result.standardError)")

        let base = url.replacingOccurrences(of: "/.well-known/mercure", with: "")
        let metrics = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/metrics"), timeout: .seconds(10))
        let text = String(buffer: try await metrics.body.collect(upTo: 1 << 20))
        // Three updates, and the subscription event of the listener's start (development mode
        // tracks subscriptions); the one of its end may or may not be stored yet.
        let publishes = text.split(separator: "\n").first { $0.hasPrefix("herald_publishes_total ") }
        #expect(publishes == "herald_publishes_total 4" || publishes == "herald_publishes_total 5", "\(text)")
        #expect(text.contains("herald_deliveries_total"))
        #expect(text.contains("herald_store_append_seconds"))
        #expect(text.contains("herald_store_updates 4") || text.contains("herald_store_updates 5"), "\(text)")
        #expect(text.contains("herald_store_bytes "))
        #expect(
            result.standardOutput == """
                {"type": "book", "data": "first", "lastEventId": "\(first)"}
                {"type": "message", "data": "second", "lastEventId": "\(second)"}

                """
        )

        // A subscriber is connected when the hub is told to stop: its stream ends cleanly (so it
        // can reconnect elsewhere) and the hub exits.
        let subscription = try await HTTPClient.shared.execute(HTTPClientRequest(url: url + "?topic=t"), timeout: .seconds(10))
        #expect(subscription.status == .ok)
        kill(hub.processIdentifier, SIGTERM)
        let body = try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await subscription.body.collect(upTo: 1 << 20) }
            group.addTask {
                try await Task.sleep(for: .seconds(20))
                return nil
            }
            defer { group.cancelAll() }
            guard let body = try await group.next()! else { throw ProcessTimeout() }
            return body
        }
        #expect(String(buffer: body).hasPrefix(":\n"), "the stream ended without an error")
        let deadline = Date().addingTimeInterval(20)
        while hub.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        try #require(!hub.isRunning, "the hub shuts down gracefully on SIGTERM, open streams and all")
        #expect(hub.terminationStatus == 0)  // (Foundation traps when asked this of a running process)
    }

    @Test func everyAcknowledgedPublishSurvivesKill9() async throws {
        let database = temporarySQLitePath()
        defer { removeSQLiteFiles(database) }
        let (hub, url, token) = try self.startHub(database: database)
        defer { if hub.isRunning { hub.terminate() } }
        // Eight publishers under load; the hub is killed while they are publishing.
        let acknowledged = NIOLockedValueBox<[String]>([])
        let publishers = Task {
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<8 {
                    group.addTask {
                        for n in 0..<1000 {
                            guard let id = try? await self.publish(url, "topic=load&data=\(publisher)-\(n)", token: token) else { return }
                            acknowledged.withLockedValue { $0.append(id) }
                        }
                    }
                }
            }
        }
        // Kill it after 300 acknowledgements (or 30 s on a very slow machine): mid-load either way.
        for _ in 0..<3000 where acknowledged.withLockedValue({ $0.count }) < 300 { try await Task.sleep(for: .milliseconds(10)) }
        kill(hub.processIdentifier, SIGKILL)
        hub.waitUntilExit()
        await publishers.value
        let acked = acknowledged.withLockedValue { $0 }
        #expect(acked.count >= 20, "the hub was killed under load")

        // A new hub on the same file replays every acknowledged update.
        let (restarted, newURL, _) = try self.startHub(database: database)
        defer { restarted.terminate() }
        let replay = try await runHerald(
            ["listen", newURL + "?topic=load", "--json", "--last-event-id", "earliest", "--timeout", "3"],
            timeLimit: 20
        )
        let replayed = Set(replay.standardOutput.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: #""lastEventId": ""#) else { return nil }
            return String(line[range.upperBound...].dropLast(2))
        })
        let lost = acked.filter { !replayed.contains($0) }
        #expect(lost.isEmpty, "acknowledged but lost: \(lost.prefix(5)) of \(acked.count)")
    }

    @Test func heraldPublishWithATokenOrAKey() async throws {
        let (hub, url, token) = try self.startHub()
        defer { hub.terminate() }
        let published = try await runHerald(["publish", "--hub", url, "--topic", "https://example.com/a b", "--data", "x & y = z\nnext: é", "--type", "note", "--token", token])
        #expect(published.status == 0, "\(published.standardError)")
        let id = published.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(id.hasPrefix("urn:uuid:"))
        let received = try await runHerald([
            "listen", url + "?topic=" + "https%3A%2F%2Fexample.com%2Fa%20b", "--json", "--last-event-id", "earliest", "--max-events", "1",
        ])
        #expect(received.standardOutput == #"{"type": "note", "data": "x & y = z\nnext: é", "lastEventId": "\#(id)"}"# + "\n")

        let refused = try await runHerald(["publish", "--hub", url, "--topic", "t", "--token", "not.a.jwt"])
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("401"))

        let key = String(repeating: "s", count: 40)
        let (keyed, keyedURL, _) = try self.startHub(key: key)
        defer { keyed.terminate() }
        let signed = try await runHerald(["publish", "--hub", keyedURL, "--topic", "t", "--data", "signed", "--key", key])
        #expect(signed.status == 0, "\(signed.standardError)")
        let usage = try await runHerald(["publish", "--hub", keyedURL, "--topic", "t"])
        #expect(usage.status == 64, "either --token or --key")
    }

    @Test func heraldPublishToAHubThatIsNotThereOrNotAnHTTPURLSaysSo() async throws {
        // Port 1: nothing listens there. (Not a port that was just free: a server of another
        // test running meanwhile could be given it, and answer.)
        let hub = "http://127.0.0.1:1/.well-known/mercure"
        let key = String(repeating: "s", count: 40)
        // Within `runHerald`'s time limit, under the request's own timeout: a refused connection
        // is not retried.
        let refused = try await runHerald(["publish", "--hub", hub, "--topic", "t", "--key", key], timeLimit: 20)
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("cannot reach the hub at \(hub): connection refused\n"), "\(refused.standardError)")
        for notHTTP in ["notaurl", "ftp://127.0.0.1/.well-known/mercure", "http:///.well-known/mercure"] {
            let usage = try await runHerald(["publish", "--hub", notHTTP, "--topic", "t", "--key", key])
            #expect(usage.status == 64, "\(notHTTP)")
            #expect(usage.standardError.contains("--hub must be an http:// or https:// URL."), "\(usage.standardError)")
        }
    }

    /// A hub that stops answering, before its answer's head or in the middle of its body, is given
    /// up on after `--timeout`, with a message saying so.
    @Test(arguments: [false, true]) func heraldPublishGivesUpOnAHubThatStalls(afterTheHead: Bool) async throws {
        try await withTestServer { _, _, responder in
            if afterTheHead {
                try await responder.head(.ok, ["Content-Type": "text/plain", "Content-Length": "40"])
                try await responder.write("urn:uuid:")
            }
            try await Task.sleep(for: .seconds(60))
        } _: { server in
            let hub = server.url + "/.well-known/mercure"
            let key = String(repeating: "s", count: 40)
            let result = try await runHerald(
                ["publish", "--hub", hub, "--topic", "t", "--key", key, "--timeout", "0.5"],
                timeLimit: 20
            )
            #expect(result.status == 1)
            #expect(result.standardError.contains("the hub at \(hub) did not answer within 0.5 s (--timeout)\n"), "\(result.standardError)")
        }
        let usage = try await runHerald(["publish", "--hub", "http://127.0.0.1:1/", "--topic", "t", "--key", "k", "--timeout", "0"])
        #expect(usage.status == 64)
        #expect(usage.standardError.contains("--timeout must be a number of seconds above 0"), "\(usage.standardError)")
    }

    /// A refused publish is reported with the hub's reason, when its body gives one as text, on
    /// one line.
    @Test(arguments: [("text/plain", ": topic not allowed\n"), ("text/html", "\n")])
    func aRefusedPublishIsReportedWithTheHubsReason(contentType: String, said: String) async throws {
        try await withTestServer { _, _, responder in
            try await responder.head(.forbidden, ["Content-Type": contentType])
            try await responder.write("topic\nnot allowed\n")
            // A long body (a proxy's page, say): the start gives the reason.
            try await responder.write(String(repeating: " ", count: 2 << 20))
            try await responder.end()
        } _: { server in
            let hub = server.url + "/.well-known/mercure"
            let result = try await runHerald(["publish", "--hub", hub, "--topic", "t", "--key", String(repeating: "s", count: 40)])
            #expect(result.status == 1)
            #expect(result.standardError == "Error: the hub answered 403 Forbidden\(said)", "\(result.standardError)")
        }
        // Herald's hub: a token signed with another key.
        let (hub, url, _) = try self.startHub(key: String(repeating: "k", count: 40))
        defer { if hub.isRunning { hub.terminate() } }
        let forged = try await runHerald(["publish", "--hub", url, "--topic", "t", "--key", String(repeating: "f", count: 40)])
        #expect(forged.status == 1)
        #expect(
            forged.standardError
                == "Error: the hub answered 401 Unauthorized: the publisher token is not valid: it must be a JWT signed with the publisher key (HS256)\n",
            "\(forged.standardError)"
        )
    }

    /// Over TLS, `herald publish` and `herald listen` trust the certificate given with `--ca-cert`;
    /// without it, they say that the server's certificate is not trusted, and how to trust it.
    @Test func heraldPublishAndListenTrustTheCertificateGiven() async throws {
        let (hub, url, token) = try self.startHub(arguments: ["--tls-cert", Self.tlsFixture("cert.pem"), "--tls-key", Self.tlsFixture("key.pem")])
        defer { if hub.isRunning { hub.terminate() } }
        let trust = ["--ca-cert", Self.tlsFixture("cert.pem")]
        let untrusted = "the server's certificate is not trusted (--ca-cert adds a certificate to trust)\n"

        let refused = try await runHerald(["publish", "--hub", url, "--topic", "t", "--data", "x", "--token", token])
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("cannot reach the hub at \(url): " + untrusted), "\(refused.standardError)")
        let published = try await runHerald(["publish", "--hub", url, "--topic", "t", "--data", "over TLS", "--token", token] + trust)
        #expect(published.status == 0, "\(published.standardError)")
        let id = published.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)

        let unheard = try await runHerald(["listen", "--no-reconnect", url + "?topic=t"])
        #expect(unheard.status == 1)
        #expect(unheard.standardError.contains("with reconnection off: " + untrusted), "\(unheard.standardError)")
        let heard = try await runHerald(["listen", "--no-reconnect", url + "?topic=t", "--json", "--last-event-id", "earliest", "--max-events", "1"] + trust)
        #expect(heard.standardOutput == #"{"type": "message", "data": "over TLS", "lastEventId": "\#(id)"}"# + "\n", "\(heard.standardError)")

        for (file, reason) in [
            ("/nonexistent.pem", "cannot read the certificate '/nonexistent.pem': no such file"),
            (Self.tlsFixture("key.pem"), "'\(Self.tlsFixture("key.pem"))' holds no PEM certificate"),
        ] {
            let unread = try await runHerald(["listen", url + "?topic=t", "--ca-cert", file])
            #expect(unread.status == 1)
            #expect(unread.standardError.contains(reason), "\(unread.standardError)")
        }
    }

    /// The path of the file `name` in `Tests/Fixtures/tls`.
    static func tlsFixture(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tls/\(name)").path
    }

    @Test func tlsWithHTTP2() async throws {
        let (hub, url, token) = try self.startHub(arguments: [
            "--tls-cert", Self.tlsFixture("cert.pem"),
            "--tls-key", Self.tlsFixture("key.pem"),
        ])
        defer { if hub.isRunning { hub.terminate() } }
        #expect(url.hasPrefix("https://127.0.0.1:"))

        var configuration = HTTPClient.Configuration()
        configuration.tlsConfiguration = .makeClientConfiguration()
        configuration.tlsConfiguration?.certificateVerification = .none  // the fixture is self-signed
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            try await self.checkHTTP2(client: client, url: url, token: token)
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    private func checkHTTP2(client: HTTPClient, url: String, token: String) async throws {
        // Two subscriptions and a publish share one HTTP/2 connection.
        var first = HTTPClientRequest(url: url + "?topic=tls")
        first.headers.add(name: "Last-Event-ID", value: "earliest")
        let second = HTTPClientRequest(url: url + "?topic=tls")
        let streams = [try await client.execute(first, timeout: .seconds(10)), try await client.execute(second, timeout: .seconds(10))]
        for stream in streams {
            #expect(stream.status == .ok)
            #expect(stream.version == .http2)
            #expect(stream.headers.first(name: "Content-Type") == "text/event-stream")
        }
        var publish = HTTPClientRequest(url: url)
        publish.method = .POST
        publish.headers.add(name: "Authorization", value: "Bearer \(token)")
        publish.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        publish.body = .bytes(ByteBuffer(string: "topic=tls&data=over+h2&id=h2"))
        let published = try await client.execute(publish, timeout: .seconds(10))
        #expect(published.status == .ok)
        #expect(published.version == .http2)
        for stream in streams {
            var text = ""
            for try await chunk in stream.body {
                text += String(buffer: chunk)
                if text.contains("data: over h2") { break }
            }
            #expect(text.contains("id: h2\ndata: over h2\n\n"))
        }
    }

    @Test func tlsNeedsAReadableCertificateAndKey() async throws {
        let missing = try await runHerald(["serve", "--in-memory", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"])
        #expect(missing.status == 1)
        #expect(missing.standardError.contains("cannot read the TLS certificate '/nonexistent.pem'"))
        let mismatched = try await runHerald([
            "serve", "--in-memory", "--tls-cert", Self.tlsFixture("cert.pem"),
            "--tls-key", Self.tlsFixture("other-key.pem"),
        ])
        #expect(mismatched.status == 1)
        #expect(mismatched.standardError.contains("the TLS certificate and key cannot be used together"))
        let alone = try await runHerald(["serve", "--in-memory", "--tls-cert", "/nonexistent.pem"])
        #expect(alone.status == 64)
        #expect(alone.standardError.contains("--tls-cert and --tls-key go together"))
    }

    @Test func aSecondHubOnTheSameDatabaseIsRefusedWithAReason() async throws {
        let database = temporarySQLitePath()
        defer { removeSQLiteFiles(database) }
        let (hub, _, _) = try self.startHub(database: database)
        defer { if hub.isRunning { hub.terminate() } }
        let second = try await runHerald(["serve", "--port", "0", "--database", database, "--publisher-jwt-key", String(repeating: "k", count: 40)])
        #expect(second.status == 1)
        #expect(second.standardError.contains("another hub has \(database) open"), "\(second.standardError)")
        #expect(hub.isRunning, "the first hub goes on")
    }

    @Test func aDatabaseThatCannotBeOpenedIsRefusedWithSQLitesReasonSaidOnce() async throws {
        let database = "/nonexistent-\(UInt32.random(in: 0...UInt32.max))/history.sqlite"
        let refused = try await runHerald(["serve", "--port", "0", "--database", database])
        #expect(refused.status == 1)
        let said = "cannot open the SQLite history \(database): unable to open database file"
        #expect(refused.standardError.components(separatedBy: "cannot open the SQLite history").count == 2, "\(refused.standardError)")
        #expect(refused.standardError.contains(said), "\(refused.standardError)")
    }

    @Test(arguments: ["https://app.example.com/", "https://App.example.com", "https://app.example.com:443", "app.example.com", "*"])
    func anOriginNotAsABrowserSendsItIsAUsageError(_ origin: String) async throws {
        for option in ["--cors-origin", "--publish-origin"] {
            let refused = try await runHerald(["serve", "--port", "0", "--in-memory", option, "https://ok.example:8443", option, origin])
            #expect(refused.status == 64, "\(refused.standardError)")
            #expect(refused.standardError.contains("\(option) '\(origin)' is not"), "\(refused.standardError)")
        }
    }

    @Test func anAddressThatIsNotThisMachinesIsRefusedWithAReason() async throws {
        // 192.0.2.0/24 is for documentation (RFC 5737): no interface has it.
        let refused = try await runHerald(["serve", "--port", "0", "--in-memory", "--host", "192.0.2.1"])
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("cannot listen on 192.0.2.1:0: this machine has no such address"), "\(refused.standardError)")
    }

    @Test func theLimitOfOpenFilesIsRaisedToTheHardOneAndALowOneIsSaid() async throws {
        // The address fails after the warning: the process ends on its own.
        let low = try await runHerald(["serve", "--port", "0", "--in-memory", "--host", "192.0.2.1"], openFiles: (soft: 256, hard: 2_048))
        #expect(low.status == 1)
        #expect(low.standardError.contains("herald: this process may have only 2048 open files"), "\(low.standardError)")
        let enough = try await runHerald(["serve", "--port", "0", "--in-memory", "--host", "192.0.2.1"], openFiles: (soft: 256, hard: 10_000))
        #expect(enough.status == 1)
        #expect(!enough.standardError.contains("open files"), "\(enough.standardError)")
    }

    @Test(.timeLimit(.minutes(1))) func aHubOutOfOpenFilesSaysSo() async throws {
        let (hub, url, _) = try self.startHub(key: String(repeating: "k", count: 40), openFiles: (soft: 64, hard: 64))
        defer { if hub.isRunning { hub.terminate() } }
        let errors = try #require(hub.standardError as? Pipe)
        let port = try #require(URL(string: url)?.port)
        // More connections than the hub may have open files: the kernel takes them all into the
        // listener's backlog, and the hub cannot accept the last ones.
        var connections: [any Channel] = []
        for _ in 0..<100 {
            connections.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
        }
        var said = ""
        let deadline = Date().addingTimeInterval(10)
        while !said.contains("cannot accept connections: out of open files"), Date() < deadline {
            said = try readLine(from: errors.fileHandleForReading.fileDescriptor, within: deadline.timeIntervalSinceNow)
        }
        #expect(said.contains("new ones wait until some close (raise the limit of open files)"), "\(said)")
        for connection in connections { try? await connection.close() }
    }

    /// Subscribers that all reconnect at once wait in the listener's queue for the hub to accept
    /// them, rather than have their connections dropped (a client dropped tries again after 1 s,
    /// then 3 s). The hub is stopped meanwhile, so only the kernel's queue holds them: with NIO's
    /// usual 256, all but 257 of these would time out.
    @Test(.timeLimit(.minutes(1))) func aReconnectStormWaitsInTheListenersQueue() async throws {
        let (hub, url, _) = try self.startHub(key: String(repeating: "k", count: 40))
        defer {
            kill(hub.processIdentifier, SIGCONT)
            if hub.isRunning { hub.terminate() }
        }
        let port = try #require(URL(string: url)?.port)
        let clients = 600
        #expect(kill(hub.processIdentifier, SIGSTOP) == 0)
        let connections = await withTaskGroup(of: (any Channel)?.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .connectTimeout(.seconds(3))
                        .connect(host: "127.0.0.1", port: port).get()
                }
            }
            return await group.reduce(into: [any Channel]()) { if let channel = $1 { $0.append(channel) } }
        }
        kill(hub.processIdentifier, SIGCONT)
        #expect(connections.count == clients)
        // Once it runs again, the hub serves them.
        let served = try await HTTPClient.shared.execute(HTTPClientRequest(url: url.replacingOccurrences(of: "/.well-known/mercure", with: "/healthz")), timeout: .seconds(10))
        #expect(served.status == .ok)
        for connection in connections { try? await connection.close() }
    }

    @Test func aPortInUseIsRefusedWithAReason() async throws {
        let other = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(other.localAddress?.port)
        let refused = try await runHerald(["serve", "--port", "\(port)", "--in-memory"])
        try await other.close()
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("cannot listen on 127.0.0.1:\(port): the address is in use"), "\(refused.standardError)")
    }

    @Test func anUnusableKeyIsRefusedWithAReason() async throws {
        let short = try await runHerald(["serve", "--port", "0", "--in-memory", "--publisher-jwt-key", "too short"])
        #expect(short.status == 1)
        #expect(short.standardError.contains("HS256 key must be at least 32 bytes"))
        let database = temporarySQLitePath()
        defer { removeSQLiteFiles(database) }
        let shortWithFile = try await runHerald(["serve", "--port", "0", "--database", database, "--publisher-jwt-key", "too short"])
        #expect(shortWithFile.status == 1, "the history is closed cleanly on the way out: \(shortWithFile.standardError)")
        let unknown = try await runHerald(["serve", "--port", "0", "--in-memory", "--publisher-jwt-key", String(repeating: "k", count: 40), "--publisher-jwt-alg", "HS999"])
        #expect(unknown.status != 0)
        #expect(unknown.standardError.contains("unknown JWT algorithm 'HS999'"))
    }

    /// On an IPv6 address, the URL the hub prints has it in brackets, and works.
    @Test(.enabled(if: hasIPv6Loopback, "no IPv6 loopback here")) func theURLOfAHubOnIPv6Works() async throws {
        let (hub, url, token) = try self.startHub(arguments: ["--host", "::1"])
        defer { if hub.isRunning { hub.terminate() } }
        #expect(url.hasPrefix("http://[::1]:"), "\(url)")
        _ = try await self.publish(url, "topic=t&data=over+IPv6", token: token)
    }

    /// An option that says where the history is wins over `HERALD_STORE`.
    @Test(arguments: [["--in-memory"], []]) func anOptionForTheHistoryWinsOverTheEnvironment(_ arguments: [String]) async throws {
        // Nothing listens on port 1: the hub would not start on this store.
        let environment = ["HERALD_STORE": "postgres://herald@127.0.0.1:1/db"]
        let (hub, url, token) = try self.startHub(arguments: arguments, environment: environment)  // [] is --database FILE
        defer { if hub.isRunning { hub.terminate() } }
        _ = try await self.publish(url, "topic=t&data=kept", token: token)
    }

    @Test(arguments: [
        (["serve", "--port", "70000"], "--port must be between 0 and 65535"),
        (["serve", "--in-memory", "--store", "postgres://h/db"], "--in-memory and --store are different places for the history: give one."),
        (["serve", "--database", "a.db", "--in-memory"], "--database and --in-memory are different places for the history: give one."),
        (["serve", "--database", "a.db", "--store", "postgres://h/db"], "--database and --store are different places"),
        (["serve", "--history", "0"], "--history must be at least 1"),
        (["serve", "--heartbeat=-1"], "--heartbeat must be a number of seconds from 0 (none) to 86400."),
        // Infinity, NaN and numbers too large for a duration: usage errors, not a crash.
        (["serve", "--heartbeat=inf"], "--heartbeat must be a number of seconds from 0 (none) to 86400."),
        (["serve", "--heartbeat=nan"], "--heartbeat must be a number of seconds"),
        (["serve", "--request-timeout=-1"], "--request-timeout must be a number of seconds from 0 (none) to 86400."),
        (["serve", "--request-timeout=1e300"], "--request-timeout must be a number of seconds"),
        (["serve", "--history-hours=1e300"], "--history-hours must be a number of hours from 0 (no limit) to 876000"),
        (["serve", "--history-hours=inf"], "--history-hours must be a number of hours"),
        (["serve", "--history-hours=nan"], "--history-hours must be a number of hours"),
    ])
    func badArgumentsAreUsageErrors(_ arguments: [String], reason: String) async throws {
        let result = try await runHerald(arguments)
        #expect(result.status == 64)
        #expect(result.standardError.contains("Usage: herald serve"))
        #expect(result.standardError.contains(reason), "\(result.standardError)")
    }
}

/// Whether this machine has the IPv6 loopback address (a container may not).
let hasIPv6Loopback: Bool = {
    guard let channel = try? ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "::1", port: 0).wait() else {
        return false
    }
    try? channel.close().wait()
    return true
}()
