//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import NIOConcurrencyHelpers
import HeraldTestSupport
import Logging
import PostgresNIO
import SQLiteNIO
import Testing

@testable import SSEHub

@Suite("Publish requests")
struct UpdateTests {
    func parse(_ body: String) throws(PublishError) -> Update {
        try Update(form: Array(body.utf8), makeID: { "urn:uuid:made" })
    }

    @Test func everyField() throws {
        let update = try self.parse("topic=https%3A%2F%2Fexample.com%2F1&topic=%2Falt&data=a+b%0Ac&private=on&id=urn%3A1&type=book&retry=2500&other=x")
        #expect(update.topics == ["https://example.com/1", "/alt"])
        #expect(update.data == "a b\nc")
        #expect(update.isPrivate)
        #expect(update.id == "urn:1")
        #expect(update.type == "book")
        #expect(update.retry == .milliseconds(2500))
        _ = try Update(form: Array("topic=t&id=given".utf8), makeID: { Issue.record("made an ID for an update that has one"); return "" })
    }

    @Test func madeIDsAreVersion7UUIDsInTimeOrder() async throws {
        let before = UInt64(Date().timeIntervalSince1970 * 1000)
        let first = Hub.makeID()
        try await Task.sleep(for: .milliseconds(5))
        let second = Hub.makeID()
        for id in [first, second] {
            #expect(id.hasPrefix("urn:uuid:"))
            let groups = id.dropFirst("urn:uuid:".count).split(separator: "-", omittingEmptySubsequences: false)
            #expect(groups.map(\.count) == [8, 4, 4, 4, 12], "\(id)")
            #expect(groups.allSatisfy { $0.allSatisfy { "0123456789abcdef".contains($0) } }, "\(id)")
            #expect(groups[2].first == "7", "version 7: \(id)")
            #expect("89ab".contains(groups[3].first!), "RFC 4122 variant: \(id)")
            let milliseconds = UInt64(groups[0] + groups[1], radix: 16)!
            #expect(milliseconds >= before && milliseconds < before + 60_000, "the time it was made: \(id)")
        }
        #expect(first < second, "later IDs sort after")
        #expect(Set((0..<1_000).map { _ in Hub.makeID() }).count == 1_000)
    }

    @Test func randomWordsAreNotHandedOutTwice() async {
        // 64 tasks take 64 pairs each: 256 refills of the pool, raced.
        let words = await withTaskGroup(of: [UInt64].self) { group in
            for _ in 0..<64 {
                group.addTask { (0..<64).flatMap { _ in let two = RandomWords.shared.two(); return [two.0, two.1] } }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(words.count == 8_192)
        #expect(Set(words).count == words.count)
    }

    @Test func defaults() throws {
        let update = try self.parse("topic=t")
        #expect(update == Update(id: "urn:uuid:made", topics: ["t"], data: ""))
        #expect(try self.parse("topic=t&private").isPrivate, "presence alone makes it private")
        #expect(try self.parse("topic=t&private=").isPrivate)
    }

    @Test(arguments: [
        ("", "missing 'topic'"),
        ("data=x", "missing 'topic'"),
        ("topic=", "'topic' must not be empty"),
        ("topic=t&id=%23frag", "must not start with '#'"),
        ("topic=t&id=a%0Ab", "'id' must not contain CR, LF or NUL"),
        ("topic=t&id=a%00b", "'id' must not contain CR, LF or NUL"),
        ("topic=t&type=a%0Db", "'type' must not contain CR or LF"),
        ("topic=t&retry=-1", "'retry' must be a whole number"),
        ("topic=t&retry=1.5", "'retry' must be a whole number"),
        ("topic=t&retry=", "'retry' must be a whole number"),
        ("topic=t&data=a&data=b", "'data' may be given once"),
        ("topic=t&data=%zz", "not valid form encoding"),
        ("topic=t&data=%4", "not valid form encoding"),
        ("topic=t&data=%FF", "not valid UTF-8"),
    ])
    func badRequestsSayWhatIsWrong(_ body: String, _ reason: String) {
        #expect {
            _ = try self.parse(body)
        } throws: { error in
            (error as? PublishError)?.description.contains(reason) == true
        }
    }

    @Test func aBodyThatIsNotUTF8IsRefusedEscapedOrNot() throws {
        let bodies: [[UInt8]] = [
            Array("topic=t&data=".utf8) + [0xC3], Array("topic=t&data=%C3".utf8), Array("topic=".utf8) + [0xFF],
        ]
        for body in bodies {
            #expect {
                _ = try Update(form: body, makeID: { "urn:uuid:made" })
            } throws: { error in
                (error as? PublishError)?.description.contains("not valid UTF-8") == true
            }
        }
        let escaped = try Update(form: Array("topic=t&type=a&data=caf%C3%A9+au+lait&private".utf8), makeID: { "made" })
        #expect(escaped.data == "café au lait")
        #expect(throws: PublishError.self) { try Update(form: Array("topic=t&type=a&type=b".utf8), makeID: { "made" }) }
    }

    @Test func madeIDsAreTimeOrderedUUIDs() {
        let first = Hub.makeID()
        let second = Hub.makeID()
        #expect(first.hasPrefix("urn:uuid:") && first.count == 45)
        #expect(first != second)
        let version = first[first.index(first.startIndex, offsetBy: 23)]
        #expect(version == "7")
    }
}

/// Makes a fresh store of each kind: the same tests must pass on both.
enum StoreKind: String, CaseIterable, Sendable {
    case memory, sqlite, postgres

    /// The kinds this machine can test (PostgreSQL needs its server's binaries).
    static let available: [StoreKind] = {
        if let reason = ThrowawayPostgres.skipReason {
            print(reason)
            return [.memory, .sqlite]
        }
        return allCases
    }()

    /// Runs `body` with a fresh store, and closes it afterwards (an SQLite connection must be).
    func with(
        capacity: Int = 100,
        age: Duration? = nil,
        now: @escaping @Sendable () -> Date = Date.init,
        _ body: (any EventStore) async throws -> Void
    ) async throws {
        let retention = try Retention(count: capacity, age: age)
        switch self {
        case .memory:
            try await body(InMemoryEventStore(retention: retention, now: now))
        case .sqlite:
            let path = temporarySQLitePath()
            defer { removeSQLiteFiles(path) }
            let store = try await SQLiteEventStore.open(path: path, retention: retention, now: now)
            do {
                try await body(store)
            } catch {
                try await store.close()
                throw error
            }
            try await store.close()
        case .postgres:
            try await ThrowawayPostgres.with { url in
                let store = try PostgresEventStore(url: url, retention: retention, logger: Logger(label: "test"), now: now)
                let pool = Task { await store.run() }
                defer { pool.cancel() }
                do {
                    try await store.migrate(timeout: .seconds(30))  // a fresh server on a busy machine can be slow
                    try await body(store)
                } catch let error as PSQLError {
                    throw EventStoreError(description: String(reflecting: error))  // the details, for the test's report
                }
            }
        }
    }
}

@Suite("Event stores")
struct EventStoreTests {
    func updates(_ ids: ClosedRange<Int>) -> [Update] {
        ids.map { Update(id: "e\($0)", topics: ["t", "alt \($0)"], data: "\($0)\nline", isPrivate: $0 % 2 == 0, type: $0 % 3 == 0 ? "x" : nil) }
    }

    @Test(arguments: StoreKind.available)
    func sequencesAndRanges(_ kind: StoreKind) async throws {
        try await kind.with { store in
            let stored = try await store.append(self.updates(1...5))
            #expect(stored.map(\.sequence) == [1, 2, 3, 4, 5])
            #expect(try await store.lastSequence() == 5)
            #expect(try await store.updates(after: "e2", through: 4)?.map(\.update.id) == ["e3", "e4"])
            #expect(try await store.updates(after: "e5", through: 5)?.isEmpty == true)
            #expect(try await store.updates(after: "nope", through: 5) == nil)
            #expect(try await store.updates(through: 3).map(\.update) == self.updates(1...3), "every field comes back")
            #expect(try await store.updates(through: .max).count == 5, "any bound, however high")
            #expect(try await store.updates(after: "e4", through: .max)?.map(\.update.id) == ["e5"])
        }
    }

    @Test(arguments: StoreKind.available)
    func retentionForgetsTheOldest(_ kind: StoreKind) async throws {
        try await kind.with(capacity: 3) { store in
            for n in 1...10 { _ = try await store.append(self.updates(n...n)) }
            #expect(try await store.updates(through: 10).map(\.update.id) == ["e8", "e9", "e10"])
            #expect(try await store.updates(after: "e7", through: 10) == nil, "a forgotten id is unknown")
            #expect(try await store.updates(after: "e8", through: 10)?.map(\.update.id) == ["e9", "e10"])
            #expect(try await store.lastEventID() == "e10")
            let size = try await store.size()
            #expect(size.updates == 3)
            #expect(size.bytes > 0)
        }
    }

    /// The longest reconnection time a publish can give (`retry=9223372036854775807`, as many
    /// milliseconds as a signed 64-bit integer holds) is kept and given back exactly.
    @Test(arguments: StoreKind.available)
    func theLongestRetryIsKept(_ kind: StoreKind) async throws {
        let update = try Update(form: Array("topic=t&id=long&retry=9223372036854775807".utf8), makeID: { "" })
        #expect(update.retry == .milliseconds(Int64.max))
        try await kind.with { store in
            _ = try await store.append([update])
            #expect(try await store.updates(through: .max).map(\.update) == [update])
        }
    }

    @Test func aRetentionThatKeepsNothingIsRefusedWithItsReason() throws {
        for (count, age, reason) in [
            (0, Duration?.none, "at least 1 update, not 0"),
            (-5, nil, "at least 1 update, not -5"),
            (10, .zero, "for a positive time (or nil for no limit), not 0.0 seconds"),
            (10, .seconds(-1), "for a positive time (or nil for no limit), not -1.0 seconds"),
        ] {
            #expect {
                try Retention(count: count, age: age)
            } throws: { error in
                "\(error)".contains(reason)
            }
        }
        let smallest = try Retention(count: 1, age: .nanoseconds(1))
        #expect(smallest.count == 1 && smallest.age == .nanoseconds(1))
        #expect(try Retention(count: 1, age: nil).age == nil)
        #expect(Retention() == (try Retention(count: 100_000)), "the default is 100 000 updates for 7 days")
    }

    @Test(arguments: StoreKind.available)
    func aBatchLargerThanTheRetentionKeepsItsNewest(_ kind: StoreKind) async throws {
        try await kind.with(capacity: 3) { store in
            _ = try await store.append(self.updates(1...2))
            #expect(try await store.append(self.updates(3...7)).map(\.sequence) == [3, 4, 5, 6, 7])
            #expect(try await store.updates(through: 7).map(\.update.id) == ["e5", "e6", "e7"])
            #expect(try await store.updates(through: 4).isEmpty, "a bound below the oldest kept")
            #expect(try await store.updates(after: "e5", through: 6)?.map(\.update.id) == ["e6"])
            #expect(try await store.size().updates == 3)
        }
    }

    @Test(arguments: StoreKind.available)
    func whatTheRetentionDropsIsGoneAtOnceThoughDeletedLater(_ kind: StoreKind) async throws {
        // 30 kept: the SQLite store deletes every 3 updates, and its reads leave out the rest.
        try await kind.with(capacity: 30) { store in
            for n in 1...31 {
                _ = try await store.append(self.updates(n...n))
                let kept = max(1, n - 29)...n
                #expect(try await store.updates(through: UInt64(n)).map(\.update.id) == kept.map { "e\($0)" }, "after e\(n)")
                #expect(try await store.size().updates == kept.count)
            }
            #expect(try await store.updates(after: "e1", through: 31) == nil, "a forgotten id is unknown")
            #expect(try await store.updates(after: "e2", through: 31)?.count == 29)
            #expect(try await store.lastEventID() == "e31")
            if let store = store as? SQLiteEventStore {
                for n in 32...100 { _ = try await store.append(self.updates(n...n)) }
                let file = try await SQLiteConnection.open(storage: .file(path: store.path))
                let rows = try await file.query("SELECT COUNT(*) AS n FROM updates").first?.column("n")?.integer
                try await file.close()
                #expect(rows.map { (30...33).contains($0) } == true, "deleted every 3 updates: \(rows ?? -1) rows")
            }
        }
    }

    @Test(arguments: StoreKind.available)
    func retentionForgetsWhatIsTooOld(_ kind: StoreKind) async throws {
        let clock = NIOLockedValueBox(Date(timeIntervalSince1970: 1_000_000))
        try await kind.with(age: .seconds(3600), now: { clock.withLockedValue { $0 } }) { store in
            _ = try await store.append(self.updates(1...2))
            clock.withLockedValue { $0 += 1800 }
            _ = try await store.append(self.updates(3...4))
            #expect(try await store.updates(through: 4).map(\.update.id) == ["e1", "e2", "e3", "e4"])
            clock.withLockedValue { $0 += 1801 }  // e1 and e2 are now older than an hour
            #expect(try await store.updates(through: 4).map(\.update.id) == ["e3", "e4"], "even with no publish since")
            #expect(try await store.size().updates == 2)
            #expect(try await store.updates(after: "e2", through: 4) == nil, "a forgotten id is unknown")
            _ = try await store.append(self.updates(5...5))
            #expect(try await store.updates(after: "e3", through: 5)?.map(\.update.id) == ["e4", "e5"])
            if let store = store as? SQLiteEventStore {
                // The SQLite store deletes every tenth of the count (10 updates here).
                _ = try await store.append(self.updates(6...10))
                let file = try await SQLiteConnection.open(storage: .file(path: store.path))
                let ids = try await file.query("SELECT id FROM updates ORDER BY sequence").compactMap { $0.column("id")?.string }
                try await file.close()
                #expect(ids == (3...10).map { "e\($0)" }, "what was too old is deleted, and only that")
            }
        }
    }

    @Test(arguments: StoreKind.available)
    func duplicateIDsAreRefused(_ kind: StoreKind) async throws {
        try await kind.with { store in
            _ = try await store.append(self.updates(1...2))
            await #expect(throws: EventStoreError.duplicateID) { try await store.append(self.updates(2...3)) }
            await #expect(throws: EventStoreError.duplicateID) {
                try await store.append([Update(id: "x", topics: ["t"], data: ""), Update(id: "x", topics: ["t"], data: "")])
            }
            #expect(try await store.lastSequence() == 2, "nothing of a refused batch is kept")
            await #expect(throws: EventStoreError.duplicateID) { try await store.append(self.updates(2...2)) }
            #expect(try await store.append(self.updates(3...3)).map(\.sequence) == [3], "a refusal leaves no gap")
            #expect(try await store.updates(after: "e2", through: .max)?.map(\.update.id) == ["e3"], "and the refused ID keeps its place")
        }
    }

    @Test(arguments: StoreKind.available)
    func concurrentPublishesWithKnownIDsLeaveNoGap(_ kind: StoreKind) async throws {
        try await kind.with(capacity: 10_000) { store in
            _ = try await store.append(self.updates(1...5))
            // Single updates, as the hub appends them, many in a commit: e1...e5 are known, and
            // "n7" comes twice.
            let ids = (1...5).map { "e\($0)" } + (1...40).map { "n\($0)" } + ["n7"]
            let results = await withTaskGroup(of: (String, UInt64?).self) { group in
                for id in ids {
                    group.addTask { (id, try? await store.append([Update(id: id, topics: ["t"], data: id)]).first?.sequence) }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { $0.0.hasPrefix("e") }.allSatisfy { $0.1 == nil }, "known IDs are refused")
            #expect(results.filter { $0.0 == "n7" }.compactMap(\.1).count == 1, "one of the two n7 is stored")
            #expect(results.compactMap(\.1).sorted() == Array(6...45), "the stored get consecutive sequences")
            let stored = try await store.updates(through: 45)
            #expect(stored.map(\.sequence) == Array(1...45))
            #expect(stored.allSatisfy { $0.update.data == $0.update.id || $0.update.id.hasPrefix("e") }, "each sequence has its own update")
        }
    }

    @Test(arguments: StoreKind.available)
    func topicsComeBackAsTheyWereStored(_ kind: StoreKind) async throws {
        let topics = [
            "https://example.com/books/1", "", "a \"quoted\" \\ backslash", "tab\tline\nfeed\u{0}nul\u{1F}",
            "é, 漢字, 🚀 and \u{2028}", "/",
        ]
        try await kind.with { store in
            _ = try await store.append([Update(id: "a", topics: topics, data: "x"), Update(id: "b", topics: ["t"], data: "y")])
            #expect(try await store.updates(through: 2).map(\.update.topics) == [topics, ["t"]])
        }
    }

    @Test(arguments: StoreKind.available)
    func concurrentAppendsGetConsecutiveSequences(_ kind: StoreKind) async throws {
        try await kind.with(capacity: 10_000) { store in
            let sequences = try await withThrowingTaskGroup(of: [UInt64].self) { group in
                for task in 0..<50 {
                    group.addTask {
                        try await store.append([Update(id: "c\(task)-a", topics: ["t"], data: ""), Update(id: "c\(task)-b", topics: ["t"], data: "")])
                            .map(\.sequence)
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(sequences.sorted() == Array(1...100))
        }
    }

    @Test(arguments: StoreKind.available)
    func appendsHandOnTheirUpdatesOnceBeforeAnswering(_ kind: StoreKind) async throws {
        try await kind.with(capacity: 10_000) { store in
            let handedOn = NIOLockedValueBox<[UInt64]>([])
            let appends = try await withThrowingTaskGroup(of: (written: [UInt64], answered: [UInt64]).self) { group in
                for task in 0..<20 {
                    group.addTask {
                        let written = NIOLockedValueBox<[UInt64]>([])
                        let stored = try await store.append([Update(id: "w\(task)", topics: ["t"], data: "")]) { stored in
                            written.withLockedValue { $0 += stored.map(\.sequence) }
                            handedOn.withLockedValue { $0 += stored.map(\.sequence) }
                        }
                        return (written.withLockedValue { $0 }, stored.map(\.sequence))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(appends.allSatisfy { $0.written == $0.answered }, "each append's updates are handed on once, before it returns")
            #expect(handedOn.withLockedValue { $0 }.sorted() == Array(1...20))
            await #expect(throws: EventStoreError.duplicateID) {
                try await store.append([Update(id: "w3", topics: ["t"], data: "")]) { _ in Issue.record("a refused update was handed on") }
            }
        }
    }

    /// Holds each sync of `store`'s log until the test sets `released` (5 s at most), counting
    /// those that started.
    func holdingSyncs(of store: SQLiteEventStore) -> NIOLockedValueBox<(started: Int, released: Bool)> {
        let syncs = NIOLockedValueBox((started: 0, released: false))
        store.interposeSync { sync in
            syncs.withLockedValue { $0.started += 1 }
            for _ in 0..<1_000 where !syncs.withLockedValue({ $0.released }) { usleep(5_000) }
            try sync()
        }
        return syncs
    }

    @Test func theSQLiteStoreHandsOnWhatItWroteAndAnswersOnceTheLogIsSynced() async throws {
        try await StoreKind.sqlite.with { store in
            let store = try #require(store as? SQLiteEventStore)
            let syncs = self.holdingSyncs(of: store)
            let written = NIOLockedValueBox<[String]>([])
            let answered = NIOLockedValueBox<[String]>([])
            let append = { @Sendable (n: Int) in
                Task {
                    let stored = try await store.append(self.updates(n...n)) { stored in written.withLockedValue { $0 += stored.map(\.update.id) } }
                    answered.withLockedValue { $0 += stored.map(\.update.id) }
                }
            }
            let first = append(1)
            for _ in 0..<1_000 where syncs.withLockedValue({ $0.started }) == 0 { try await Task.sleep(for: .milliseconds(5)) }
            #expect(written.withLockedValue { $0 } == ["e1"], "handed on before the sync")
            // The next commit is written while the first sync runs.
            let second = append(2)
            for _ in 0..<1_000 where written.withLockedValue({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(5)) }
            #expect(written.withLockedValue { $0 } == ["e1", "e2"])
            #expect(answered.withLockedValue { $0 }.isEmpty, "no answer before the sync")
            syncs.withLockedValue { $0.released = true }
            try await first.value
            try await second.value
            #expect(answered.withLockedValue { $0 }.sorted() == ["e1", "e2"])
            #expect(syncs.withLockedValue { $0.started } == 2, "the second commit waited for a sync of its own")
        }
    }

    @Test func aFailedSyncStopsTheSQLiteStore() async throws {
        try await StoreKind.sqlite.with { store in
            let store = try #require(store as? SQLiteEventStore)
            _ = try await store.append(self.updates(1...1))
            store.interposeSync { _ in throw EventStoreError(description: "disk gone") }
            let written = NIOLockedValueBox<[String]>([])
            let failure = await #expect(throws: EventStoreError.self) {
                try await store.append(self.updates(2...2)) { stored in written.withLockedValue { $0 += stored.map(\.update.id) } }
            }
            let reason = try #require(failure)
            #expect(reason.description.contains("disk gone"))
            #expect(written.withLockedValue { $0 } == ["e2"], "written, then not synced")
            await #expect(throws: reason) {
                try await store.append(self.updates(3...3)) { _ in Issue.record("a store whose sync failed wrote") }
            }
            #expect(try await store.lastSequence() == 2)
        }
    }

    @Test func theSQLiteStoreHandsOnUpdatesWithNewIDsAtOnceAndReadsWaitForTheirWrite() async throws {
        try await StoreKind.sqlite.with { store in
            let store = try #require(store as? SQLiteEventStore)
            let handedOn = NIOLockedValueBox<[StoredUpdate]>([])
            var answers: [Task<[StoredUpdate], any Error>] = []
            for n in 1...50 {
                let (answer, continuation) = AsyncThrowingStream<[StoredUpdate], any Error>.makeStream()
                store.append(self.updates(n...n), idsAreNew: true, written: { stored in handedOn.withLockedValue { $0 += stored } }) {
                    continuation.yield(with: $0)
                    continuation.finish()
                }
                // Handed on before the call returns: numbered as it came, not by the writer.
                #expect(handedOn.withLockedValue { $0.last?.update.id } == "e\(n)")
                answers.append(Task { try await answer.first { _ in true } ?? [] })
                // A read right after sees every update handed on: it waits for their write.
                if n == 25 {
                    #expect(try await store.updates(through: 25).map(\.update.id) == (1...25).map { "e\($0)" })
                } else if n > 1 {
                    #expect(try await store.updates(after: "e\(n - 1)", through: UInt64(n))?.map(\.update.id) == ["e\(n)"])
                }
            }
            #expect(handedOn.withLockedValue { $0.map(\.sequence) } == Array(1...50))
            for (n, answer) in answers.enumerated() {
                #expect(try await answer.value.map(\.sequence) == [UInt64(n + 1)])
            }
            #expect(try await store.lastSequence() == 50)
        }
    }

    @Test func whileTheLogSyncsTheSQLiteStoreLeavesAppendsHandedOnAsTheyCameForTheNextSyncUnlessAReadWaits() async throws {
        try await StoreKind.sqlite.with { store in
            let store = try #require(store as? SQLiteEventStore)
            let syncs = self.holdingSyncs(of: store)
            let answered = NIOLockedValueBox<[UInt64]>([])
            let append = { @Sendable (n: Int) in
                store.append(self.updates(n...n), idsAreNew: true, written: { _ in }) { result in
                    answered.withLockedValue { $0 += (try? result.get().map(\.sequence)) ?? [] }
                }
            }
            append(1)
            for _ in 0..<1_000 where syncs.withLockedValue({ $0.started }) == 0 { try await Task.sleep(for: .milliseconds(5)) }
            append(2)
            append(3)
            try await Task.sleep(for: .milliseconds(50))
            #expect(try await store.lastSequence() == 1, "left for the next sync")
            // A read waits for them: they are written while the sync still runs.
            #expect(try await store.updates(through: 3).map(\.update.id) == ["e1", "e2", "e3"])
            #expect(syncs.withLockedValue { $0.started } == 1)
            append(4)
            append(5)
            try await Task.sleep(for: .milliseconds(50))
            #expect(try await store.lastSequence() == 3)
            syncs.withLockedValue { $0.released = true }
            for _ in 0..<1_000 where answered.withLockedValue({ $0.count }) < 5 { try await Task.sleep(for: .milliseconds(5)) }
            #expect(answered.withLockedValue { $0 }.sorted() == [1, 2, 3, 4, 5])
            #expect(try await store.lastSequence() == 5)
            // The first commit's, then that of the two written for the read, then one for the last two.
            #expect(syncs.withLockedValue { $0.started } == 3)
        }
    }

    @Test func aBatchOfRefusedAppendsLeavesTheSQLiteWriterWaitingForNoSync() async throws {
        try await StoreKind.sqlite.with { store in
            let store = try #require(store as? SQLiteEventStore)
            _ = try await store.append(self.updates(1...1))
            await #expect(throws: EventStoreError.duplicateID) { try await store.append(self.updates(1...1)) }
            // Nothing of the refused batch is synced: were the writer to wait for that sync, this
            // append would never be written.
            let answered = NIOLockedValueBox<[UInt64]>([])
            store.append(self.updates(2...2), idsAreNew: true, written: { _ in }) { result in
                answered.withLockedValue { $0 += (try? result.get().map(\.sequence)) ?? [] }
            }
            for _ in 0..<1_000 where answered.withLockedValue({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
            #expect(answered.withLockedValue { $0 } == [2])
        }
    }

    @Test func appendsWithGivenIDsAreNumberedAfterThoseHandedOnAsTheyCame() async throws {
        try await StoreKind.sqlite.with(capacity: 1_000) { store in
            let store = try #require(store as? SQLiteEventStore)
            let handedOn = NIOLockedValueBox<[StoredUpdate]>([])
            let answered = NIOLockedValueBox<[String: Result<[StoredUpdate], any Error>]>([:])
            let ids = (1...200).map { n in n % 7 == 0 ? "given\(n)" : "new\(n)" }
            for (n, id) in ids.enumerated() {
                // The given IDs past the hundredth call repeat the first: refused, whatever is pending.
                let repeated = id.hasPrefix("given") && n > 100
                let update = Update(id: repeated ? "given7" : id, topics: ["t"], data: "\(n)")
                store.append([update], idsAreNew: id.hasPrefix("new"), written: { stored in handedOn.withLockedValue { $0 += stored } }) {
                    result in answered.withLockedValue { $0["\(n)"] = result }
                }
            }
            for _ in 0..<2_000 where answered.withLockedValue({ $0.count }) < ids.count { try await Task.sleep(for: .milliseconds(5)) }
            let results = answered.withLockedValue { $0 }
            let refused = results.filter { if case .failure = $0.value { return true } else { return false } }
            #expect(refused.count == ids.indices.filter { ids[$0].hasPrefix("given") && $0 > 100 }.count)
            #expect(refused.values.allSatisfy { result in
                if case .failure(let error as EventStoreError) = result { return error == .duplicateID }
                return false
            })
            // Every update stored once, numbered with no gap, and handed on under its number.
            let history = try await store.updates(through: .max)
            #expect(history.map(\.sequence) == Array(1...UInt64(ids.count - refused.count)))
            #expect(handedOn.withLockedValue { $0 }.sorted { $0.sequence < $1.sequence } == history)
            #expect(history.map(\.update.data) == ids.indices.filter { refused["\($0)"] == nil }.map { "\($0)" }, "in the order of the calls")
        }
    }

    #if os(Linux)
    @Test func theSQLiteHistorysThreadsYieldToTheEventLoops() async throws {
        try await StoreKind.sqlite.with { _ in
            // Each thread lowers its priority before it takes its name.
            var nices: [String: [Int]] = [:]
            for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") {
                guard let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8),
                    let close = stat.lastIndex(of: ")"), let open = stat.firstIndex(of: "(")
                else { continue }
                let name = String(stat[stat.index(after: open)..<close])
                // After the name: state (field 3) ... nice (field 19).
                let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
                if name.hasPrefix("herald-"), let nice = Int(fields[16]) { nices[name, default: []].append(nice) }
            }
            #expect(nices["herald-sqlite"]?.isEmpty == false && nices["herald-sync"]?.isEmpty == false, "\(nices)")
            #expect(nices.values.joined().allSatisfy { $0 == 5 }, "\(nices)")
            #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == 0, "the test's own thread is as it was")
        }
    }
    #endif

    @Test func theSQLiteHistorySurvivesReopening() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLiteFiles(path) }
        let first = try await SQLiteEventStore.open(path: path)
        _ = try await first.append(self.updates(1...3))
        try await first.close()
        let second = try await SQLiteEventStore.open(path: path)
        #expect(try await second.lastSequence() == 3)
        #expect(try await second.updates(after: "e1", through: 3)?.map(\.update.id) == ["e2", "e3"])
        #expect(try await second.append(self.updates(4...4)).map(\.sequence) == [4])
        try await second.close()
    }

    @Test func aSecondSQLiteStoreOnTheSameFileIsRefusedWithAReason() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLiteFiles(path) }
        let first = try await SQLiteEventStore.open(path: path)
        _ = try await first.append(self.updates(1...1))
        do {
            let second = try await SQLiteEventStore.open(path: path)
            try await second.close()
            Issue.record("a second store opened the file")
        } catch let error as EventStoreError {
            #expect(error.description == "another hub has \(path) open: an SQLite history serves one hub (several share a PostgreSQL one)")
        }
        #expect(try await first.append(self.updates(2...2)).map(\.sequence) == [2], "the first goes on")
        try await first.close()
        let again = try await SQLiteEventStore.open(path: path)
        #expect(try await again.updates(through: 2).map(\.update.id) == ["e1", "e2"], "once it is closed, the file opens")
        try await again.close()
    }

    @Test func aFileThatIsNotAnSQLiteHistoryIsRefusedWithAReason() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLiteFiles(path) }
        try Data(repeating: 0x2A, count: 4_096).write(to: URL(fileURLWithPath: path))
        let failure = await #expect(throws: EventStoreError.self) { _ = try await SQLiteEventStore.open(path: path) }
        #expect(failure?.description.hasPrefix("cannot open the SQLite history \(path): file is not a database") == true, "\(String(describing: failure))")
    }

    @Test(.timeLimit(.minutes(1)))
    func closingTheSQLiteStoreFinishesWhatWasAppended() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLiteFiles(path) }
        let store = try await SQLiteEventStore.open(path: path)
        let released = NIOLockedValueBox(false)
        store.interposeSync { sync in
            for _ in 0..<1_000 where !released.withLockedValue({ $0 }) { usleep(5_000) }
            try sync()
        }
        // An append written and waiting for its sync when the store closes.
        let written = NIOLockedValueBox(false)
        let append = Task { try await store.append(self.updates(1...1)) { _ in written.withLockedValue { $0 = true } } }
        for _ in 0..<1_000 where !written.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
        let closing = Task { try await store.close() }
        try await Task.sleep(for: .milliseconds(50))
        released.withLockedValue { $0 = true }
        try await closing.value
        #expect(try await append.value.map(\.update.id) == ["e1"], "synced and answered before the store closed")
        await #expect(throws: EventStoreError(description: "the SQLite history is closed")) { try await store.append(self.updates(2...2)) }
        let reopened = try await SQLiteEventStore.open(path: path)
        #expect(try await reopened.updates(through: 10).map(\.update.id) == ["e1"])
        try await reopened.close()
    }

    @Test(.timeLimit(.minutes(1)))
    func theSQLiteLogIsCheckpointedIntoTheFileWhileTheStoreIsOpen() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLiteFiles(path) }
        let store = try await SQLiteEventStore.open(path: path)
        let empty = fileBytes(path)
        // 1 200 pages of 4 KB updates in four commits: past the pages at which the log is checkpointed.
        let data = String(repeating: "x", count: 4_000)
        for batch in 0..<4 {
            _ = try await store.append((1...300).map { Update(id: "b\(batch)-\($0)", topics: ["t"], data: data) })
        }
        // The writer checkpoints after the commit that fills the log, beside the sync and the answer.
        for _ in 0..<500 where fileBytes(path) < empty + 4_000_000 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(fileBytes(path) >= empty + 4_000_000, "the updates were copied from the log into the file")
        #expect(try await store.updates(through: 1_200).count == 1_200)
        try await store.close()
    }

    @Test(.timeLimit(.minutes(1)))
    func theSQLiteLogStartsOverOnceCheckpointedSoItStaysNearItsLimit() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLiteFiles(path) }
        let store = try await SQLiteEventStore.open(path: path)
        // 3 000 pages of 4 KB updates, three times the log's limit, in commits of 100, each answered
        // before the next: the log never holds much more than its limit and a commit.
        let data = String(repeating: "x", count: 4_000)
        var largest = 0
        for batch in 0..<30 {
            _ = try await store.append((1...100).map { Update(id: "b\(batch)-\($0)", topics: ["t"], data: data) })
            largest = max(largest, fileBytes(path + "-wal"))
        }
        let page = 4_096 + 24  // a page in the log, with its frame's header
        #expect(largest > Int(SQLiteEventStore.checkpointFrames) * page, "the log reached its limit")
        #expect(largest < (Int(SQLiteEventStore.checkpointFrames) + 250) * page, "\(largest) bytes of log")
        #expect(try await store.updates(through: 3_000).count == 3_000)
        try await store.close()
    }

    @Test func aSQLiteHistoryWhoseSequencesAutoincrementGoesOn() async throws {
        // Files made before the store numbered the updates itself.
        let path = temporarySQLitePath()
        defer { removeSQLiteFiles(path) }
        let file = try await SQLiteConnection.open(storage: .file(path: path))
        for statement in [
            """
            CREATE TABLE updates (
                sequence INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, topics TEXT NOT NULL,
                data TEXT NOT NULL, private INTEGER NOT NULL, type TEXT, retry INTEGER, published_at REAL NOT NULL
            )
            """,
            "INSERT INTO updates (id, topics, data, private, published_at) VALUES ('e1', '[\"t\"]', 'e1', 0, 1e12), ('e2', '[\"t\"]', 'e2', 0, 1e12)",
        ] {
            _ = try await file.query(statement)
        }
        try await file.close()
        let store = try await SQLiteEventStore.open(path: path)
        #expect(try await store.lastSequence() == 2)
        #expect(try await store.append(self.updates(3...4)).map(\.sequence) == [3, 4])
        await #expect(throws: EventStoreError.duplicateID) { try await store.append(self.updates(2...2)) }
        #expect(try await store.updates(after: "e1", through: 4)?.map(\.update.id) == ["e2", "e3", "e4"])
        try await store.close()
    }
}
