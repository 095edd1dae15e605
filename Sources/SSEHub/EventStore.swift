//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import Foundation
import NIOConcurrencyHelpers

/// How much history a store keeps: the last `count` updates, none older than `age`.
public struct Retention: Sendable, Hashable {
    /// The most updates kept: at least 1.
    public let count: Int
    /// The oldest an update may be and still be replayed, a positive duration; `nil` for no limit.
    public let age: Duration?

    /// The default retention: the last 100 000 updates, none older than 7 days.
    public init() {
        self.count = 100_000
        self.age = .seconds(7 * 24 * 3600)
    }

    /// A retention of the last `count` updates, none older than `age` (7 days by default).
    ///
    /// - Throws: ``EventStoreError`` when `count` is below 1, or `age` is not positive: a history
    ///   that keeps nothing could not resume a subscriber.
    public init(count: Int, age: Duration? = .seconds(7 * 24 * 3600)) throws(EventStoreError) {
        guard count >= 1 else {
            throw EventStoreError(description: "a history must keep at least 1 update, not \(count)")
        }
        if let age, age <= .zero {
            throw EventStoreError(
                description: "a history must keep its updates for a positive time (or nil for no limit), not \(age)"
            )
        }
        self.count = count
        self.age = age
    }

    /// The publication time before which updates are dropped, as of `now`.
    func cutoff(now: Date) -> Date? {
        self.age.map { now.addingTimeInterval(-$0.seconds) }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }
}

/// An update with its place in the hub's history.
public struct StoredUpdate: Sendable, Hashable {
    /// The position: 1 for the first update ever stored, then one more for each.
    public let sequence: UInt64
    /// The update.
    public let update: Update

    /// Creates a stored update.
    public init(sequence: UInt64, update: Update) {
        self.sequence = sequence
        self.update = update
    }
}

/// Where a hub keeps its history: the seam between fan-out and storage.
///
/// Implementations assign consecutive sequence numbers in the order of ``append(_:)`` calls and
/// return only once the updates are durable (for a durable store), so that an acknowledged
/// publish is never lost. Looking up an event ID must not scan the history.
public protocol EventStore: Sendable {
    /// The sequence number of the last update stored (0 when there is none).
    func lastSequence() async throws -> UInt64

    /// The ID of the last update stored, if it is still kept.
    func lastEventID() async throws -> String?

    /// Stores `updates` in order and returns them with their sequence numbers.
    ///
    /// - Throws: ``EventStoreError/duplicateID`` when an ID is already in the history.
    func append(_ updates: [Update]) async throws -> [StoredUpdate]

    /// Stores `updates` in order like ``append(_:)``, and calls `written` with them as soon as
    /// readers of the history see them (a read may wait for them), which a durable store may do
    /// before they are durable. The hub delivers updates from `written`, so that subscribers do
    /// not wait for a disk sync, and answers the publisher when this returns.
    ///
    /// `written` is called at most once, and not for updates refused. The calls of concurrent
    /// appends may come in any order (the hub delivers in the order of the history whatever the
    /// order of the calls). The default calls it once ``append(_:)`` returns.
    func append(_ updates: [Update], written: @escaping @Sendable ([StoredUpdate]) -> Void) async throws -> [StoredUpdate]

    /// The updates after the one with ID `lastEventID`, up to and including sequence `last`,
    /// oldest first; `nil` when the history does not hold that ID (never stored, or dropped by
    /// retention).
    func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]?

    /// Every update kept, up to and including sequence `last`, oldest first.
    func updates(through last: UInt64) async throws -> [StoredUpdate]

    /// How much the store holds now.
    func size() async throws -> EventStoreSize
}

/// What an append calls with its outcome: the stored updates, or why they were refused.
typealias AppendAnswer = @Sendable (Result<[StoredUpdate], any Error>) -> Void

/// A store that answers an append through a callback, on whichever thread finishes it: the hub
/// then publishes with no task and no thread of Swift's pool between a publish request's
/// connection and its answer (see `docs/PERFORMANCE.md`).
protocol AnswersAppends: EventStore {
    /// Stores `updates` as ``EventStore/append(_:written:)`` does, and calls `answer` with what that
    /// would return or throw. `idsAreNew` says that the hub made the updates' IDs for them, so no
    /// other update has one: the store need not look them up before `written`.
    func append(
        _ updates: [Update],
        idsAreNew: Bool,
        written: @escaping @Sendable ([StoredUpdate]) -> Void,
        then answer: @escaping AppendAnswer
    )
}

extension InMemoryEventStore: AnswersAppends {}
extension SQLiteEventStore: AnswersAppends {}

extension EventStore {
    public func append(_ updates: [Update], written: @escaping @Sendable ([StoredUpdate]) -> Void) async throws -> [StoredUpdate] {
        let stored = try await self.append(updates)
        written(stored)
        return stored
    }
}

/// How much a store holds: the updates kept, and the bytes they take (the file, for a file).
public struct EventStoreSize: Sendable, Hashable {
    /// The updates kept.
    public var updates: Int
    /// The bytes they take.
    public var bytes: Int

    /// A size.
    public init(updates: Int, bytes: Int) {
        self.updates = updates
        self.bytes = bytes
    }
}

/// Why a store refused updates.
public struct EventStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String

    /// A failure described for the operator.
    public init(description: String) {
        self.description = description
    }

    /// An update's ID is already in the history: resuming from it would be ambiguous.
    public static let duplicateID = EventStoreError(description: "an update with this id is already in the history")
}

/// A history in memory: fast, bounded, and gone when the process ends.
public final class InMemoryEventStore: EventStore {
    private struct State {
        /// The kept updates, oldest first, each with when it was stored.
        var updates = Deque<(update: StoredUpdate, time: Date)>()
        var sequenceByID: [String: UInt64] = [:]
        var lastSequence: UInt64 = 0
        /// The bytes of the kept updates' IDs, topics and data.
        var bytes = 0
    }

    /// What is kept.
    public let retention: Retention
    private let now: @Sendable () -> Date
    private let state = NIOLockedValueBox(State())

    /// A store that keeps what `retention` says.
    public convenience init(retention: Retention = Retention()) {
        self.init(retention: retention, now: Date.init)
    }

    /// A store whose notion of the current time is `now`: tests pass their own.
    init(retention: Retention, now: @escaping @Sendable () -> Date) {
        self.retention = retention
        self.now = now
        // Room for the whole retention (up to 131 072 updates), reserved now: growing the history
        // copies it, and its index rehashes every ID, in one step under the lock that every
        // publish takes (milliseconds at 64 000 updates). Only what is written takes memory.
        let capacity = min(retention.count, 1 << 17)
        self.state.withLockedValue { state in
            state.updates.reserveCapacity(capacity)
            state.sequenceByID.reserveCapacity(capacity)
        }
    }

    public func lastSequence() async throws -> UInt64 {
        self.state.withLockedValue { $0.lastSequence }
    }

    public func lastEventID() async throws -> String? {
        self.state.withLockedValue { $0.updates.last?.update.update.id }
    }

    public func append(_ updates: [Update]) async throws -> [StoredUpdate] {
        try self.appendNow(updates)
    }

    func append(
        _ updates: [Update],
        idsAreNew: Bool,
        written: @escaping @Sendable ([StoredUpdate]) -> Void,
        then answer: @escaping AppendAnswer
    ) {
        let result = Result { try self.appendNow(updates) }
        if case .success(let stored) = result { written(stored) }
        answer(result)
    }

    private func appendNow(_ updates: [Update]) throws -> [StoredUpdate] {
        try self.state.withLockedValue { state in
            if updates.count == 1 { return [try self.appendOne(updates[0], to: &state)] }
            for update in updates where state.sequenceByID[update.id] != nil {
                throw EventStoreError.duplicateID
            }
            if Set(updates.map(\.id)).count < updates.count {
                throw EventStoreError.duplicateID
            }
            var stored: [StoredUpdate] = []
            stored.reserveCapacity(updates.count)
            let now = self.now()
            self.applyRetention(to: &state, now: now, making: updates.count)
            for update in updates {
                state.lastSequence += 1
                let entry = StoredUpdate(sequence: state.lastSequence, update: update)
                state.updates.append((entry, now))
                state.sequenceByID[update.id] = entry.sequence
                state.bytes += Self.byteCount(of: update)
                stored.append(entry)
            }
            return stored
        }
    }

    /// Appends one update, as a publish does: its ID is looked up and indexed in one step (one
    /// hash of it, where a check then an insert take two).
    private func appendOne(_ update: Update, to state: inout State) throws -> StoredUpdate {
        let entry = StoredUpdate(sequence: state.lastSequence + 1, update: update)
        if let held = state.sequenceByID.updateValue(entry.sequence, forKey: update.id) {
            state.sequenceByID[update.id] = held
            throw EventStoreError.duplicateID
        }
        let now = self.now()
        self.applyRetention(to: &state, now: now, making: 1)
        state.lastSequence = entry.sequence
        state.updates.append((entry, now))
        state.bytes += Self.byteCount(of: update)
        return entry
    }

    public func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
        self.state.withLockedValue { state in
            self.applyRetention(to: &state, now: self.now())
            guard let sequence = state.sequenceByID[lastEventID] else { return nil }
            return Self.range(in: state, after: sequence, through: last)
        }
    }

    public func updates(through last: UInt64) async throws -> [StoredUpdate] {
        self.state.withLockedValue { state in
            self.applyRetention(to: &state, now: self.now())
            return Self.range(in: state, after: 0, through: last)
        }
    }

    public func size() async throws -> EventStoreSize {
        self.state.withLockedValue { state in
            self.applyRetention(to: &state, now: self.now())
            return EventStoreSize(updates: state.updates.count, bytes: state.bytes)
        }
    }

    private static func byteCount(of update: Update) -> Int {
        update.id.utf8.count + update.data.utf8.count + update.topics.reduce(0) { $0 + $1.utf8.count }
    }

    /// Forgets the oldest updates past the count or the age, and as many more as `room` asks for
    /// (updates about to be appended). Updates are in time order, so only the front is looked at.
    private func applyRetention(to state: inout State, now: Date, making room: Int = 0) {
        let cutoff = self.retention.cutoff(now: now)
        while let oldest = state.updates.first,
            state.updates.count + room > self.retention.count || cutoff.map({ oldest.time < $0 }) == true
        {
            state.updates.removeFirst()
            state.sequenceByID.removeValue(forKey: oldest.update.update.id)
            state.bytes -= Self.byteCount(of: oldest.update.update)
        }
    }

    /// Sequences are consecutive, so a position is arithmetic, not a search.
    private static func range(in state: State, after sequence: UInt64, through last: UInt64) -> [StoredUpdate] {
        guard let oldest = state.updates.first?.update.sequence, last >= oldest else { return [] }
        let start = Int(min(max(sequence + 1, oldest) - oldest, UInt64(state.updates.count)))
        let end = Int(min(last - oldest + 1, UInt64(state.updates.count)))
        return start < end ? state.updates[start..<end].map(\.update) : []
    }
}

/// `strings` as a JSON array, as the stores keep an update's topics: `JSONEncoder` was 1.6 % of the
/// server's CPU on 1 000 topics with SQLite.
func jsonArray(_ strings: [String]) -> String {
    var json = "["
    for (index, string) in strings.enumerated() {
        json += index == 0 ? "\"" : ",\""
        if !string.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            json += string
        } else {
            for scalar in string.unicodeScalars {
                switch scalar {
                case "\"": json += "\\\""
                case "\\": json += "\\\\"
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    json += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                default: json.unicodeScalars.append(scalar)
                }
            }
        }
        json += "\""
    }
    return json + "]"
}
