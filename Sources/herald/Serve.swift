//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import Logging
import Metrics
import NIOCore
import NIOSSL
import Prometheus
import SSEHub
import SSENIO
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the hub: Mercure's publish and subscribe endpoints at /.well-known/mercure.",
        discussion: """
            Keys come from the options or from the environment variables of Mercure's official \
            image: MERCURE_PUBLISHER_JWT_KEY, MERCURE_PUBLISHER_JWT_ALG, MERCURE_SUBSCRIBER_JWT_KEY, \
            MERCURE_SUBSCRIBER_JWT_ALG (HS256 when no algorithm is given; the subscriber key \
            defaults to the publisher key). With no key at all the hub starts in development mode: \
            it makes a key for this run, prints ready tokens, and allows anonymous subscribers \
            and tracks subscriptions. \
            The history is kept in an SQLite file (herald.db) unless --in-memory is given.
            """
    )

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on.")
    var port = 8080

    @Option(help: "A PEM certificate (chain): serve HTTPS, with HTTP/2 for browsers (needs --tls-key).")
    var tlsCert: String?

    @Option(help: "The PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "Seconds of silence before a heartbeat comment goes to a subscriber; 0 for none.")
    var heartbeat: Double = 15

    @Option(help: "Seconds a client has to send a whole request, from its connection's opening (over TLS, the handshake's end) or the last answer on it, before the connection is closed; over TLS the same for the handshake, and for an HTTP/2 connection with no stream. 0 for no limit.")
    var requestTimeout: Double = 60

    @Flag(help: "Send each event to a subscriber at once (TCP_NODELAY), rather than let the kernel merge the events written while earlier ones are unacknowledged: lower latency for bursts, more CPU under load.")
    var tcpNoDelay = false

    @Option(help: "How many updates the history keeps for subscribers that resume.")
    var history = 100_000

    @Option(help: "How many hours an update stays in the history; 0 for no limit.")
    var historyHours: Double = 7 * 24

    @Option(help: "The SQLite file that keeps the history (default: herald.db).")
    var database: String?

    @Flag(help: "Keep the history in memory only: it is lost when the hub stops.")
    var inMemory = false

    @Option(help: "Keep the history in PostgreSQL instead: postgres://user:password@host:5432/database (also HERALD_STORE, unless --database or --in-memory is given).")
    var store: String?

    @Option(help: "Updates that may wait for one subscriber before it is cut as too slow.")
    var subscriberQueue = 1_000

    @Option(help: "The key publishers' JWTs are signed with: a secret (HS*) or a PEM public key.")
    var publisherJWTKey: String?

    @Option(help: "The publisher key's algorithm: HS256, HS384, HS512, RS256…, ES256…, EdDSA.")
    var publisherJWTAlg: String?

    @Option(help: "The key subscribers' JWTs are signed with (default: the publisher key).")
    var subscriberJWTKey: String?

    @Option(help: "The subscriber key's algorithm.")
    var subscriberJWTAlg: String?

    @Flag(help: "Allow subscribers without a token (they receive public updates only).")
    var anonymous = false

    @Flag(help: "Publish subscription events and serve the subscriptions API (on in development mode).")
    var subscriptions = false

    @Flag(help: "Do not serve the dashboard at /.")
    var noDashboard = false

    @Option(help: "An origin allowed to publish with the mercureAuthorization cookie. Repeatable.")
    var publishOrigin: [String] = []

    @Option(help: "An origin whose pages may use the hub, with credentials (CORS). Repeatable.")
    var corsOrigin: [String] = []

    func validate() throws {
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be between 0 and 65535.") }
        try checkSeconds(self.heartbeat, of: "--heartbeat", zeroMeans: "none")
        try checkSeconds(self.requestTimeout, of: "--request-timeout", zeroMeans: "none")
        guard self.history > 0 else { throw ValidationError("--history must be at least 1.") }
        guard self.historyHours >= 0, self.historyHours <= 876_000 else {
            throw ValidationError("--history-hours must be a number of hours from 0 (no limit) to 876000 (100 years).")
        }
        guard self.subscriberQueue > 0 else { throw ValidationError("--subscriber-queue must be at least 1.") }
        let places = [("--database", self.database != nil), ("--in-memory", self.inMemory), ("--store", self.store != nil)]
        let given = places.filter(\.1).map(\.0)
        guard given.count <= 1 else {
            throw ValidationError("\(given.joined(separator: " and ")) are different places for the history: give one.")
        }
        guard (self.tlsCert == nil) == (self.tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP.")
        }
        for (option, origins) in [("--publish-origin", self.publishOrigin), ("--cors-origin", self.corsOrigin)] {
            for origin in origins {
                if let why = Hub.HTTPConfiguration.whyNotAnOrigin(origin) { throw ValidationError("\(option) \(why)") }
            }
        }
    }

    /// The keys from the options, else the environment; both `nil` means development mode.
    func keys() throws -> (publisher: JWTKey, subscriber: JWTKey)? {
        let environment = ProcessInfo.processInfo.environment
        func algorithm(_ option: String?, _ variable: String) throws -> JWTKey.Algorithm {
            let name = option ?? environment[variable] ?? "HS256"
            guard let algorithm = JWTKey.Algorithm.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else {
                throw ValidationError(
                    "unknown JWT algorithm '\(name)': use one of \(JWTKey.Algorithm.allCases.map(\.rawValue).joined(separator: ", "))."
                )
            }
            return algorithm
        }
        let publisherKey = self.publisherJWTKey ?? environment["MERCURE_PUBLISHER_JWT_KEY"]
        let subscriberKey = self.subscriberJWTKey ?? environment["MERCURE_SUBSCRIBER_JWT_KEY"]
        guard let publisherKey = publisherKey ?? subscriberKey else { return nil }
        let publisherAlgorithm = try algorithm(self.publisherJWTAlg, "MERCURE_PUBLISHER_JWT_ALG")
        let publisher = JWTKey(algorithm: publisherAlgorithm, key: publisherKey)
        guard let subscriberKey else { return (publisher, publisher) }
        let subscriberAlgorithm = try algorithm(self.subscriberJWTAlg ?? self.publisherJWTAlg, "MERCURE_SUBSCRIBER_JWT_ALG")
        return (publisher, JWTKey(algorithm: subscriberAlgorithm, key: subscriberKey))
    }

    /// Fewer open files than this, once raised to the hard limit, get a warning at start.
    static let fewOpenFiles = 10_000

    /// `--request-timeout` as the hub takes it: `nil` for no limit.
    var requestTimeLimit: Duration? { self.requestTimeout > 0 ? .seconds(self.requestTimeout) : nil }

    /// `url` without its password, for messages.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? url
    }

    /// The TLS configuration when a certificate is given (HTTPS with HTTP/2, and HTTP/1.1 for
    /// clients that do not offer it), else `nil` for plain HTTP/1.1; checked, so that a bad one is
    /// refused before the history is touched.
    func tls() throws -> TLSConfiguration? {
        guard let certificatePath = self.tlsCert, let keyPath = self.tlsKey else { return nil }
        let certificates = try Trust.certificates(at: certificatePath, named: "the TLS certificate")
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw CommandFailure("cannot read the TLS private key '\(keyPath)': \(error)")
        }
        let tls = TLSConfiguration.makeServerConfiguration(certificateChain: certificates.map { .certificate($0) }, privateKey: .privateKey(key))
        do {
            _ = try NIOSSLContext(configuration: tls)
        } catch {
            throw CommandFailure("the TLS certificate and key cannot be used together: \(error)")
        }
        return tls
    }

    func run() async throws {
        let keys = try self.keys()  // refuse a bad configuration before touching the history
        if let openFiles = raiseOpenFileLimit(), openFiles < Self.fewOpenFiles {
            try? writeAll(
                Array(
                    """
                    herald: this process may have only \(openFiles) open files, and each connection takes one: raise its
                    herald: hard limit for more connections (ulimit -Hn; LimitNOFILE= in a systemd unit).

                    """.utf8
                ),
                to: STDERR_FILENO
            )
        }
        let tls = try self.tls()
        let retention = try Retention(count: self.history, age: self.historyHours > 0 ? .seconds(self.historyHours * 3600) : nil)
        let store: any EventStore
        let storeDescription: String
        var pool: Task<Void, Never>?
        // HERALD_STORE unless an option says where the history is.
        let environment = self.database == nil && !self.inMemory ? ProcessInfo.processInfo.environment["HERALD_STORE"] : nil
        if let url = self.store ?? environment {
            let postgres: PostgresEventStore
            do {
                postgres = try PostgresEventStore(url: url, retention: retention)
            } catch {
                throw CommandFailure("\(error)")
            }
            pool = Task { await postgres.run() }
            do {
                try await postgres.migrate()
            } catch {
                pool?.cancel()
                throw CommandFailure("cannot use the PostgreSQL history at \(Self.redacted(url)): \(String(reflecting: error))")
            }
            store = postgres
            storeDescription = "history in PostgreSQL at \(Self.redacted(url))"
        } else if self.inMemory {
            store = InMemoryEventStore(retention: retention)
            storeDescription = "history in memory"
        } else {
            let database = self.database ?? "herald.db"
            do {
                store = try await SQLiteEventStore.open(path: database, retention: retention)
            } catch {
                throw CommandFailure("\(error)")  // what failed, and the file's name
            }
            storeDescription = "history in SQLite file \(database)"
        }
        defer { pool?.cancel() }
        do {
            try await self.serve(store: store, keys: keys, tls: tls, storeDescription: storeDescription)
        } catch {
            try? await (store as? SQLiteEventStore)?.close()
            throw error
        }
        // Stopped gracefully: every acknowledged update is already committed; close the file.
        try await (store as? SQLiteEventStore)?.close()
    }

    private func serve(
        store: any EventStore,
        keys: (publisher: JWTKey, subscriber: JWTKey)?,
        tls: TLSConfiguration?,
        storeDescription: String
    ) async throws {
        // Prometheus at /metrics: the hub reports through swift-metrics; this process picks the
        // backend, before the hub makes its metrics.
        let metrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))
        var logger = Logger(label: "herald")
        logger.logLevel = .info
        var hubConfiguration = Hub.Configuration()
        hubConfiguration.subscriberQueueLimit = self.subscriberQueue
        hubConfiguration.tracksSubscriptions = self.subscriptions || keys == nil
        let hub = try await Hub(store: store, configuration: hubConfiguration, logger: logger)
        // On PostgreSQL, other nodes may share the history: deliver what they publish too.
        let follower = (store as? PostgresEventStore).map { store in Task { await store.follow(hub) } }
        defer { follower?.cancel() }
        var http = Hub.HTTPConfiguration()
        http.heartbeat = self.heartbeat > 0 ? KeepAlive(interval: .seconds(self.heartbeat)) : nil
        http.allowsAnonymousSubscribers = self.anonymous
        http.tcpNoDelay = self.tcpNoDelay
        http.publishOrigins = self.publishOrigin
        http.corsOrigins = self.corsOrigin
        var banner = ""
        http.dashboard = self.noDashboard ? nil : Hub.Dashboard()
        if let (publisher, subscriber) = keys {
            http.publisherKey = publisher
            http.subscriberKey = subscriber
        } else {
            // Development mode: a key for this run only, and tokens ready to paste.
            var generator = SystemRandomNumberGenerator()
            let secret = (0..<32).map { _ in String(UInt8.random(in: 0...255, using: &generator), radix: 16) }.joined()
            http.publisherKey = JWTKey(algorithm: .hs256, key: secret)
            http.subscriberKey = http.publisherKey
            http.allowsAnonymousSubscribers = true
            let publisherToken = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: secret)
            let subscriberToken = try await Hub.developmentToken(publish: nil, subscribe: ["*"], key: secret)
            if !self.noDashboard {
                // Development mode only: the page comes with its tokens, ready to use.
                http.dashboard = Hub.Dashboard(publisherToken: publisherToken, subscriberToken: subscriberToken)
            }
            banner = """
                herald: DEVELOPMENT MODE, NOT FOR PRODUCTION: no JWT key was given, so this hub made one for this run
                herald: and lets anyone subscribe to public updates; the dashboard hands out the tokens below to anyone
                herald: who can load it. Set MERCURE_PUBLISHER_JWT_KEY for real use.
                herald: publisher token (may publish to every topic):
                \(publisherToken)
                herald: subscriber token (may receive every private update):
                \(subscriberToken)

                """
        }

        let router = Router(context: HubRequestContext.self)
        try await hub.addRoutes(to: router, configuration: http)
        router.get("/metrics") { _, _ in
            try? await hub.recordStoreSize()
            var text: [UInt8] = []
            metrics.emit(into: &text)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: text))
            )
        }
        let history = self.history
        let startStore = storeDescription
        let startBanner = banner
        let dashboard = http.dashboard != nil
        let scheme = tls == nil ? "http" : "https"
        let server = try hub.server(
            router.buildResponder(),
            host: self.host,
            port: self.port,
            tlsConfiguration: tls,
            requestTimeout: self.requestTimeLimit,
            serverName: "herald",
            onServerRunning: { channel in
                // An IPv6 address in brackets, as a URL has it.
                let address = channel.localAddress.map { local in
                    let ip = local.ipAddress ?? "?"
                    return "\(local.protocol == .inet6 ? "[\(ip)]" : ip):\(local.port ?? 0)"
                } ?? "?"
                try? writeAll(
                    Array(
                        """
                        herald: hub listening on \(scheme)://\(address)/.well-known/mercure (\(startStore), \(history) updates kept)

                        """.utf8 + Array((dashboard ? "herald: dashboard at \(scheme)://\(address)/\n" : "").utf8) + Array(startBanner.utf8)
                    ),
                    to: STDERR_FILENO
                )
            },
            logger: logger
        )
        do {
            try await ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
        } catch let error as IOError where [EADDRINUSE, EADDRNOTAVAIL, EACCES].contains(error.errnoCode) {
            let why =
                switch error.errnoCode {
                case EADDRINUSE: "the address is in use (another server listens there; choose another --port)"
                case EADDRNOTAVAIL: "this machine has no such address (choose another --host: 127.0.0.1, or 0.0.0.0 for all)"
                default: "permission denied (a port below 1024 needs privileges; choose another --port)"
                }
            throw CommandFailure("cannot listen on \(self.host):\(self.port): \(why)")
        } catch let error as SocketAddressError.UnknownHost {
            throw CommandFailure("cannot listen on \(self.host):\(self.port): \(error.errorDescription) (--host is an address or name of this machine)")
        }
        // The ends of the subscriptions just closed, unless the store cannot take them (a
        // database that went away must not keep the hub from stopping).
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await hub.waitForSubscriptionEvents() }
            group.addTask { try? await Task.sleep(for: .seconds(5)) }
            await group.next()
            group.cancelAll()
        }
        // The node leaves the cluster's list of nodes.
        follower?.cancel()
        await follower?.value
    }
}
