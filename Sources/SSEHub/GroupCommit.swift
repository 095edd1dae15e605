//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

/// An append waiting for the next commit: its updates, what to call once they are written, and
/// what to call with its outcome once they are durable.
struct PendingAppend {
    let updates: [Update]
    let written: @Sendable ([StoredUpdate]) -> Void
    let answer: AppendAnswer
}

/// A durable store's group commit: appends that arrive while a transaction commits wait, and
/// share the next transaction, so a busy hub pays one disk sync per batch, not per publish.
protocol GroupCommitting: Actor {
    var pending: [PendingAppend] { get set }
    var flushing: Bool { get set }

    /// Stores the appends of a batch in one transaction, in order, except those with an ID the
    /// history already holds or that comes twice in the batch: returns each append's stored updates
    /// (empty for a refused one) and the indices of the refused.
    func commit(_ appends: [[Update]]) async throws -> (stored: [[StoredUpdate]], refused: Set<Int>)
}

extension GroupCommitting {
    /// Appends `updates` in the next commit, calls `written` with them once the commit has written
    /// them, and returns them once they are durable.
    func appendInNextCommit(_ updates: [Update], written: @escaping @Sendable ([StoredUpdate]) -> Void) async throws -> [StoredUpdate] {
        try await withCheckedThrowingContinuation { continuation in
            self.pending.append(PendingAppend(updates: updates, written: written, answer: { continuation.resume(with: $0) }))
            if !self.flushing {
                self.flushing = true
                Task { await self.commitPending() }
            }
        }
    }

    /// Commits what is pending, batch after batch, until nothing is.
    private func commitPending() async {
        while !self.pending.isEmpty {
            let batch = self.pending
            self.pending = []
            do {
                let (stored, refused) = try await self.commit(batch.map(\.updates))
                for (index, append) in batch.enumerated() {
                    if refused.contains(index) {
                        append.answer(.failure(EventStoreError.duplicateID))
                    } else {
                        append.written(stored[index])  // in the order of the history
                        append.answer(.success(stored[index]))  // the commit is durable
                    }
                }
            } catch {
                for append in batch { append.answer(.failure(error)) }
            }
        }
        self.flushing = false
    }
}

/// The appends of a batch to refuse: those with an ID in `known`, or one that an earlier append of
/// the batch (or the same append) already has.
func refusedAppends(_ appends: [[Update]], known: Set<String>) -> Set<Int> {
    var seen = known
    var refused = Set<Int>()
    for (index, updates) in appends.enumerated() {
        let ids = updates.map(\.id)
        if ids.contains(where: seen.contains) || Set(ids).count < ids.count {
            refused.insert(index)
        } else {
            seen.formUnion(ids)
        }
    }
    return refused
}
