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
// SQLite's C interface as sqlite-nio builds it (its functions named `sqlite_nio_sqlite3_…`), for
// the store's writer (see `HistoryWriter`). It is a target of sqlite-nio, not a product: SQLiteNIO
// brings it into the build.
import VaporCSQLite

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
/// The updates of the hub's own publishes whose IDs it made (most of them: a publisher that gives
/// no ID) are numbered as they come and handed on at once, on the publishing thread: their
/// delivery waits for no write, and reads of the history wait for them to be written. A crash of
/// the process in between can lose such an update too; again its publisher was not answered.
/// While the log syncs, they wait to be written once the sync is done, with those that come
/// meanwhile, in one transaction.
///
/// The store writes from a thread of its own, with a connection and statements compiled once, and
/// syncs from a second one: an append wakes the writer and, once durable, its caller, and crosses
/// no other thread.
///
/// Resuming looks an ID up through its unique index and reads a range of the primary key: no
/// scan. Reads use a second connection, which WAL lets run beside the writer.
public final class SQLiteEventStore: EventStore {
    /// What is kept; older updates are deleted.
    public let retention: Retention
    /// The file.
    public let path: String
    private let writer: HistoryWriter
    private let reader: SQLiteConnection
    /// The pages in the log past which the store checkpoints it into the file: SQLite's own default.
    static let checkpointFrames: CInt = 1_000

    /// Opens (or creates) the history in the file at `path`, keeping what `retention` says.
    ///
    /// - Throws: ``EventStoreError``, saying why the file cannot serve as the history and naming it.
    public static func open(path: String, retention: Retention = Retention()) async throws -> SQLiteEventStore {
        try await self.open(path: path, retention: retention, now: Date.init)
    }

    /// Opens a history whose notion of the current time is `now`: tests pass their own.
    static func open(path: String, retention: Retention, now: @escaping @Sendable () -> Date) async throws -> SQLiteEventStore {
        let writer = try await NIOThreadPool.singleton.runIfActive {
            try HistoryWriter(path: path, retention: retention, now: now)
        }
        do {
            let reader = try await SQLiteConnection.open(storage: .file(path: path))
            return SQLiteEventStore(path: path, writer: writer, reader: reader, retention: retention)
        } catch {
            await writer.close()
            throw EventStoreError(description: "cannot open the SQLite history \(path): \(error)")
        }
    }

    private init(path: String, writer: HistoryWriter, reader: SQLiteConnection, retention: Retention) {
        self.path = path
        self.writer = writer
        self.reader = reader
        self.retention = retention
    }

    deinit {
        self.writer.stop()  // its threads end once what was appended is written and synced
    }

    private var cutoff: Double {
        self.writer.cutoff
    }

    private var forgotten: Int {
        self.writer.forgotten(last: self.writer.last)
    }

    /// Closes the history, once what was appended before is written and synced.
    public func close() async throws {
        await self.writer.close()
        try await self.reader.close()
    }

    public func lastSequence() async throws -> UInt64 {
        self.writer.last
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
        let last = Int(clamping: self.writer.last)
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
        try await withCheckedThrowingContinuation { continuation in
            self.append(updates, idsAreNew: false, written: written) { continuation.resume(with: $0) }
        }
    }

    func append(
        _ updates: [Update],
        idsAreNew: Bool,
        written: @escaping @Sendable ([StoredUpdate]) -> Void,
        then answer: @escaping AppendAnswer
    ) {
        self.writer.append(updates, idsAreNew: idsAreNew, written: written, then: answer)
    }

    /// Runs `interpose` in place of each sync of the log, given the sync, on the thread that syncs:
    /// for tests.
    func interposeSync(_ interpose: @escaping @Sendable (_ sync: () throws -> Void) throws -> Void) {
        self.writer.interposeSync(interpose)
    }

    public func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
        try await self.writer.waitUntilWritten(through: last)
        let rows = try await self.reader.query(
            "SELECT sequence FROM updates WHERE id = ? AND sequence > ? AND published_at >= ?",
            [.text(lastEventID), .integer(self.forgotten), .float(self.cutoff)]
        )
        guard let sequence = rows.first?.column("sequence")?.integer else { return nil }
        return try await self.range(after: UInt64(sequence), through: last)
    }

    public func updates(through last: UInt64) async throws -> [StoredUpdate] {
        try await self.writer.waitUntilWritten(through: last)
        return try await self.range(after: 0, through: last)
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

/// The history's writer: a thread with a connection of its own and its statements compiled once,
/// which writes each batch of appends in one transaction and hands on those not handed on when
/// they came (see `append`), and a second thread, which syncs the log and answers the appends.
/// Appends that arrive while a batch is written make the next batch (group commit), and batches
/// written while the log syncs share the next sync.
///
/// While the log syncs, the writer leaves the appends that were handed on when they came for the
/// next sync, and writes them in one transaction once this sync is done: written sooner, they
/// would wait for that sync all the same, and each commit costs a wake-up of the writer and the
/// pages it writes. Appends whose delivery waits for their write, reads that wait for the history,
/// and ``maximumBatchHeld`` appends are written at once. At 8 000 publishes/s on 1 000 topics, the
/// writer took 0.22 of a core when it wrote each append as it came, and 0.15 this way (see
/// docs/PERFORMANCE.md).
///
/// The writer also checkpoints the log into the database file once it holds
/// `SQLiteEventStore.checkpointFrames` pages, right after the commit that filled it, whose appends
/// are then the syncer's. With the writer idle meanwhile, the copy catches up with the log, which
/// starts over at the next commit: it stays near that size, and the log and the file are synced
/// for it once per that many pages. (Checkpointing beside the writer, from the syncer, the copy
/// rarely caught up: the log grew to about 20 MB at 8 000 publishes/s, and the syncer checkpointed
/// after nearly every sync, with two more syncs each time.)
///
/// `@unchecked Sendable`: each connection and its statements are used by one thread only (and by
/// `init`, before the threads start); `writes` guards what appends and the writer share, `syncs`
/// what the writer and the syncer share.
private final class HistoryWriter: @unchecked Sendable {
    private let database: OpaquePointer
    private let begin: OpaquePointer
    private let commit: OpaquePointer
    private let rollback: OpaquePointer
    private let insert: OpaquePointer
    private let find: OpaquePointer
    private let prune: OpaquePointer
    private let log: WriteAheadLog
    private let retention: Retention
    private let now: @Sendable () -> Date
    /// The last sequence when what the retention drops was last deleted (see `pruneIfDue`).
    /// The writer's thread only.
    private var prunedAt: UInt64 = 0
    /// The pages in the log, as its last commit left it (SQLite's WAL hook tells). The writer's
    /// thread only.
    private var framesInLog: CInt = 0

    private let writes = NSCondition()
    private var pending: [QueuedAppend] = []
    private var lastWritten: UInt64
    /// The last sequence given out: past `lastWritten` when appends numbered as they came (see
    /// `append`) wait to be written.
    private var lastNumbered: UInt64
    /// The appends taken and not yet written that were not numbered as they came.
    private var unnumbered = 0
    /// Whether a batch the writer wrote waits for its sync, or is syncing. The writer sets it
    /// before it passes the batch on, the syncer clears it once none is left.
    private var syncing = false
    /// The appends the writer leaves for the next sync at most (see the type's comment).
    static let maximumBatchHeld = 256
    /// Reads waiting for the updates through a sequence to be written.
    private var readers: [(through: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    private var stopping = false
    /// Why a sync, or the write of updates already handed on, failed: the store takes no more
    /// appends after, since what the disk holds is then unknown.
    private var failure: EventStoreError?

    private let syncs = NSCondition()
    private var unsynced: [WrittenAppend] = []
    private var writerEnded = false
    private var syncerEnded = false
    private var waitingForTheEnd: [CheckedContinuation<Void, Never>] = []
    private var interposedSync: (@Sendable (_ sync: () throws -> Void) throws -> Void)?

    /// Opens the file at `path` (creating the table if it is new), compiles the statements, locks
    /// the log, and starts both threads. Blocks.
    init(path: String, retention: Retention, now: @escaping @Sendable () -> Date) throws {
        let database = try Self.open(path)
        var statements: [OpaquePointer] = []
        do {
            // Some file systems (network ones) cannot hold a write-ahead log.
            let mode = try Self.text(of: "PRAGMA journal_mode=WAL", in: database)
            guard mode == "wal" else {
                throw EventStoreError(description: "SQLite cannot keep a write-ahead log for \(path) (journal mode \(mode ?? "unknown"))")
            }
            try Self.execute(
                // A commit writes the log; the syncer syncs it after, and the writer checkpoints it.
                "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;"
                    // The store numbers the updates itself (see `insertRows`). Files made before have
                    // AUTOINCREMENT, which works the same and costs a page more per commit.
                    + """
                    CREATE TABLE IF NOT EXISTS updates (
                        sequence INTEGER PRIMARY KEY,
                        id TEXT NOT NULL UNIQUE,
                        topics TEXT NOT NULL,
                        data TEXT NOT NULL,
                        private INTEGER NOT NULL,
                        type TEXT,
                        retry INTEGER,
                        published_at REAL NOT NULL
                    );
                    """
                    // Files made before have an index of the publication times, which every insert
                    // wrote to; retention by age needs none (see `pruneIfDue`).
                    + "DROP INDEX IF EXISTS updates_published_at;",
                in: database
            )
            self.lastWritten = UInt64(try Self.text(of: "SELECT COALESCE(MAX(sequence), 0) FROM updates", in: database).flatMap { Int($0) } ?? 0)
            self.lastNumbered = self.lastWritten
            for sql in [
                "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK",
                "INSERT INTO updates (sequence, id, topics, data, private, type, retry, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                "SELECT 1 FROM updates WHERE id = ?",
                """
                DELETE FROM updates WHERE sequence <= max(?1, coalesce(
                    (SELECT sequence FROM updates WHERE published_at >= ?2 ORDER BY sequence LIMIT 1) - 1, ?3
                ))
                """,
            ] {
                statements.append(try Self.prepare(sql, in: database))
            }
            self.log = try WriteAheadLog(database: path)
        } catch {
            for statement in statements { sqlite_nio_sqlite3_finalize(statement) }
            sqlite_nio_sqlite3_close_v2(database)
            throw error as? EventStoreError ?? EventStoreError(description: "cannot open the SQLite history \(path): \(error)")
        }
        self.database = database
        (self.begin, self.commit, self.rollback) = (statements[0], statements[1], statements[2])
        (self.insert, self.find, self.prune) = (statements[3], statements[4], statements[5])
        self.retention = retention
        self.now = now
        Thread {
            Self.yieldToTheEventLoops()
            Thread.current.name = "herald-sqlite"
            self.runWriter()
        }.start()
        Thread {
            Self.yieldToTheEventLoops()
            Thread.current.name = "herald-sync"
            self.runSyncer()
        }.start()
    }

    /// Lowers the calling thread's priority to nice 5, on Linux (where a thread has its own): when
    /// the cores are all busy, the event loops, which deliver, then run before the history's
    /// writes and syncs, which only publishers wait for (see docs/PERFORMANCE.md). A thread may
    /// always lower its own priority; were it refused, the thread would run as it is.
    private static func yieldToTheEventLoops() {
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 5)
        #endif
    }

    /// The sequence of the last update written.
    var last: UInt64 {
        self.writes.withLock { self.lastWritten }
    }

    /// Updates published before this are past the age limit (the distant past when there is none).
    var cutoff: Double {
        self.retention.cutoff(now: self.now())?.timeIntervalSince1970 ?? -Double.greatestFiniteMagnitude
    }

    /// Updates at or below this sequence are past the count limit, `last` being the last written.
    func forgotten(last: UInt64) -> Int {
        max(0, Int(clamping: last) - self.retention.count)
    }

    /// Takes `updates` for the next batch. When their IDs are new (the hub made them), and no
    /// append taken before waits to be numbered by the writer, they are numbered now and handed on
    /// at once, on the caller's thread: their delivery waits for no write. Reads of the history
    /// wait for them to be written (see `waitUntilWritten`).
    func append(
        _ updates: [Update],
        idsAreNew: Bool,
        written: @escaping @Sendable ([StoredUpdate]) -> Void,
        then answer: @escaping AppendAnswer
    ) {
        let taken: Result<[StoredUpdate]?, EventStoreError> = self.writes.withLock {
            if let failure = self.failure { return .failure(failure) }
            if self.stopping { return .failure(EventStoreError(description: "the SQLite history is closed")) }
            var numbered: [StoredUpdate]?
            if idsAreNew && self.unnumbered == 0 {
                numbered = Self.number(updates, after: self.lastNumbered)
                self.lastNumbered += UInt64(updates.count)
            } else {
                self.unnumbered += 1
            }
            self.pending.append(QueuedAppend(append: PendingAppend(updates: updates, written: written, answer: answer), numbered: numbered))
            if !self.waitsForTheSync { self.writes.signal() }
            return .success(numbered)
        }
        switch taken {
        case .failure(let refusal): answer(.failure(refusal))
        case .success(let numbered?): written(numbered)
        case .success(nil): break
        }
    }

    /// `updates` numbered from the one after `last` on.
    private static func number(_ updates: [Update], after last: UInt64) -> [StoredUpdate] {
        updates.enumerated().map { StoredUpdate(sequence: last + UInt64($0.offset) + 1, update: $0.element) }
    }

    /// Returns once the updates through `sequence` (or through the last numbered, if less) are
    /// written, so that readers of the file see them; throws why they never will be.
    func waitUntilWritten(through sequence: UInt64) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let now: Result<Void, any Error>? = self.writes.withLock {
                let target = min(sequence, self.lastNumbered)
                if self.lastWritten >= target { return .success(()) }
                if let failure = self.failure { return .failure(failure) }
                self.readers.append((target, continuation))
                self.writes.signal()  // the writer no longer waits for the sync
                return nil
            }
            if let now { continuation.resume(with: now) }
        }
    }

    /// Resumes the reads whose updates are written, and, once the store has failed, the others
    /// with why (what they wait for will not be written).
    private func resumeReaders() {
        let done = self.writes.withLock {
            var done: [(CheckedContinuation<Void, any Error>, Result<Void, any Error>)] = []
            self.readers.removeAll { reader in
                if reader.through <= self.lastWritten {
                    done.append((reader.continuation, .success(())))
                } else if let failure = self.failure {
                    done.append((reader.continuation, .failure(failure)))
                } else {
                    return false
                }
                return true
            }
            return done
        }
        for (reader, result) in done { reader.resume(with: result) }
    }

    func interposeSync(_ interpose: @escaping @Sendable (_ sync: () throws -> Void) throws -> Void) {
        self.syncs.withLock { self.interposedSync = interpose }
    }

    /// Takes no more appends; the threads end once those taken are written and synced.
    func stop() {
        self.writes.withLock {
            self.stopping = true
            self.writes.signal()
        }
    }

    /// Stops, and returns once both threads have ended, their connections are closed and the log
    /// unlocked (another store may open the file then).
    func close() async {
        self.stop()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ended = self.syncs.withLock {
                if !self.syncerEnded { self.waitingForTheEnd.append(continuation) }
                return self.syncerEnded
            }
            if ended { continuation.resume() }
        }
    }

    // MARK: The writer's thread

    private func runWriter() {
        sqlite_nio_sqlite3_wal_hook(
            self.database,
            { writer, _, _, frames in
                Unmanaged<HistoryWriter>.fromOpaque(writer!).takeUnretainedValue().framesInLog = frames
                return SQLITE_OK
            },
            Unmanaged.passUnretained(self).toOpaque()
        )
        while true {
            let (batch, failure): ([QueuedAppend], EventStoreError?) = self.writes.withLock {
                while (self.pending.isEmpty || self.waitsForTheSync) && !self.stopping { self.writes.wait() }
                defer { self.pending = [] }
                return (self.pending, self.failure)
            }
            if batch.isEmpty { break }  // stopping, and nothing is left
            if let failure {
                for queued in batch { queued.append.answer(.failure(failure)) }
                self.resumeReaders()
            } else {
                self.write(batch)
            }
        }
        for statement in [self.begin, self.commit, self.rollback, self.insert, self.find, self.prune] {
            sqlite_nio_sqlite3_finalize(statement)
        }
        sqlite_nio_sqlite3_close_v2(self.database)
        self.syncs.withLock {
            self.writerEnded = true
            self.syncs.signal()
        }
    }

    /// Whether the writer leaves what is pending for the next sync (see the type's comment).
    /// Under `writes`.
    private var waitsForTheSync: Bool {
        self.syncing && self.unnumbered == 0 && self.readers.isEmpty && self.pending.count < Self.maximumBatchHeld
    }

    /// Writes a batch in one transaction, except the appends refused, hands on what it wrote that
    /// was not handed on when it came, in the order of the history, and passes the appends to the
    /// syncer.
    private func write(_ batch: [QueuedAppend]) {
        let appends = batch.map(\.append.updates)
        var refused = refusedAppends(appends, known: [])
        let stored: [[StoredUpdate]]
        let last: UInt64
        do {
            do {
                (stored, last) = try self.insertRows(batch, except: refused)
            } catch let failure as SQLiteFailure where failure.isUniqueConstraint {
                // An ID the history holds: all of an append or nothing of it, so look the IDs up
                // and write the appends whose IDs are all new.
                refused = refusedAppends(appends, known: try self.knownIDs(in: appends, except: refused))
                (stored, last) = try self.insertRows(batch, except: refused)
            }
        } catch {
            let failure = EventStoreError(description: "the SQLite history could not be written (\(error))")
            self.writes.withLock {
                self.unnumbered -= batch.count { $0.numbered == nil }
                // Subscribers have updates of this batch that the history lacks, and the numbers
                // after are given out: the store stops.
                if batch.contains(where: { $0.numbered != nil }) { self.failure = self.failure ?? failure }
            }
            for queued in batch { queued.append.answer(.failure(failure)) }
            self.resumeReaders()
            return
        }
        self.writes.withLock {
            self.lastWritten = last
            self.lastNumbered = max(self.lastNumbered, last)
            self.unnumbered -= batch.count { $0.numbered == nil }
            // Before the syncer has the batch (none if every append was refused): were it set
            // after, the syncer could be done with the batch first, and the writer wait for a sync
            // that never comes.
            if refused.count < batch.count { self.syncing = true }
        }
        self.resumeReaders()
        var written: [WrittenAppend] = []
        written.reserveCapacity(batch.count)
        for (index, queued) in batch.enumerated() {
            if refused.contains(index) {
                queued.append.answer(.failure(EventStoreError.duplicateID))
            } else {
                if queued.numbered == nil { queued.append.written(stored[index]) }  // in the order of the history
                written.append((queued.append.answer, stored[index]))
            }
        }
        self.syncs.withLock {
            self.unsynced += written
            self.syncs.signal()
        }
        if self.framesInLog >= SQLiteEventStore.checkpointFrames {
            // Passive: a reader that still needs pages of the log keeps them there, and a failure
            // leaves them to the next commit's checkpoint.
            sqlite_nio_sqlite3_wal_checkpoint_v2(self.database, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
        }
        self.pruneIfDue()
    }

    /// Inserts the updates of `batch` but those of the appends `refused`, in one transaction:
    /// with the numbers they were given as they came, or else numbered after the last. The store
    /// is the history's only writer, so no gap opens (but for a refused append numbered as it
    /// came, whose IDs the hub made: no one can guess them). Returns each append's stored updates
    /// (none for a refused one), and the last sequence given out.
    private func insertRows(_ batch: [QueuedAppend], except refused: Set<Int>) throws -> (stored: [[StoredUpdate]], last: UInt64) {
        var last = self.lastWritten
        let stored = batch.enumerated().map { index, queued -> [StoredUpdate] in
            if let numbered = queued.numbered {
                last = numbered.last?.sequence ?? last
                return refused.contains(index) ? [] : numbered
            }
            guard !refused.contains(index) else { return [] }
            defer { last += UInt64(queued.append.updates.count) }
            return Self.number(queued.append.updates, after: last)
        }
        guard stored.contains(where: { !$0.isEmpty }) else { return (stored, last) }
        let now = self.now().timeIntervalSince1970
        try self.run(self.begin)
        do {
            for row in stored.joined() {
                let update = row.update
                let statement = self.insert
                defer { sqlite_nio_sqlite3_reset(statement) }
                sqlite_nio_sqlite3_bind_int64(statement, 1, Int64(row.sequence))
                Self.bind(update.id, at: 2, to: statement)
                Self.bind(jsonArray(update.topics), at: 3, to: statement)
                Self.bind(update.data, at: 4, to: statement)
                sqlite_nio_sqlite3_bind_int64(statement, 5, update.isPrivate ? 1 : 0)
                if let type = update.type { Self.bind(type, at: 6, to: statement) } else { sqlite_nio_sqlite3_bind_null(statement, 6) }
                if let retry = update.retryMilliseconds {
                    sqlite_nio_sqlite3_bind_int64(statement, 7, retry)
                } else {
                    sqlite_nio_sqlite3_bind_null(statement, 7)
                }
                sqlite_nio_sqlite3_bind_double(statement, 8, now)
                try self.check(sqlite_nio_sqlite3_step(statement), expecting: SQLITE_DONE)
            }
            try self.run(self.commit)
            return (stored, last)
        } catch {
            try? self.run(self.rollback)
            throw error
        }
    }

    /// The IDs of `appends` (but those `refused`) that the history holds.
    private func knownIDs(in appends: [[Update]], except refused: Set<Int>) throws -> Set<String> {
        var known = Set<String>()
        for index in appends.indices where !refused.contains(index) {
            for update in appends[index] {
                defer { sqlite_nio_sqlite3_reset(self.find) }
                Self.bind(update.id, at: 1, to: self.find)
                let step = sqlite_nio_sqlite3_step(self.find)
                if step == SQLITE_ROW { known.insert(update.id) } else { try self.check(step, expecting: SQLITE_DONE) }
            }
        }
        return known
    }

    /// Deletes what the retention drops once a tenth of the count (at most 1 000 updates) has been
    /// written since the last time. Reads leave out what is dropped and not deleted yet, so what
    /// the history holds stays exact; a statement per commit, or a trigger compiled into each insert,
    /// cost more. A failure leaves the rows to the next time (the commit is done by then).
    ///
    /// What is too old is deleted up to the first update that is not, found from the oldest on: no
    /// index of the publication times, which every insert would write to, and no scan beyond what
    /// is deleted. An update older than one before it (the clock went back) is left to the count.
    private func pruneIfDue() {
        let last = self.lastWritten
        guard last >= self.prunedAt + UInt64(max(1, min(self.retention.count / 10, 1_000))) else { return }
        defer { sqlite_nio_sqlite3_reset(self.prune) }
        sqlite_nio_sqlite3_bind_int64(self.prune, 1, Int64(self.forgotten(last: last)))
        sqlite_nio_sqlite3_bind_double(self.prune, 2, self.cutoff)
        sqlite_nio_sqlite3_bind_int64(self.prune, 3, Int64(clamping: last))
        if sqlite_nio_sqlite3_step(self.prune) == SQLITE_DONE { self.prunedAt = last }
    }

    // MARK: The syncer's thread

    /// Syncs the log and answers the appends written before the sync began, until the writer has
    /// ended and none waits: one sync covers every commit written while the one before ran.
    private func runSyncer() {
        while true {
            let (synced, interpose) = self.syncs.withLock {
                while self.unsynced.isEmpty && !self.writerEnded { self.syncs.wait() }
                defer { self.unsynced = [] }
                return (self.unsynced, self.interposedSync)
            }
            if synced.isEmpty { break }  // the writer has ended
            var failure: EventStoreError?
            do {
                if let failure = self.writes.withLock({ self.failure }) { throw failure }
                if let interpose { try interpose(self.log.sync) } else { try self.log.sync() }
            } catch {
                failure = self.writes.withLock {
                    let failure = self.failure ?? EventStoreError(description: "the history could not be synced to disk (\(error))")
                    self.failure = failure
                    return failure
                }
            }
            // Before the answers: a publisher that publishes again once answered finds the writer
            // free.
            if self.syncs.withLock({ self.unsynced.isEmpty }) {
                self.writes.withLock {
                    self.syncing = false
                    self.writes.signal()
                }
            }
            for append in synced { append.answer(failure.map { .failure($0) } ?? .success(append.stored)) }
        }
        self.log.unlock()
        let waiting = self.syncs.withLock {
            self.syncerEnded = true
            defer { self.waitingForTheEnd = [] }
            return self.waitingForTheEnd
        }
        for continuation in waiting { continuation.resume() }
    }

    // MARK: SQLite's C interface

    /// A connection to the file at `path`, for one thread at a time, with extended error codes.
    private static func open(_ path: String) throws -> OpaquePointer {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let opened = sqlite_nio_sqlite3_open_v2(path, &handle, flags, nil)
        guard opened == SQLITE_OK, let handle else {
            let reason = handle.map { String(cString: sqlite_nio_sqlite3_errmsg($0)) } ?? "code \(opened)"
            sqlite_nio_sqlite3_close_v2(handle)
            throw EventStoreError(description: "cannot open the SQLite history \(path): \(reason)")
        }
        return handle
    }

    /// Runs a statement that returns no row.
    private func run(_ statement: OpaquePointer) throws {
        defer { sqlite_nio_sqlite3_reset(statement) }
        try self.check(sqlite_nio_sqlite3_step(statement), expecting: SQLITE_DONE)
    }

    /// Throws what SQLite says went wrong unless `code` is `expected`.
    private func check(_ code: CInt, expecting expected: CInt) throws {
        guard code != expected else { return }
        throw SQLiteFailure(code: code, message: String(cString: sqlite_nio_sqlite3_errmsg(self.database)))
    }

    /// Binds a copy of `text` to parameter `index`.
    private static func bind(_ text: String, at index: CInt, to statement: OpaquePointer) {
        var text = text
        text.withUTF8 { bytes in
            _ = bytes.withMemoryRebound(to: CChar.self) {
                sqlite_nio_sqlite3_bind_text64(statement, index, $0.baseAddress, UInt64($0.count), transient, UInt8(SQLITE_UTF8))
            }
        }
    }

    private static func prepare(_ sql: String, in database: OpaquePointer) throws -> OpaquePointer {
        var statement: OpaquePointer?
        let code = sqlite_nio_sqlite3_prepare_v2(database, sql, -1, &statement, nil)
        guard code == SQLITE_OK, let statement else {
            throw SQLiteFailure(code: code, message: String(cString: sqlite_nio_sqlite3_errmsg(database)))
        }
        return statement
    }

    /// Runs `sql`, one statement or several, and ignores what they return.
    private static func execute(_ sql: String, in database: OpaquePointer) throws {
        let code = sqlite_nio_sqlite3_exec(database, sql, nil, nil, nil)
        guard code == SQLITE_OK else { throw SQLiteFailure(code: code, message: String(cString: sqlite_nio_sqlite3_errmsg(database))) }
    }

    /// The first column of the first row of `sql`, as text.
    private static func text(of sql: String, in database: OpaquePointer) throws -> String? {
        let statement = try self.prepare(sql, in: database)
        defer { sqlite_nio_sqlite3_finalize(statement) }
        let code = sqlite_nio_sqlite3_step(statement)
        guard code == SQLITE_ROW || code == SQLITE_DONE else {
            throw SQLiteFailure(code: code, message: String(cString: sqlite_nio_sqlite3_errmsg(database)))
        }
        guard code == SQLITE_ROW, let text = sqlite_nio_sqlite3_column_text(statement, 0) else { return nil }
        return String(cString: text)
    }
}

/// An append taken by the writer, and its stored updates when it was numbered as it came (and
/// handed on then).
private struct QueuedAppend {
    let append: PendingAppend
    let numbered: [StoredUpdate]?
}

/// An append the writer wrote, waiting for the sync: what to call with its outcome, and its stored
/// updates.
private typealias WrittenAppend = (answer: AppendAnswer, stored: [StoredUpdate])

/// SQLite's "copy the bound value" destructor (`SQLITE_TRANSIENT`, a macro Swift cannot import).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// What SQLite said went wrong.
private struct SQLiteFailure: Error, CustomStringConvertible {
    let code: CInt
    let message: String

    /// An ID the history holds already: `SQLITE_CONSTRAINT_UNIQUE` or `SQLITE_CONSTRAINT_PRIMARYKEY`,
    /// extended codes (the writer's connection has them) that are macros Swift cannot import.
    var isUniqueConstraint: Bool { self.code == SQLITE_CONSTRAINT | (8 << 8) || self.code == SQLITE_CONSTRAINT | (6 << 8) }

    var description: String { "\(self.message) (SQLite code \(self.code))" }
}
