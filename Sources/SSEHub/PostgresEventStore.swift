//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
public import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresNIO
import SSECore

/// A durable history in PostgreSQL: for hubs of several nodes sharing one database.
///
/// Appends are serialised across every node by a transaction-level advisory lock, and each takes
/// the next numbers of one counter kept in the database, so sequences are consecutive and never go
/// backwards, whichever node stored an update and however often nodes restart. An append returns
/// once its transaction is committed; appends that arrive while one commits share the next
/// transaction (group commit). Resuming looks an ID up through its unique index and reads a range
/// of the primary key. The tables are created when the store opens.
///
/// Run ``run()`` (the connection pool) for as long as the store is used, as a task or a service.
public actor PostgresEventStore: EventStore, GroupCommitting, SubscriptionDirectory {
    /// What is kept; older updates are deleted.
    public let retention: Retention
    /// How long a request waits for the database before it fails (the pool itself waits for ever
    /// for a database that went away): a publish then gets `503`, not a hang.
    public let timeout: Duration
    private let client: PostgresClient
    /// One connection's settings, the pool's: ``migrate(timeout:)`` opens one of its own with them.
    private let connection: PostgresConnection.Configuration
    /// This node, in the cluster's tables: unique to the process.
    let node = "urn:uuid:" + UUID().uuidString.lowercased()
    /// How long a node may go without a sign of life before the others end its subscriptions.
    let nodeLifetime: Duration
    private let logger: Logger
    private let now: @Sendable () -> Date
    private var last: UInt64 = 0
    var pending: [PendingAppend] = []
    var flushing = false
    /// The advisory lock every node's appends take: "herald" in ASCII.
    private static let lockKey: Int64 = 0x68_65_72_61_6C_64

    /// A store on the database at `url` (`postgres://user:password@host:port/database`).
    ///
    /// - Parameters:
    ///   - url: Where the database is.
    ///   - retention: What is kept.
    ///   - timeout: How long a request waits for the database before it fails.
    ///   - logger: Where the store logs.
    /// - Throws: ``EventStoreError`` when the URL cannot be used.
    public init(
        url: String,
        retention: Retention = Retention(),
        timeout: Duration = .seconds(5),
        logger: Logger = Logger(label: "herald.postgres")
    ) throws {
        try self.init(url: url, retention: retention, timeout: timeout, logger: logger, now: Date.init)
    }

    /// A store whose notion of the current time is `now`: tests pass their own.
    init(
        url: String,
        retention: Retention,
        timeout: Duration = .seconds(5),
        nodeLifetime: Duration = .seconds(10),
        logger: Logger,
        now: @escaping @Sendable () -> Date
    ) throws {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme),
            let host = components.host
        else {
            throw EventStoreError(description: "a PostgreSQL URL looks like postgres://user:password@host:5432/database, not '\(url)'")
        }
        let database = components.path.split(separator: "/").first.map(String.init)
        let (port, username) = (components.port ?? 5432, components.user ?? "postgres")
        let configuration = PostgresClient.Configuration(
            host: host,
            port: port,
            username: username,
            password: components.password,
            database: database,
            tls: .disable
        )
        self.client = PostgresClient(configuration: configuration)
        self.connection = PostgresConnection.Configuration(
            host: host,
            port: port,
            username: username,
            password: components.password,
            database: database,
            tls: .disable
        )
        self.retention = retention
        self.timeout = timeout
        self.nodeLifetime = nodeLifetime
        self.logger = logger
        self.now = now
    }

    /// Runs the connection pool until the calling task is cancelled.
    public nonisolated func run() async {
        await self.client.run()
    }

    /// Creates the tables if they are missing and reads where the history stands. Call once,
    /// while ``run()`` runs, before using the store.
    ///
    /// - Throws: ``EventStoreError`` when the database refuses the store (saying why: a wrong
    ///   password, a database that does not exist, nothing listening at the URL's address), or
    ///   does not answer within `timeout`.
    public func migrate(timeout: Duration = .seconds(10)) async throws {
        try await self.withinTimeout(timeout) {
            try await self.checkConnection()
            try await self.createTables()
        }
    }

    /// Opens one connection of its own, and closes it. The pool keeps trying a database that
    /// refuses it and says nothing of why, so that a wrong password looked like a database that
    /// did not answer; this connection's error says.
    private func checkConnection() async throws {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: self.connection, id: 0, logger: self.logger)
        } catch {
            throw EventStoreError(description: Self.describe(connectionError: error))
        }
        try? await connection.close()
    }

    /// Why a connection failed, with no secret in it: the server's message when it refused
    /// (PostgreSQL's own words, such as `password authentication failed for user "herald"`), or
    /// the network's.
    static func describe(connectionError error: any Error) -> String {
        guard let error = error as? PSQLError else { return "cannot connect to PostgreSQL (\(error))" }
        if let message = error.serverInfo?[.message] {
            return "PostgreSQL refused the connection: \(message)"
        }
        if error.code == .authMechanismRequiresPassword {
            return "PostgreSQL asks for a password, and the URL gives none (postgres://user:password@host/database)"
        }
        switch error.underlying {
        case let failure as NIOConnectionError:
            if failure.dnsAError != nil || failure.dnsAAAAError != nil, failure.connectionErrors.isEmpty {
                return "cannot connect to PostgreSQL: cannot resolve the host \(failure.host)"
            }
            let reasons = failure.connectionErrors.map { Self.describe(networkError: $0.error) }
            return "cannot connect to PostgreSQL at \(failure.host):\(failure.port)" + (reasons.first.map { ": \($0)" } ?? "")
        case let underlying?:
            return "cannot connect to PostgreSQL: \(Self.describe(networkError: underlying))"
        case nil:
            return "cannot connect to PostgreSQL (\(error.code))"
        }
    }

    private static func describe(networkError error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)).lowercased() }
        return String(describing: error)
    }

    /// Runs `body`, or fails with ``EventStoreError`` once it has taken `timeout` (by default
    /// the store's). The body is cancelled then, but not waited for.
    @discardableResult
    private nonisolated func withinTimeout<T: Sendable>(
        _ timeout: Duration? = nil,
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let timeout = timeout ?? self.timeout
        let waiting = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
        let take: @Sendable () -> CheckedContinuation<T, any Error>? = {
            waiting.withLockedValue { continuation in
                defer { continuation = nil }
                return continuation
            }
        }
        return try await withCheckedThrowingContinuation { continuation in
            waiting.withLockedValue { $0 = continuation }
            let work = Task { () -> Result<T, any Error> in
                do { return .success(try await body()) } catch { return .failure(error) }
            }
            let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: TimeAmount(timeout)) {
                // Taken before the work is cancelled, so the failure it then ends with is not
                // what the caller sees.
                let waiting = take()
                work.cancel()
                waiting?.resume(throwing: EventStoreError(description: "PostgreSQL did not answer within \(timeout)"))
            }
            Task {
                let result = await work.value
                timer.cancel()
                take()?.resume(with: result)
            }
        }
    }

    private func createTables() async throws {
        let logger = self.logger
        let node = self.node
        // In one transaction under the appends' lock: nodes starting together do not race.
        try await self.client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS herald_updates (
                    sequence BIGINT PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    topics TEXT NOT NULL,
                    data TEXT NOT NULL,
                    private BOOLEAN NOT NULL,
                    type TEXT,
                    retry BIGINT,
                    published_at DOUBLE PRECISION NOT NULL
                )
                """,
                logger: logger
            )
            try await connection.query("CREATE INDEX IF NOT EXISTS herald_updates_published_at ON herald_updates (published_at)", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS herald_counter (single BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (single), last BIGINT NOT NULL)",
                logger: logger
            )
            try await connection.query("INSERT INTO herald_counter (last) VALUES (0) ON CONFLICT DO NOTHING", logger: logger)
            // The cluster's nodes, with their last sign of life, and the subscriptions each holds.
            try await connection.query("CREATE TABLE IF NOT EXISTS herald_nodes (node TEXT PRIMARY KEY, seen_at TIMESTAMPTZ NOT NULL)", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS herald_subscriptions (
                    subscriber TEXT PRIMARY KEY, node TEXT NOT NULL, topics TEXT NOT NULL, payload TEXT,
                    listed_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )
                """,
                logger: logger
            )
            // Alive before it holds any subscription: the others must not take it for dead.
            try await connection.query("INSERT INTO herald_nodes VALUES (\(node), now()) ON CONFLICT (node) DO UPDATE SET seen_at = now()", logger: logger)
        }
        self.last = try await self.counter()
    }

    private func counter() async throws -> UInt64 {
        for try await last in try await self.client.query("SELECT last FROM herald_counter", logger: self.logger).decode(Int64.self) {
            return UInt64(last)
        }
        return 0
    }

    /// Updates published before this are past the age limit (the distant past when there is none).
    private var cutoff: Double {
        self.retention.cutoff(now: self.now())?.timeIntervalSince1970 ?? -Double.greatestFiniteMagnitude
    }

    public func lastSequence() async throws -> UInt64 {
        self.last
    }

    public func lastEventID() async throws -> String? {
        try await self.withinTimeout { try await self.readLastEventID() }
    }

    private func readLastEventID() async throws -> String? {
        let rows = try await self.client.query(
            "SELECT id FROM herald_updates WHERE published_at >= \(self.cutoff) ORDER BY sequence DESC LIMIT 1",
            logger: self.logger
        )
        for try await id in rows.decode(String.self) { return id }
        return nil
    }

    public func append(_ updates: [Update]) async throws -> [StoredUpdate] {
        try await self.appendInNextCommit(updates) { _ in }
    }

    func commit(_ requests: [[Update]]) async throws -> (stored: [[StoredUpdate]], refused: Set<Int>) {
        let now = self.now().timeIntervalSince1970
        let cutoff = self.cutoff
        let count = self.retention.count
        let logger = self.logger
        let client = self.client
        let result = try await self.withinTimeout { try await client.withTransaction(logger: logger) { connection -> (stored: [[StoredUpdate]], refused: Set<Int>, last: UInt64) in
            // Every node's appends, one at a time: sequences stay consecutive across nodes. A node
            // that stalls while it holds the lock (paused, cut off) loses its session after 2 s,
            // which frees the lock for the others.
            try await connection.query(
                "SELECT set_config('idle_in_transaction_session_timeout', '2000', true), pg_advisory_xact_lock(\(Self.lockKey))",
                logger: logger
            )
            var known = Set<String>()
            let ids = requests.flatMap { $0.map(\.id) }
            for try await id in try await connection.query("SELECT id FROM herald_updates WHERE id = ANY(\(ids))", logger: logger).decode(String.self) {
                known.insert(id)
            }
            var last: Int64 = 0
            for try await value in try await connection.query("SELECT last FROM herald_counter", logger: logger).decode(Int64.self) {
                last = value
            }
            // Checked under the lock: another node cannot slip the same ID in meanwhile.
            let refused = refusedAppends(requests, known: known)
            var stored: [[StoredUpdate]] = []
            var rows: [StoredUpdate] = []
            for (index, updates) in requests.enumerated() {
                guard !refused.contains(index) else {
                    stored.append([])
                    continue
                }
                let numbered = updates.map { update in
                    last += 1
                    return StoredUpdate(sequence: UInt64(last), update: update)
                }
                rows += numbered
                stored.append(numbered)
            }
            for start in stride(from: 0, to: rows.count, by: 500) {
                let chunk = rows[start..<min(rows.count, start + 500)]
                var binds = PostgresBindings(capacity: chunk.count * 8)
                var values: [String] = []
                for row in chunk {
                    let base = binds.count
                    values.append("(" + (1...8).map { "$\(base + $0)" }.joined(separator: ", ") + ")")
                    binds.append(Int64(row.sequence))
                    binds.append(row.update.id)
                    binds.append(jsonArray(row.update.topics))
                    binds.append(row.update.data)
                    binds.append(row.update.isPrivate)
                    binds.append(row.update.type)
                    binds.append(row.update.retryMilliseconds)
                    binds.append(now)
                }
                try await connection.query(
                    PostgresQuery(
                        unsafeSQL: "INSERT INTO herald_updates (sequence, id, topics, data, private, type, retry, published_at) VALUES "
                            + values.joined(separator: ", "),
                        binds: binds
                    ),
                    logger: logger
                )
            }
            try await connection.query("UPDATE herald_counter SET last = \(last)", logger: logger)
            // Sent on commit; a node that misses it still reads the rows (see `follow`).
            try await connection.query("SELECT pg_notify(\(Self.channel), \(String(last)))", logger: logger)
            try await connection.query(
                "DELETE FROM herald_updates WHERE sequence <= \(last - Int64(count)) OR published_at < \(cutoff)",
                logger: logger
            )
            return (stored, refused, UInt64(last))
        } }
        self.last = result.last
        return (result.stored, result.refused)
    }

    public func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
        try await self.withinTimeout { try await self.read(after: lastEventID, through: last) }
    }

    private func read(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
        let rows = try await self.client.query(
            "SELECT sequence FROM herald_updates WHERE id = \(lastEventID) AND published_at >= \(self.cutoff)",
            logger: self.logger
        )
        for try await sequence in rows.decode(Int64.self) {
            return try await self.range(after: UInt64(sequence), through: last)
        }
        return nil
    }

    public func updates(through last: UInt64) async throws -> [StoredUpdate] {
        try await self.withinTimeout { try await self.range(after: 0, through: last) }
    }

    private func range(after sequence: UInt64, through last: UInt64, limit: Int = Int(Int32.max)) async throws -> [StoredUpdate] {
        guard last > sequence else { return [] }
        let rows = try await self.client.query(
            """
            SELECT sequence, id, topics, data, private, type, retry FROM herald_updates
            WHERE sequence > \(Int64(sequence)) AND sequence <= \(Int64(min(last, UInt64(Int64.max)))) AND published_at >= \(self.cutoff)
            ORDER BY sequence LIMIT \(Int64(limit))
            """,
            logger: self.logger
        )
        var updates: [StoredUpdate] = []
        for try await (sequence, id, topics, data, isPrivate, type, retry) in rows.decode((Int64, String, String, String, Bool, String?, Int64?).self) {
            updates.append(
                StoredUpdate(
                    sequence: UInt64(sequence),
                    update: Update(
                        id: id,
                        topics: try JSONDecoder().decode([String].self, from: Data(topics.utf8)),
                        data: data,
                        isPrivate: isPrivate,
                        type: type,
                        retry: retry.map { .milliseconds($0) }
                    )
                )
            )
        }
        return updates
    }

    /// Hands `hub` the updates that other nodes store in this history, in order, for as long as
    /// the calling task runs: every node of a cluster runs one beside its hub.
    ///
    /// Each commit notifies the channel `herald_updates` (with the last sequence it stored), and a
    /// notification makes the follower read every row after the last one the hub fanned out, a
    /// thousand at a time: notifications that come together are read as one batch, and their order
    /// does not matter. The follower also reads every `interval`, and after it reconnects to a
    /// database that went away, so a missed notification delays an update but never loses it.
    /// With an `interval` of zero or less it reads on notifications and reconnections only.
    public nonisolated func follow(_ hub: Hub, every interval: Duration = .seconds(1)) async {
        // At most one wake waits: a burst of notifications is one read.
        let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        await withDiscardingTaskGroup { group in
            group.addTask {
                var failures = 0
                while !Task.isCancelled {
                    do {
                        try await self.client.withConnection { connection in
                            try await connection.listen(on: Self.channel) { notifications in
                                failures = 0
                                wake.yield()  // listening now: read what came before
                                for try await _ in notifications { wake.yield() }
                            }
                        }
                    } catch {
                        if Task.isCancelled { break }
                        if failures == 0 {
                            self.logger.warning("not listening to the shared history; retrying", metadata: ["error": "\(String(reflecting: error))"])
                        }
                        failures += 1
                    }
                    try? await Task.sleep(for: .milliseconds(min(100 << min(failures, 5), 2_000)))
                }
                wake.finish()
            }
            if interval > .zero {
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval.cappedAtACentury)
                        wake.yield()
                    }
                    wake.finish()
                }
            }
            if hub.configuration.tracksSubscriptions {
                group.addTask { await self.keepAlive(ending: hub) }
            }
            for await _ in wakes {
                await self.deliverNewRows(to: hub)
            }
            group.cancelAll()
        }
    }

    /// Tells the cluster that this node is alive, every fifth of its lifetime (10 s), and ends the
    /// subscriptions of nodes that have not done so for a lifetime (they were killed, or lost the
    /// database): `hub` publishes their ends. Only a node that has been alive for a lifetime
    /// itself does that, so that after an outage of the database the nodes have the time to come
    /// back before any is taken for dead.
    private nonisolated func keepAlive(ending hub: Hub) async {
        let lifetime = self.nodeLifetime
        var aliveSince: ContinuousClock.Instant?
        while !Task.isCancelled {
            do {
                try await self.withinTimeout {
                    try await self.client.query(
                        "INSERT INTO herald_nodes VALUES (\(self.node), now()) ON CONFLICT (node) DO UPDATE SET seen_at = now()",
                        logger: self.logger
                    )
                }
                // Its own entries that no subscription of its own backs (one that ended while
                // the database was away, or while it was being listed) go too; the recent ones
                // stay, as their subscribers may have come after `active` was taken.
                let active = hub.trackedSubscriberIDs()
                try await self.withinTimeout {
                    try await self.client.query(
                        """
                        DELETE FROM herald_subscriptions
                        WHERE node = \(self.node) AND NOT (subscriber = ANY(\(active))) AND listed_at < now() - interval '5 seconds'
                        """,
                        logger: self.logger
                    )
                }
                let since = aliveSince ?? .now
                aliveSince = since
                if ContinuousClock.now - since > lifetime {
                    let ended = try await self.withinTimeout { try await self.removeSubscriptionsOfDeadNodes() }
                    if !ended.isEmpty {
                        self.logger.notice("ending the subscriptions of nodes gone silent", metadata: ["subscriptions": "\(ended.count)"])
                        await hub.announceEnds(of: ended)
                    }
                }
            } catch {
                aliveSince = nil
            }
            try? await Task.sleep(for: lifetime / 5)
        }
        // Stopping: its subscriptions have ended (and said so); the node goes.
        _ = try? await self.withinTimeout { try await self.client.query("DELETE FROM herald_nodes WHERE node = \(self.node)", logger: self.logger) }
    }

    /// Deletes the subscriptions of nodes silent for a lifetime, and those nodes: returns the
    /// subscriptions. (One statement: of nodes doing it at once, each subscription goes to one.)
    private func removeSubscriptionsOfDeadNodes() async throws -> [TrackedSubscriber] {
        let seconds = self.nodeLifetime.seconds
        let rows = try await self.client.query(
            """
            DELETE FROM herald_subscriptions WHERE node NOT IN
                (SELECT node FROM herald_nodes WHERE seen_at >= now() - make_interval(secs => \(seconds)))
            RETURNING subscriber, topics, payload
            """,
            logger: self.logger
        )
        let ended = try await Self.trackedSubscribers(rows)
        try await self.client.query("DELETE FROM herald_nodes WHERE seen_at < now() - make_interval(secs => \(seconds))", logger: self.logger)
        return ended
    }

    private static func trackedSubscribers(_ rows: PostgresRowSequence) async throws -> [TrackedSubscriber] {
        var subscribers: [TrackedSubscriber] = []
        for try await (id, topics, payload) in rows.decode((String, String, String?).self) {
            subscribers.append(
                TrackedSubscriber(
                    id: id,
                    topics: try JSONDecoder().decode([String].self, from: Data(topics.utf8)),
                    payload: try payload.map { try JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
                )
            )
        }
        return subscribers
    }

    /// The channel each commit notifies.
    private static let channel = "herald_updates"

    /// Hands `hub` every row after the last update it fanned out.
    private nonisolated func deliverNewRows(to hub: Hub) async {
        let batch = 1_000
        while !Task.isCancelled {
            do {
                let after = hub.lastSequence
                let updates = try await self.withinTimeout { try await self.range(after: after, through: .max, limit: batch) }
                if !updates.isEmpty { try hub.deliver(updates) }
                if updates.count < batch { return }
            } catch {
                self.logger.warning("cannot read the shared history", metadata: ["error": "\(String(reflecting: error))"])
                return
            }
        }
    }

    func insert(_ subscriber: TrackedSubscriber) async throws {
        let topics = String(decoding: try JSONEncoder().encode(subscriber.topics), as: UTF8.self)
        let payload = try subscriber.payload.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        try await self.withinTimeout {
            try await self.client.query(
                "INSERT INTO herald_subscriptions (subscriber, node, topics, payload) VALUES (\(subscriber.id), \(self.node), \(topics), \(payload))",
                logger: self.logger
            )
        }
    }

    func remove(_ subscriber: TrackedSubscriber) async throws {
        try await self.withinTimeout {
            try await self.client.query("DELETE FROM herald_subscriptions WHERE subscriber = \(subscriber.id)", logger: self.logger)
        }
    }

    func subscribers() async throws -> [TrackedSubscriber] {
        try await self.withinTimeout {
            try await Self.trackedSubscribers(
                try await self.client.query("SELECT subscriber, topics, payload FROM herald_subscriptions", logger: self.logger)
            )
        }
    }

    public func size() async throws -> EventStoreSize {
        try await self.withinTimeout { try await self.readSize() }
    }

    private func readSize() async throws -> EventStoreSize {
        let rows = try await self.client.query(
            "SELECT COUNT(*), COALESCE(pg_total_relation_size('herald_updates'), 0) FROM herald_updates WHERE published_at >= \(self.cutoff)",
            logger: self.logger
        )
        for try await (count, bytes) in rows.decode((Int64, Int64).self) {
            return EventStoreSize(updates: Int(count), bytes: Int(bytes))
        }
        return EventStoreSize(updates: 0, bytes: 0)
    }
}
