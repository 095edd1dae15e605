//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The encoded events waiting for one subscriber, and the timer that keeps its stream alive.
///
/// Bounded in events and in bytes: a push beyond either bound cuts the subscriber (it then
/// reconnects and catches up from the history, so the hub and the others never wait for it).
/// The writer takes everything queued at once and writes it with one flush. One timer per
/// subscriber, on an event loop, sends a heartbeat when the stream has been idle and cancels a
/// write that the client has not taken within the write deadline; there is no task per
/// subscriber besides the one writing its response.
final class SubscriberQueue: Sendable {
    struct Limits: Sendable {
        var events: Int
        var bytes: Int
    }

    /// The task writing the response, so that the timer can cancel a write stuck for too long.
    private struct Writer: @unchecked Sendable {
        // Cancelled only under the lock while `writingSince` is set, which the task clears
        // (under the lock) before it leaves `write`: the task is alive whenever it is cancelled.
        let task: UnsafeCurrentTask
    }

    private struct State {
        var buffers: [ByteBuffer] = []
        var bytes = 0
        var waiter: CheckedContinuation<[ByteBuffer], Never>?
        var finished = false
        var lastActivity = NIODeadline.now()
        var writingSince: NIODeadline?
        var writer: Writer?
        var timer: Scheduled<Void>?
        var cutForWriteDeadline = false
        var onFinish: (@Sendable () -> Void)?
    }

    private let state = NIOLockedValueBox(State())
    private let limits: Limits

    init(limits: Limits) {
        self.limits = limits
    }

    /// Queues `buffer`; `false` when that would overflow the queue (the caller then cuts the
    /// subscriber with ``finish()``, outside any lock of its own).
    func push(_ buffer: ByteBuffer) -> Bool {
        let pushed = self.state.withLockedValue { state -> (waiter: CheckedContinuation<[ByteBuffer], Never>?, batch: [ByteBuffer], accepted: Bool) in
            guard !state.finished else { return (nil, [], true) }
            guard state.buffers.count < self.limits.events, state.bytes + buffer.readableBytes <= self.limits.bytes else {
                return (nil, [], false)
            }
            state.buffers.append(buffer)
            state.bytes += buffer.readableBytes
            state.lastActivity = .now()
            let (waiter, batch) = Self.takeWaiter(&state)
            return (waiter, batch, true)
        }
        pushed.waiter?.resume(returning: pushed.batch)
        return pushed.accepted
    }

    /// Ends the queue: what is queued is still taken, then ``next()`` returns nothing. The first
    /// call runs the `onFinish` handler.
    func finish() {
        let (waiter, batch, onFinish) = self.state.withLockedValue {
            state -> (CheckedContinuation<[ByteBuffer], Never>?, [ByteBuffer], (@Sendable () -> Void)?) in
            state.finished = true
            state.timer?.cancel()
            state.timer = nil
            let onFinish = state.onFinish
            state.onFinish = nil
            let (waiter, batch) = Self.takeWaiter(&state)
            return (waiter, batch, onFinish)
        }
        waiter?.resume(returning: batch)
        onFinish?()
    }

    /// Sets what ``finish()`` runs, once (or runs it now, if the queue is already finished).
    func onFinish(_ handler: @escaping @Sendable () -> Void) {
        let finished = self.state.withLockedValue { state in
            if !state.finished { state.onFinish = handler }
            return state.finished
        }
        if finished { handler() }
    }

    /// Everything queued, waiting for something if nothing is; empty once finished and drained
    /// (or when the calling task is cancelled).
    func next() async -> [ByteBuffer] {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let batch = self.state.withLockedValue { state -> [ByteBuffer]? in
                    if !state.buffers.isEmpty || state.finished || Task.isCancelled {
                        defer { state.buffers = []; state.bytes = 0 }
                        return state.buffers
                    }
                    state.waiter = continuation
                    return nil
                }
                if let batch { continuation.resume(returning: batch) }
            }
        } onCancel: {
            self.finish()
        }
    }

    /// Runs `write` (the writing of one batch) under the write deadline.
    func write(_ write: () async throws -> Void) async throws {
        // The current task, valid while this function runs in it (see `Writer`).
        let task = withUnsafeCurrentTask { $0 }
        self.state.withLockedValue { state in
            state.writingSince = .now()
            state.writer = task.map(Writer.init)
        }
        defer {
            self.state.withLockedValue { state in
                state.writingSince = nil
                state.writer = nil
            }
        }
        try await write()
        if self.state.withLockedValue({ $0.cutForWriteDeadline }) { throw CancellationError() }
    }

    /// Whether the timer cancelled a write that took too long.
    var wasCutForWriteDeadline: Bool {
        self.state.withLockedValue { $0.cutForWriteDeadline }
    }

    /// Starts the timer: every `period`, a heartbeat if nothing was queued for `heartbeat`
    /// (`nil`: no heartbeats), and the end of a write running for longer than `writeDeadline`.
    func startTimer(period: TimeAmount, heartbeat: (buffer: ByteBuffer, after: TimeAmount)?, writeDeadline: TimeAmount, on loop: any EventLoop) {
        let timer = loop.scheduleTask(in: period) { [self] in
            self.tick(period: period, heartbeat: heartbeat, writeDeadline: writeDeadline, on: loop)
        }
        self.state.withLockedValue { state in
            if state.finished { timer.cancel() } else { state.timer = timer }
        }
    }

    private func tick(period: TimeAmount, heartbeat: (buffer: ByteBuffer, after: TimeAmount)?, writeDeadline: TimeAmount, on loop: any EventLoop) {
        let now = NIODeadline.now()
        var cut = false
        let (waiter, batch) = self.state.withLockedValue { state -> (CheckedContinuation<[ByteBuffer], Never>?, [ByteBuffer]) in
            guard !state.finished else { return (nil, []) }
            if let since = state.writingSince, now - since >= writeDeadline {
                state.cutForWriteDeadline = true
                state.writer?.task.cancel()
                cut = true
                return (nil, [])
            }
            if let heartbeat, now - state.lastActivity >= heartbeat.after {
                state.buffers.append(heartbeat.buffer)
                state.lastActivity = now
                return Self.takeWaiter(&state)
            }
            return (nil, [])
        }
        waiter?.resume(returning: batch)
        if cut {
            self.finish()
        } else {
            self.startTimer(period: period, heartbeat: heartbeat, writeDeadline: writeDeadline, on: loop)
        }
    }

    private static func takeWaiter(_ state: inout State) -> (CheckedContinuation<[ByteBuffer], Never>?, [ByteBuffer]) {
        guard let waiter = state.waiter else { return (nil, []) }
        state.waiter = nil
        defer { state.buffers = []; state.bytes = 0 }
        return (waiter, state.buffers)
    }
}
