//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers
import NIOCore

/// The encoded events waiting for one subscriber, and the timer that keeps its stream alive.
///
/// Bounded in events and in bytes: a push beyond either bound cuts the subscriber (it then
/// reconnects and catches up from the history, so the hub and the others never wait for it).
/// The writer takes everything queued at once and writes it with one flush. Once the connection's
/// channel is attached (``attach(_:)``), events bypass the queue and go straight to the channel
/// on its event loop. A timer, shared by the subscribers of an event loop, sends a heartbeat when
/// the stream has been idle and cuts a subscriber whose client has not taken its bytes within the
/// write deadline; there is no task per subscriber besides the one serving its response.
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

    /// Why a subscriber was cut.
    enum CutReason: Sendable { case tooManyBytes, writeTimeout }

    private struct State {
        /// Set once the connection's channel takes the events directly.
        var sink: (ChannelSink, LoopWriter)?
        var cutReason: CutReason?
        var buffers: [EncodedEvent] = []
        var bytes = 0
        var waiter: CheckedContinuation<[ByteBuffer], Never>?
        var finished = false
        var lastActivity = NIODeadline.now()
        var writingSince: NIODeadline?
        var writer: Writer?
        /// The timer the queue is on, once started.
        var timers: SubscriberTimers?
        var onFinish: (@Sendable () -> Void)?
    }

    private let state = NIOLockedValueBox(State())
    let limits: Limits

    init(limits: Limits) {
        self.limits = limits
    }

    /// Queues `event`, or, once the connection takes events directly, adds this subscriber to
    /// `direct`, which the caller hands to the loop writers once for all the subscribers of the
    /// event. `false` when queueing would overflow the queue.
    func push(_ event: EncodedEvent, direct: inout DirectWrites) -> Bool {
        let pushed = self.state.withLockedValue {
            state -> (waiter: CheckedContinuation<[ByteBuffer], Never>?, batch: [ByteBuffer], sink: (ChannelSink, LoopWriter)?, accepted: Bool) in
            guard !state.finished else { return (nil, [], nil, true) }
            if let sink = state.sink { return (nil, [], sink, true) }
            guard state.buffers.count < self.limits.events, state.bytes + event.bytes.readableBytes <= self.limits.bytes else {
                return (nil, [], nil, false)
            }
            state.buffers.append(event)
            state.bytes += event.bytes.readableBytes
            state.lastActivity = .now()
            let (waiter, batch) = Self.takeWaiter(&state)
            return (waiter, batch, nil, true)
        }
        if let (sink, writer) = pushed.sink { direct.add(sink, of: self, to: writer) }
        pushed.waiter?.resume(returning: pushed.batch)
        return pushed.accepted
    }

    /// The connection's sink and its loop's writer, once attached (``attach(_:)``) and until the
    /// queue finishes. Events handed to that writer from now on go after everything queued before.
    var directSink: (ChannelSink, LoopWriter)? {
        self.state.withLockedValue { $0.finished ? nil : $0.sink }
    }

    /// Hands the subscriber's connection to `sink`: what is queued, then every later event, is
    /// written straight to its channel. `false` when the queue has already finished.
    func attach(_ sink: ChannelSink) -> Bool {
        let writer = LoopWriter.forLoop(sink.loop)
        return self.state.withLockedValue { state in
            guard !state.finished else { return false }
            // Under the lock, so that these go before any later push.
            for event in state.buffers { writer.enqueue(event, to: [(self, sink)]) }
            state.buffers = []
            state.bytes = 0
            state.sink = (sink, writer)
            return true
        }
    }

    /// Cuts the subscriber (it reconnects and catches up from the history).
    func cut(reason: CutReason) {
        self.state.withLockedValue { state in
            if state.cutReason == nil { state.cutReason = reason }
        }
        self.finish()
    }

    /// Why the subscriber was cut, if it was.
    var cutReason: CutReason? {
        self.state.withLockedValue { $0.cutReason }
    }

    /// Ends the queue: what is queued is still taken, then ``next()`` returns nothing. The first
    /// call runs the `onFinish` handler.
    func finish() {
        let (waiter, batch, onFinish) = self.state.withLockedValue {
            state -> (CheckedContinuation<[ByteBuffer], Never>?, [ByteBuffer], (@Sendable () -> Void)?) in
            state.finished = true
            state.timers?.remove(self)
            state.timers = nil
            let onFinish = state.onFinish
            state.onFinish = nil
            if let (sink, _) = state.sink { sink.stop() }
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
                        return state.buffers.map(\.bytes)
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
        if self.cutReason == .writeTimeout { throw CancellationError() }
    }

    /// Starts the timer: every `period`, a heartbeat if nothing was queued for `heartbeat`
    /// (`nil`: no heartbeats), and the end of a write running for longer than `writeDeadline`.
    /// The subscribers of a loop share one timer a period (``SubscriberTimers``).
    func startTimer(period: TimeAmount, heartbeat: (event: EncodedEvent, after: TimeAmount)?, writeDeadline: TimeAmount, on loop: any EventLoop) {
        let timers = SubscriberTimers.forLoop(loop, period: period)
        // Under the lock, as `finish` removes it: it cannot stay once the queue has finished.
        self.state.withLockedValue { state in
            guard !state.finished, state.timers == nil else { return }
            state.timers = timers
            timers.add(self, heartbeat: heartbeat, writeDeadline: writeDeadline)
        }
    }

    /// What the timer does at each tick.
    fileprivate func tick(now: NIODeadline, heartbeat: (event: EncodedEvent, after: TimeAmount)?, writeDeadline: TimeAmount) {
        guard let (sink, _) = self.state.withLockedValue({ $0.finished ? nil : $0.sink }) else {
            self.tickQueued(now: now, heartbeat: heartbeat, writeDeadline: writeDeadline)
            return
        }
        // Writing directly: the timer runs on the sink's loop.
        if sink.isStuck(for: writeDeadline, now: now) {
            self.cut(reason: .writeTimeout)
        } else if let heartbeat, sink.isIdle(for: heartbeat.after, now: now) {
            _ = sink.write([heartbeat.event])
            _ = sink.flush(maximumBytes: .max)
        }
    }

    private func tickQueued(now: NIODeadline, heartbeat: (event: EncodedEvent, after: TimeAmount)?, writeDeadline: TimeAmount) {
        var cut = false
        let (waiter, batch) = self.state.withLockedValue { state -> (CheckedContinuation<[ByteBuffer], Never>?, [ByteBuffer]) in
            guard !state.finished else { return (nil, []) }
            if let since = state.writingSince, now - since >= writeDeadline {
                state.cutReason = .writeTimeout
                state.writer?.task.cancel()
                cut = true
                return (nil, [])
            }
            if let heartbeat, now - state.lastActivity >= heartbeat.after {
                state.buffers.append(heartbeat.event)
                state.lastActivity = now
                return Self.takeWaiter(&state)
            }
            return (nil, [])
        }
        waiter?.resume(returning: batch)
        if cut { self.finish() }
    }

    private static func takeWaiter(_ state: inout State) -> (CheckedContinuation<[ByteBuffer], Never>?, [ByteBuffer]) {
        guard let waiter = state.waiter else { return (nil, []) }
        state.waiter = nil
        defer { state.buffers = []; state.bytes = 0 }
        return (waiter, state.buffers.map(\.bytes))
    }
}

/// The timer of the subscribers of one event loop that share a period: one repeated task, which
/// ticks each of them in turn, rather than a scheduled task per subscriber, which cost each
/// subscriber its memory and each connection's timer a search through the loop's thousands of them
/// to cancel it.
///
/// A subscriber's first tick comes within a period of its start, not exactly a period after it.
/// That changes no bound: a heartbeat still comes at most a period after the stream has been idle
/// for the heartbeat interval, and a stuck write is still cut at most a period after its deadline
/// (the period is half the shorter of the two: `Hub.timers(_:)`).
final class SubscriberTimers: Sendable {
    private struct Subscriber {
        let queue: SubscriberQueue
        let heartbeat: (event: EncodedEvent, after: TimeAmount)?
        let writeDeadline: TimeAmount
    }

    private let loop: any EventLoop
    private let period: TimeAmount
    private let state = NIOLockedValueBox((subscribers: [ObjectIdentifier: Subscriber](), task: RepeatedTask?.none))

    private init(loop: any EventLoop, period: TimeAmount) {
        self.loop = loop
        self.period = period
    }

    /// Adds `queue`; the task starts with the first subscriber.
    fileprivate func add(_ queue: SubscriberQueue, heartbeat: (event: EncodedEvent, after: TimeAmount)?, writeDeadline: TimeAmount) {
        self.state.withLockedValue { state in
            state.subscribers[ObjectIdentifier(queue)] = Subscriber(queue: queue, heartbeat: heartbeat, writeDeadline: writeDeadline)
            if state.task == nil {
                state.task = self.loop.scheduleRepeatedTask(initialDelay: self.period, delay: self.period) { [self] _ in
                    self.tick()
                }
            }
        }
    }

    /// Removes `queue`; the task stops with the last subscriber.
    fileprivate func remove(_ queue: SubscriberQueue) {
        self.state.withLockedValue { state in
            state.subscribers[ObjectIdentifier(queue)] = nil
            if state.subscribers.isEmpty {
                state.task?.cancel()
                state.task = nil
            }
        }
    }

    /// The subscribers on the timer.
    var count: Int {
        self.state.withLockedValue { $0.subscribers.count }
    }

    /// Whether the repeated task is scheduled.
    var isTicking: Bool {
        self.state.withLockedValue { $0.task != nil }
    }

    /// Ticks every subscriber, outside the lock: a tick that cuts one removes it.
    private func tick() {
        let subscribers = self.state.withLockedValue { Array($0.subscribers.values) }
        let now = NIODeadline.now()
        for subscriber in subscribers {
            subscriber.queue.tick(now: now, heartbeat: subscriber.heartbeat, writeDeadline: subscriber.writeDeadline)
        }
    }

    /// The timers of `loop` for `period`, made once.
    static func forLoop(_ loop: any EventLoop, period: TimeAmount) -> SubscriberTimers {
        let key = Key(loop: ObjectIdentifier(loop), period: period.nanoseconds)
        return Self.all.withLockedValue { all in
            if let timers = all[key] { return timers }
            let timers = SubscriberTimers(loop: loop, period: period)
            all[key] = timers
            return timers
        }
    }

    private struct Key: Hashable {
        let loop: ObjectIdentifier
        let period: Int64
    }

    private static let all = NIOLockedValueBox<[Key: SubscriberTimers]>([:])
}
