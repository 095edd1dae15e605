//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import NIOCore
import NIOPosix
import SQLiteNIO

/// A durable history in one SQLite file: the hub's default.
///
/// An append returns only once its transaction is committed and the write-ahead log synced to
/// disk, so an acknowledged publish survives a crash of the process or of the machine. Appends
/// that arrive while a commit is running are grouped into the next transaction (group commit), so a
/// busy hub pays one disk sync per batch, not per publish.
///
/// The sync is not part of the commit (`synchronous=NORMAL` in WAL mode): once SQLite has written a
/// transaction, ``append(_:written:)`` hands its updates on (the hub delivers them), and the next
/// transaction is written while the store syncs the log. Only a crash of the machine between the
/// two could lose an update that subscribers saw; its publisher was not answered.
///
/// Resuming looks an ID up through its unique index and reads a range of the primary key: no
/// scan. Reads use a second connection, which WAL lets run beside the writer.
public actor SQLiteEventStore: EventStore, GroupCommitting {
    /// What is kept; older updates are deleted.
    public let retention: Retention
    /// The file.
    public let path: String
    private let now: @Sendable () -> Date
    private let writer: SQLiteConnection
    private let reader: SQLiteConnection
    private let log: WriteAheadLog
    private var last: UInt64
    /// The last sequence when what the retention drops was last deleted (see `pruneIfDue`).
    private var prunedAt: UInt64 = 0
    var pending: [PendingAppend] = []
    var flushing = false
    /// Appends written and not yet synced, and whether a sync is under way.
    private var unsynced: [WrittenAppend] = []
    private var syncing = false
    /// Why a sync failed: the store takes no more appends after, since what the disk holds is
    /// then unknown.
    private var syncFailure: EventStoreError?
    /// Runs in place of each sync, given the sync: tests delay or fail it.
    private var interposedSync: (@Sendable (_ sync: @Sendable () async throws -> Void) async throws -> Void)?

    /// Opens (or creates) the history in the file at `path`, keeping what `retention` says.
    public static func open(path: String, retention: Retention = Retention()) async throws -> SQLiteEventStore {
        try await self.open(path: path, retention: retention, now: Date.init)
    }

    /// Opens a history whose notion of the current time is `now`: tests pass their own.
    static func open(path: String, retention: Retention, now: @escaping @Sendable () -> Date) async throws -> SQLiteEventStore {
        let writer = try await SQLiteConnection.open(storage: .file(path: path))
        do {
            // Some file systems (network ones) cannot hold a write-ahead log.
            let mode = try await writer.query("PRAGMA journal_mode=WAL").first?.column("journal_mode")?.string
            guard mode == "wal" else {
                throw EventStoreError(description: "SQLite cannot keep a write-ahead log for \(path) (journal mode \(mode ?? "unknown"))")
            }
            for statement in [
                // A commit writes the log; the store syncs it after (see `syncWritten`).
                "PRAGMA synchronous=NORMAL",
                // The store numbers the updates itself (see `insert`). Files made before have
                // AUTOINCREMENT, which works the same and costs a page more per commit.
                """
                CREATE TABLE IF NOT EXISTS updates (
                    sequence INTEGER PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    topics TEXT NOT NULL,
                    data TEXT NOT NULL,
                    private INTEGER NOT NULL,
                    type TEXT,
                    retry INTEGER,
                    published_at REAL NOT NULL
                )
                """,
                // Files made before have an index of the publication times, which every insert
                // wrote to; retention by age needs none (see `pruneIfDue`).
                "DROP INDEX IF EXISTS updates_published_at",
            ] {
                _ = try await writer.query(statement)
            }
            let rows = try await writer.query("SELECT COALESCE(MAX(sequence), 0) AS last FROM updates")
            let last = UInt64(rows.first?.column("last")?.integer ?? 0)
            let log = try WriteAheadLog(database: path)
            let reader = try await SQLiteConnection.open(storage: .file(path: path))
            return SQLiteEventStore(path: path, writer: writer, reader: reader, log: log, last: last, retention: retention, now: now)
        } catch {
            try? await writer.close()  // a connection must be closed, even on the way out
            throw error
        }
    }

    private init(
        path: String,
        writer: SQLiteConnection,
        reader: SQLiteConnection,
        log: WriteAheadLog,
        last: UInt64,
        retention: Retention,
        now: @escaping @Sendable () -> Date
    ) {
        self.path = path
        self.writer = writer
        self.reader = reader
        self.log = log
        self.last = last
        self.retention = retention
        self.now = now
    }

    /// Updates published before this are past the age limit (the distant past when there is none).
    private var cutoff: Double {
        self.retention.cutoff(now: self.now())?.timeIntervalSince1970 ?? -Double.greatestFiniteMagnitude
    }

    /// Updates at or below this sequence are past the count limit.
    private var forgotten: Int {
        max(0, Int(clamping: self.last) - self.retention.count)
    }

    /// Deletes what the retention drops once a tenth of the count (at most 1 000 updates) has been
    /// inserted since the last time. Reads leave out what is dropped and not deleted yet, so what
    /// the history holds stays exact; a statement per commit, or a trigger compiled into each insert,
    /// cost more. A failure leaves the rows to the next time (the commit is done by then).
    ///
    /// What is too old is deleted up to the first update that is not, found from the oldest on: no
    /// index of the publication times, which every insert would write to, and no scan beyond what
    /// is deleted. An update older than one before it (the clock went back) is left to the count.
    private func pruneIfDue() async {
        guard self.last >= self.prunedAt + UInt64(max(1, min(self.retention.count / 10, 1_000))) else { return }
        let pruned = try? await self.writer.query(
            """
            DELETE FROM updates WHERE sequence <= max(?, coalesce(
                (SELECT sequence FROM updates WHERE published_at >= ? ORDER BY sequence LIMIT 1) - 1, ?
            ))
            """,
            [.integer(self.forgotten), .float(self.cutoff), .integer(Int(clamping: self.last))]
        )
        if pruned != nil { self.prunedAt = self.last }
    }

    /// Closes both connections.
    public func close() async throws {
        try await self.writer.close()
        try await self.reader.close()
        self.log.unlock()  // another store may open the file now
    }

    public func lastSequence() async throws -> UInt64 {
        self.last
    }

    public func lastEventID() async throws -> String? {
        let rows = try await self.reader.query(
            "SELECT id FROM updates WHERE sequence > ? AND published_at >= ? ORDER BY sequence DESC LIMIT 1",
            [.integer(self.forgotten), .float(self.cutoff)]
        )
        return rows.first?.column("id")?.string
    }

    /// The updates kept are counted from the first one's sequence to the last: the store numbers
    /// them with no gap and deletes the oldest first, and a count of the rows would read them all.
    public func size() async throws -> EventStoreSize {
        let last = Int(clamping: self.last)
        let first = try await self.reader.query(
            "SELECT sequence FROM updates WHERE sequence > ? AND sequence <= ? AND published_at >= ? ORDER BY sequence LIMIT 1",
            [.integer(self.forgotten), .integer(last), .float(self.cutoff)]
        )
        var bytes = 0
        for file in [self.path, self.path + "-wal"] {
            bytes += ((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? Int) ?? 0
        }
        return EventStoreSize(updates: first.first?.column("sequence")?.integer.map { last - $0 + 1 } ?? 0, bytes: bytes)
    }

    public func append(_ updates: [Update]) async throws -> [StoredUpdate] {
        try await self.append(updates) { _ in }
    }

    public func append(_ updates: [Update], written: @escaping @Sendable ([StoredUpdate]) -> Void) async throws -> [StoredUpdate] {
        if let syncFailure { throw syncFailure }
        return try await self.appendInNextCommit(updates, written: written)
    }

    func answerOnceDurable(_ written: [WrittenAppend]) {
        self.unsynced += written
        if !self.syncing {
            self.syncing = true
            Task { await self.syncWritten() }
        }
    }

    /// Syncs the log and answers the appends written before the sync began, until none waits: one
    /// sync covers every commit written while the one before ran.
    private func syncWritten() async {
        while !self.unsynced.isEmpty {
            let synced = self.unsynced
            self.unsynced = []
            do {
                if let syncFailure { throw syncFailure }
                let log = self.log
                let sync: @Sendable () async throws -> Void = { try await NIOThreadPool.singleton.runIfActive { try log.sync() } }
                if let interposedSync { try await interposedSync(sync) } else { try await sync() }
                for append in synced { append.continuation.resume(returning: append.stored) }
            } catch {
                let failure = self.syncFailure ?? EventStoreError(description: "the history could not be synced to disk (\(error))")
                self.syncFailure = failure
                for append in synced { append.continuation.resume(throwing: failure) }
            }
        }
        self.syncing = false
    }

    /// Runs `interpose` in place of each sync of the log, given the sync: for tests.
    func interposeSync(_ interpose: @escaping @Sendable (_ sync: @Sendable () async throws -> Void) async throws -> Void) {
        self.interposedSync = interpose
    }

    func commit(_ appends: [[Update]]) async throws -> (stored: [[StoredUpdate]], refused: Set<Int>) {
        // Refused for an ID that comes twice in the batch; for one the history holds, below.
        var refused = refusedAppends(appends, known: [])
        var updates = appends.indices.filter { !refused.contains($0) }.flatMap { appends[$0] }
        var rows: [StoredUpdate]?
        if !updates.isEmpty, updates.count <= Self.rowsPerStatement {
            // Most batches: one statement, a transaction of its own. A known ID fails it whole.
            do {
                rows = try await self.insert(updates[...], after: self.last)
            } catch let error as SQLiteError where [.constraint, .constraintUniqueFailed].contains(error.reason) {}
        }
        if rows == nil {
            // All of an append or nothing of it: one look-up for the whole batch, then one
            // transaction for the appends whose IDs are all new.
            let known = Set(try await self.existingIDs(updates.map(\.id)))
            refused = refusedAppends(appends, known: known)
            updates = appends.indices.filter { !refused.contains($0) }.flatMap { appends[$0] }
            rows = try await self.insertInTransaction(updates)
        }
        let inserted = rows ?? []
        self.last = inserted.last?.sequence ?? self.last
        var stored = Array(repeating: [StoredUpdate](), count: appends.count)
        var offset = 0
        for index in appends.indices where !refused.contains(index) {
            stored[index] = Array(inserted[offset..<offset + appends[index].count])
            offset += appends[index].count
        }
        await self.pruneIfDue()
        return (stored, refused)
    }

    /// Rows per statement: SQLite allows 32 766 bound values, and a batch can be larger.
    private static let rowsPerStatement = 500

    private func existingIDs(_ ids: [String]) async throws -> [String] {
        var known: [String] = []
        for start in stride(from: 0, to: ids.count, by: Self.rowsPerStatement) {
            let chunk = ids[start..<min(ids.count, start + Self.rowsPerStatement)]
            let placeholders = Array(repeating: "?", count: chunk.count).joined(separator: ",")
            let rows = try await self.writer.query("SELECT id FROM updates WHERE id IN (\(placeholders))", chunk.map { .text($0) })
            known += rows.compactMap { $0.column("id")?.string }
        }
        return known
    }

    /// Inserts `updates` in one transaction, as many statements as they need.
    private func insertInTransaction(_ updates: [Update]) async throws -> [StoredUpdate] {
        guard !updates.isEmpty else { return [] }
        _ = try await self.writer.query("BEGIN IMMEDIATE")
        do {
            var rows: [StoredUpdate] = []
            for start in stride(from: 0, to: updates.count, by: Self.rowsPerStatement) {
                let chunk = updates[start..<min(updates.count, start + Self.rowsPerStatement)]
                rows += try await self.insert(chunk, after: self.last + UInt64(start))
            }
            _ = try await self.writer.query("COMMIT")
            return rows
        } catch {
            _ = try? await self.writer.query("ROLLBACK")
            throw error
        }
    }

    /// Inserts at most ``rowsPerStatement`` updates with one statement, in their order, with the
    /// sequences that follow `last`: the store is the history's only writer, so it numbers the
    /// updates itself, and no gap can open. Returns the rows inserted.
    private func insert(_ updates: ArraySlice<Update>, after last: UInt64) async throws -> [StoredUpdate] {
        let now = self.now().timeIntervalSince1970
        var values: [SQLiteData] = []
        values.reserveCapacity(updates.count * 8)
        var stored: [StoredUpdate] = []
        stored.reserveCapacity(updates.count)
        for update in updates {
            let sequence = last + UInt64(stored.count) + 1
            stored.append(StoredUpdate(sequence: sequence, update: update))
            values += [
                .integer(Int(sequence)), .text(update.id), .text(jsonArray(update.topics)), .text(update.data),
                .integer(update.isPrivate ? 1 : 0), update.type.map { .text($0) } ?? .null,
                update.retry.map { .integer(Int(($0 / .milliseconds(1)).rounded(.down))) } ?? .null, .float(now),
            ]
        }
        let rows = Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?)", count: updates.count).joined(separator: ", ")
        _ = try await self.writer.query(
            "INSERT INTO updates (sequence, id, topics, data, private, type, retry, published_at) VALUES \(rows)",
            values
        )
        return stored
    }

    public func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
        let rows = try await self.reader.query(
            "SELECT sequence FROM updates WHERE id = ? AND sequence > ? AND published_at >= ?",
            [.text(lastEventID), .integer(self.forgotten), .float(self.cutoff)]
        )
        guard let sequence = rows.first?.column("sequence")?.integer else { return nil }
        return try await self.range(after: UInt64(sequence), through: last)
    }

    public func updates(through last: UInt64) async throws -> [StoredUpdate] {
        try await self.range(after: 0, through: last)
    }

    private func range(after sequence: UInt64, through last: UInt64) async throws -> [StoredUpdate] {
        let sequence = max(sequence, UInt64(self.forgotten))
        guard last > sequence else { return [] }
        let rows = try await self.reader.query(
            """
            SELECT sequence, id, topics, data, private, type, retry FROM updates
            WHERE sequence > ? AND sequence <= ? AND published_at >= ? ORDER BY sequence
            """,
            [.integer(Int(sequence)), .integer(Int(clamping: last)), .float(self.cutoff)]
        )
        return try rows.map { row in
            guard let sequence = row.column("sequence")?.integer, let id = row.column("id")?.string,
                let topicsJSON = row.column("topics")?.string, let data = row.column("data")?.string
            else { throw EventStoreError(description: "a row of the SQLite history is incomplete") }
            let topics = try JSONDecoder().decode([String].self, from: Data(topicsJSON.utf8))
            return StoredUpdate(
                sequence: UInt64(sequence),
                update: Update(
                    id: id,
                    topics: topics,
                    data: data,
                    isPrivate: row.column("private")?.integer == 1,
                    type: row.column("type")?.string,
                    retry: row.column("retry")?.integer.map { .milliseconds($0) }
                )
            )
        }
    }
}

/// The store's write-ahead log (`<file>-wal`), opened again to sync it after SQLite commits to it.
/// The log stays the same file while the store's connections are open.
///
/// The store locks it (`flock`, which SQLite's own locks do not touch), so that a second hub on the
/// same file fails to open rather than numbering updates the first one numbers too: the store is
/// its history's only writer.
private final class WriteAheadLog: Sendable {
    private let descriptor: CInt

    /// Opens and locks the log of the SQLite file at `database`, which SQLite created, and syncs
    /// its directory, so that the log itself survives a crash of the machine.
    init(database: String) throws {
        let path = database + "-wal"
        let directory = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY | O_CLOEXEC)
        guard directory >= 0 else {
            throw EventStoreError(description: "cannot open the directory of \(path) (errno \(errno))")
        }
        let synced = fsync(directory) == 0 ? 0 : errno
        close(directory)
        guard synced == 0 else {
            throw EventStoreError(description: "cannot sync the directory of \(path) (errno \(synced))")
        }
        self.descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard self.descriptor >= 0 else {
            throw EventStoreError(description: "cannot open the SQLite write-ahead log \(path) (errno \(errno))")
        }
        guard flock(self.descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let description = errno == EWOULDBLOCK
                ? "another hub has \(database) open: an SQLite history serves one hub (several share a PostgreSQL one)"
                : "cannot lock the SQLite write-ahead log \(path) (errno \(errno))"
            close(self.descriptor)
            throw EventStoreError(description: description)
        }
    }

    /// Writes what SQLite has written to the log through to the disk. Blocks.
    func sync() throws {
        #if canImport(Darwin)
        let result = fsync(self.descriptor)
        #else
        let result = fdatasync(self.descriptor)
        #endif
        guard result == 0 else { throw EventStoreError(description: "cannot sync the SQLite write-ahead log (errno \(errno))") }
    }

    /// Lets another store open the file.
    func unlock() {
        flock(self.descriptor, LOCK_UN)
    }

    deinit {
        close(self.descriptor)
    }
}
