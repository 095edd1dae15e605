//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers

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

    /// Stores `updates` in order and returns them with their sequence numbers.
    ///
    /// - Throws: ``EventStoreError/duplicateID`` when an ID is already in the history.
    func append(_ updates: [Update]) async throws -> [StoredUpdate]

    /// The updates after the one with ID `lastEventID`, up to and including sequence `last`,
    /// oldest first; `nil` when the history does not hold that ID (never stored, or dropped by
    /// retention).
    func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]?

    /// Every update kept, up to and including sequence `last`, oldest first.
    func updates(through last: UInt64) async throws -> [StoredUpdate]
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
        var updates: [StoredUpdate] = []
        /// Index of the oldest kept update in `updates` (older ones are dropped lazily).
        var first = 0
        var sequenceByID: [String: UInt64] = [:]
        var lastSequence: UInt64 = 0
    }

    /// The most updates kept; older ones are dropped.
    public let capacity: Int
    private let state = NIOLockedValueBox(State())

    /// A store that keeps the last `capacity` updates.
    public init(capacity: Int = 10_000) {
        precondition(capacity > 0, "an event store must keep at least one update")
        self.capacity = capacity
    }

    public func lastSequence() async throws -> UInt64 {
        self.state.withLockedValue { $0.lastSequence }
    }

    public func append(_ updates: [Update]) async throws -> [StoredUpdate] {
        try self.state.withLockedValue { state in
            var ids = Set<String>()
            for update in updates {
                guard state.sequenceByID[update.id] == nil, ids.insert(update.id).inserted else {
                    throw EventStoreError.duplicateID
                }
            }
            var stored: [StoredUpdate] = []
            for update in updates {
                state.lastSequence += 1
                let entry = StoredUpdate(sequence: state.lastSequence, update: update)
                state.updates.append(entry)
                state.sequenceByID[update.id] = entry.sequence
                stored.append(entry)
            }
            // Retention: forget the oldest, and compact once half the array is forgotten.
            while state.updates.count - state.first > self.capacity {
                state.sequenceByID.removeValue(forKey: state.updates[state.first].update.id)
                state.first += 1
            }
            if state.first > state.updates.count / 2 {
                state.updates.removeFirst(state.first)
                state.first = 0
            }
            return stored
        }
    }

    public func updates(after lastEventID: String, through last: UInt64) async throws -> [StoredUpdate]? {
        self.state.withLockedValue { state in
            guard let sequence = state.sequenceByID[lastEventID] else { return nil }
            return Self.range(in: state, after: sequence, through: last)
        }
    }

    public func updates(through last: UInt64) async throws -> [StoredUpdate] {
        self.state.withLockedValue { state in
            Self.range(in: state, after: 0, through: last)
        }
    }

    /// Sequences are consecutive, so a position is arithmetic, not a search.
    private static func range(in state: State, after sequence: UInt64, through last: UInt64) -> [StoredUpdate] {
        guard state.first < state.updates.count else { return [] }
        let oldest = state.updates[state.first].sequence
        let start = state.first + Int(max(sequence + 1, oldest) - oldest)
        let end = min(state.updates.count, state.first + Int(last >= oldest ? last - oldest + 1 : 0))
        return start < end ? Array(state.updates[start..<end]) : []
    }
}
