//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
public import Logging
import PostgresNIO

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
public actor PostgresEventStore: EventStore, GroupCommitting {
    /// What is kept; older updates are deleted.
    public let retention: Retention
    private let client: PostgresClient
    private let logger: Logger
    private let now: @Sendable () -> Date
    private var last: UInt64 = 0
    var pending: [PendingAppend] = []
    var flushing = false
    /// The advisory lock every node's appends take: "herald" in ASCII.
    private static let lockKey: Int64 = 0x68_65_72_61_6C_64

    /// A store on the database at `url` (`postgres://user:password@host:port/database`).
    ///
    /// - Throws: ``EventStoreError`` when the URL cannot be used.
    public init(url: String, retention: Retention = Retention(), logger: Logger = Logger(label: "herald.postgres")) throws {
        try self.init(url: url, retention: retention, logger: logger, now: Date.init)
    }

    /// A store whose notion of the current time is `now`: tests pass their own.
    init(url: String, retention: Retention, logger: Logger, now: @escaping @Sendable () -> Date) throws {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme),
            let host = components.host
        else {
            throw EventStoreError(description: "a PostgreSQL URL looks like postgres://user:password@host:5432/database, not '\(url)'")
        }
        let database = components.path.split(separator: "/").first.map(String.init)
        let configuration = PostgresClient.Configuration(
            host: host,
            port: components.port ?? 5432,
            username: components.user ?? "postgres",
            password: components.password,
            database: database,
            tls: .disable
        )
        self.client = PostgresClient(configuration: configuration)
        self.retention = retention
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
    /// - Throws: ``EventStoreError`` when the database cannot be reached within `timeout` (the
    ///   pool itself keeps trying for ever).
    public func migrate(timeout: Duration = .seconds(10)) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.createTables() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw EventStoreError(description: "PostgreSQL did not answer within \(timeout)")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private func createTables() async throws {
        try await self.client.query(
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
            logger: self.logger
        )
        try await self.client.query(
            "CREATE INDEX IF NOT EXISTS herald_updates_published_at ON herald_updates (published_at)",
            logger: self.logger
        )
        try await self.client.query(
            "CREATE TABLE IF NOT EXISTS herald_counter (single BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (single), last BIGINT NOT NULL)",
            logger: self.logger
        )
        try await self.client.query("INSERT INTO herald_counter (last) VALUES (0) ON CONFLICT DO NOTHING", logger: self.logger)
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
        let rows = try await self.client.query(
            "SELECT id FROM herald_updates WHERE published_at >= \(self.cutoff) ORDER BY sequence DESC LIMIT 1",
            logger: self.logger
        )
        for try await id in rows.decode(String.self) { return id }
        return nil
    }

    public func append(_ updates: [Update]) async throws -> [StoredUpdate] {
        try await self.appendInNextCommit(updates)
    }

    func commit(_ requests: [[Update]]) async throws -> (stored: [[StoredUpdate]], refused: Set<Int>) {
        let now = self.now().timeIntervalSince1970
        let cutoff = self.cutoff
        let count = self.retention.count
        let logger = self.logger
        let result = try await self.client.withTransaction(logger: logger) { connection -> (stored: [[StoredUpdate]], refused: Set<Int>, last: UInt64) in
            // Every node's appends, one at a time: sequences stay consecutive across nodes.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
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
                    binds.append(String(decoding: try JSONEncoder().encode(row.update.topics), as: UTF8.self))
                    binds.append(row.update.data)
                    binds.append(row.update.isPrivate)
                    binds.append(row.update.type)
                    binds.append(row.update.retry.map { Int64(($0 / .milliseconds(1)).rounded(.down)) })
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
            try await connection.query(
                "DELETE FROM herald_updates WHERE sequence <= \(last - Int64(count)) OR published_at < \(cutoff)",
                logger: logger
            )
            return (stored, refused, UInt64(last))
        }
        self.last = result.last
        return (result.stored, result.refused)
    }

    public func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
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
        try await self.range(after: 0, through: last)
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
    /// the calling task runs: every node of a cluster runs one beside its hub. (It polls every
    /// `interval`; notifications from the database are still to come.)
    public nonisolated func follow(_ hub: Hub, every interval: Duration = .milliseconds(100)) async {
        let batch = 1_000
        while !Task.isCancelled {
            do {
                let updates = try await self.range(after: hub.lastSequence, through: .max, limit: batch)
                if !updates.isEmpty { try hub.deliver(updates) }
                if updates.count == batch { continue }  // more is waiting
            } catch {
                self.logger.warning("cannot read the shared history", metadata: ["error": "\(String(reflecting: error))"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    public func size() async throws -> EventStoreSize {
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
