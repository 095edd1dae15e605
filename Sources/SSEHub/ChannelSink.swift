//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOSSL
import SSECore
import SSENIO

#if canImport(Glibc)
import CoreFoundation  // where Swift finds `timespec`'s members in a release build
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An event encoded once for every subscriber: its bytes, and the same bytes framed as one
/// HTTP/1.1 chunk (`<size in hex>\r\n<bytes>\r\n`), for the connections written below the HTTP
/// encoder. Both are views of one buffer.
struct EncodedEvent: Sendable {
    let bytes: ByteBuffer
    let chunk: ByteBuffer

    /// `event`, encoded straight into the buffer, framed.
    init(encoding event: ServerSentEvent, allocator: ByteBufferAllocator) {
        self.init(size: event.encodedByteCount, allocator: allocator) { $0.writeServerSentEvent(event) }
    }

    /// The events as one: their bytes one after another, framed as one chunk.
    init(joining events: [EncodedEvent]) {
        let size = events.reduce(0) { $0 + $1.bytes.readableBytes }
        self.init(size: size, allocator: ByteBufferAllocator()) { buffer in
            for event in events { buffer.writeImmutableBuffer(event.bytes) }
        }
    }

    init(_ bytes: ByteBuffer) {
        self.init(size: bytes.readableBytes, allocator: ByteBufferAllocator()) { $0.writeImmutableBuffer(bytes) }
    }

    /// The chunk's size line, then what `write` writes (`size` bytes), then the chunk's end.
    private init(size: Int, allocator: ByteBufferAllocator, write: (inout ByteBuffer) -> Void) {
        var digits = 1
        while size >> (4 * digits) > 0 { digits += 1 }
        var chunk = allocator.buffer(capacity: digits + size + 4)
        for digit in (0..<digits).reversed() {
            chunk.writeInteger(UInt8.hexDigit(UInt8(truncatingIfNeeded: size >> (4 * digit) & 0xF)))
        }
        chunk.writeStaticString("\r\n")
        let start = chunk.writerIndex
        write(&chunk)
        precondition(chunk.writerIndex - start == size, "an encoded event is not the size it said")
        chunk.writeStaticString("\r\n")
        self.bytes = chunk.getSlice(at: start, length: size)!
        self.chunk = chunk
    }
}

/// Sits just below an HTTP/1 connection's response encoder (above TLS, if any): the hub writes
/// pre-framed chunks through its context, past the handlers above it.
private final class RawBodyWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
}

/// Over HTTP/1, holds back the end of a subscription's response while the hub writes the events
/// straight to the channel. The server's handler then returns at once: its task, and the stack of
/// frames under it, go away, which was most of what an idle subscriber cost. The end goes out when
/// the subscription ends (``release()``), and the connection serves further requests as usual.
///
/// It sits between NIO's response encoder and the handlers above it, so it also sees the events
/// that travel up: on a graceful shutdown it ends the response before the server closes the
/// connection. (For the server the connection is idle meanwhile: do not give Hummingbird's
/// HTTP/1 channel an `idleTimeout`, or it closes the streams.)
final class ResponseEndHolder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case waiting, holding, released
    }

    private var state = State.waiting
    private var context: ChannelHandlerContext?
    /// Ends the subscription: on a graceful shutdown.
    private let onQuiesce: () -> Void

    init(onQuiesce: @escaping () -> Void) {
        self.onQuiesce = onQuiesce
    }

    /// Whether the response has ended for the server while the hub still writes its events.
    var isHolding: Bool { self.state == .holding }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.state == .waiting, case .end = self.unwrapOutboundIn(data) {
            self.state = .holding  // for the server, the response has ended
            promise?.succeed()
            return
        }
        context.write(data, promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent, self.state != .released else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // The server is stopping: the response ends now, before the server closes the connection.
        self.end(context)
        self.onQuiesce()
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Ends the response (the end held back, or the server's own when it has not come yet) and
    /// leaves the pipeline. Call on the channel's event loop.
    func release() {
        guard let context = self.context, self.state != .released else { return }
        self.end(context)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func end(_ context: ChannelHandlerContext) {
        if self.state == .holding { context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil) }
        self.state = .released
    }
}

/// A subscriber's connection, written to directly on its event loop: each event goes into the
/// channel as a body part of the response the server's handler has begun, with no task and no
/// async writer per event, and one flush for everything that arrived since the last one.
///
/// The response's head and first bytes are written by the server's own writer (or by the door of
/// ``Hub/http1Server(configuration:requestTimeout:)``); the sink takes over after that, and hands
/// back at the end (the writer then ends the response).
final class ChannelSink: @unchecked Sendable {
    // Everything below `done` is touched only on `loop`.
    let channel: any Channel
    let loop: any EventLoop
    /// Succeeds when the sink stops: the handler then finishes its response.
    let done: EventLoopPromise<Void>
    private var finished = false
    private var needsFlush = false
    private var lastWrite = NIODeadline.now()
    /// Since when the channel has not been writable (the client is not reading), and how many
    /// bytes were written meanwhile.
    private var unwritableSince: NIODeadline?
    private var bytesWhileUnwritable = 0
    private var unflushedBytes = 0
    /// Over HTTP/1, the context events are written through, already framed: as chunks when the
    /// sink added it below the response encoder (`addedRaw`: it then takes it out at the end), as
    /// they are on the door's connection over TLS, whose body runs to the close.
    private var raw: ChannelHandlerContext?
    /// On the door's connection without TLS, the channel's core, which the events are written to
    /// instead (see `init`).
    private var core: (any ChannelCore)?
    private var addedRaw = false
    /// Whether the connection is over TLS, which encrypts each buffer written as a record of its
    /// own (a header, a tag and a call into BoringSSL each): several events are better written as
    /// one buffer (see `LoopWriter`). Without TLS the socket's `writev` gathers them, uncopied.
    let isOverTLS: Bool

    /// A sink for `channel`; call on its event loop, after the response's head has been written.
    init(channel: any Channel) {
        channel.eventLoop.preconditionInEventLoop()
        self.channel = channel
        self.loop = channel.eventLoop
        self.done = channel.eventLoop.makePromise(of: Void.self)
        let pipeline = channel.pipeline.syncOperations
        // An HTTP/2 stream's TLS is its connection's, on the same loop.
        let connection = channel.parent.flatMap { $0.eventLoop.inEventLoop ? $0.pipeline.syncOperations : nil }
        self.isOverTLS = (try? pipeline.handler(type: NIOSSLServerHandler.self)) != nil
            || (try? connection?.handler(type: NIOSSLServerHandler.self)) != nil
        if let stream = try? pipeline.handler(type: EventStreamConnection.self) {
            // The door's connection, whose HTTP handlers are gone: its body is not chunked (see
            // `HubDoor.streamHead`).
            if self.isOverTLS {
                self.raw = try? pipeline.context(handler: stream)
            } else {
                // Nothing below the stream's handler changes what is written (the request decoder
                // only reads, the request reader passes writes on), so the sink writes to the core
                // as the pipeline's head would. NIO keeps `_channelCore` for its own handlers: it
                // is used here because the way down the pipeline touches three cold objects of
                // each connection a write, and at 10 000 subscribers that was 4 to 7 % of the
                // server's CPU time (see docs/PERFORMANCE.md).
                self.core = channel._channelCore
            }
        } else if let encoder = try? pipeline.context(handlerType: HTTPResponseEncoder.self),
            (try? pipeline.handler(type: HubHTTP1Codec.self))?.answersHTTP10 != true
        {
            // HTTP/1.1 (Hummingbird answers HTTP/1.1, and so does the hub's server but to HTTP/1.0,
            // whose body goes through the encoder as it is): a body without a length is chunked.
            let writer = RawBodyWriter()
            if (try? pipeline.addHandler(writer, position: .before(encoder.handler))) != nil {
                self.raw = try? pipeline.context(handler: writer)
                self.addedRaw = true
            }
        }
    }

    /// Writes `events` without flushing; `true` when they are the first writes since the last
    /// flush.
    func write(_ events: [EncodedEvent]) -> Bool {
        self.loop.preconditionInEventLoop()
        guard !self.finished, !events.isEmpty else { return false }
        // By index: each event's buffers are read in place, not copied (and retained) first.
        for index in events.indices {
            if let core = self.core {
                core.write0(NIOAny(events[index].bytes), promise: nil)
            } else if let raw = self.raw {
                raw.write(NIOAny(self.addedRaw ? events[index].chunk : events[index].bytes), promise: nil)
            } else {
                self.channel.write(HTTPResponsePart.body(events[index].bytes), promise: nil)
            }
            self.unflushedBytes += events[index].bytes.readableBytes
        }
        defer { self.needsFlush = true }
        return !self.needsFlush
    }

    /// Flushes what was written since the last flush; `false` when the client has not taken more
    /// than `maximumBytes` since it stopped reading (the caller then cuts it).
    func flush(maximumBytes: Int) -> Bool {
        self.loop.preconditionInEventLoop()
        guard self.needsFlush, !self.finished else { return true }
        self.needsFlush = false
        self.lastWrite = .now()
        if self.channel.isWritable {
            self.unwritableSince = nil
            self.bytesWhileUnwritable = 0
        } else {
            self.unwritableSince = self.unwritableSince ?? self.lastWrite
            self.bytesWhileUnwritable += self.unflushedBytes
        }
        self.unflushedBytes = 0
        if let core = self.core {
            core.flush0()
        } else if let raw = self.raw {
            raw.flush()
        } else {
            self.channel.flush()
        }
        return self.bytesWhileUnwritable <= maximumBytes
    }

    /// Reads what a write reads first: the sink, its channel and the channel's writability. A
    /// drain reads them for several sinks in a row before it writes to them (see
    /// ``LoopWriter/sinksReadAhead``): at 10 000 subscribers they are out of the cache, and read
    /// together their misses overlap, where a write at a time waits for each in turn.
    func readAhead() {
        _ = self.channel.isWritable
    }

    /// Whether nothing was written for `interval`.
    func isIdle(for interval: TimeAmount, now: NIODeadline) -> Bool {
        self.loop.preconditionInEventLoop()
        return now - self.lastWrite >= interval
    }

    /// Whether the client has not read for longer than `timeout`.
    func isStuck(for timeout: TimeAmount, now: NIODeadline) -> Bool {
        self.loop.preconditionInEventLoop()
        if self.channel.isWritable {
            self.unwritableSince = nil
            self.bytesWhileUnwritable = 0
            return false
        }
        return self.unwritableSince.map { now - $0 >= timeout } ?? false
    }

    /// Stops writing, once the events already handed to the loop's writer are written; the
    /// handler ends the response.
    func stop() {
        LoopWriter.forLoop(self.loop).afterWrites {
            guard !self.finished else { return }
            self.finished = true
            if let raw = self.raw, self.addedRaw {
                raw.pipeline.syncOperations.removeHandler(context: raw, promise: nil)
            }
            (self.raw, self.core) = (nil, nil)
            self.done.succeed()
        }
    }
}

/// The subscribers of one event that are written directly, by event loop.
struct DirectWrites {
    private var groups: [(writer: LoopWriter, targets: [(SubscriberQueue, ChannelSink)])] = []
    /// The number of subscribers.
    private(set) var count = 0

    mutating func add(_ sink: ChannelSink, of queue: SubscriberQueue, to writer: LoopWriter) {
        self.count += 1
        // A handful of event loops: a linear search beats hashing.
        if let index = self.groups.firstIndex(where: { $0.writer === writer }) {
            self.groups[index].targets.append((queue, sink))
        } else {
            self.groups.append((writer, [(queue, sink)]))
        }
    }

    /// Hands `event` to each loop's writer, once per loop. Call in the order of the events. Returns
    /// the writers that were behind (see ``LoopWriter/enqueue(_:to:)``).
    func enqueue(_ event: EncodedEvent) -> [LoopWriter] {
        var behind: [LoopWriter] = []
        for group in self.groups where group.writer.enqueue(event, to: group.targets) { behind.append(group.writer) }
        return behind
    }
}

/// The writes of one event loop: a publish queues its deliveries to the sinks of that loop, and
/// one job on the loop writes everything queued, then flushes each sink once. Under load the
/// deliveries of many publishes share a flush, and so a system call.
///
/// How long a drain waits for more events to write with the first is what makes them share. For an
/// event with at least ``minimumSubscribersToHold`` subscribers on the loop, a saturated writer
/// (one that could not write each event on its own with time to spare: see ``busyShare``) waits
/// ``holdFactor`` times the CPU time of its last drain that wrote such an event (at most
/// ``maximumHold``); a saturated writer, or one that an event finds less than ``maximumDelay``
/// after its last drain ended, waits that drain's time on the clock (at most ``maximumDelay``) if
/// it is longer. Saturated, at 10 000 subscribers and 100 publishes/s, the wait by the CPU time
/// gave 1.3 times the deliveries per server CPU-second and a lower p99 latency; at 10 publishes/s,
/// where the writer is not saturated, it gave 1.3 to 1.6 times as many for a p50 and p99 two to
/// three times as long, and so it does not apply there, and neither does the wait by the clock,
/// which made every event wait 5 ms and gathered nothing (see docs/PERFORMANCE.md). A saturated
/// writer idle for ``idleTime`` does not wait more than ``maximumDelay``, so the first event after
/// a quiet moment leaves soon, and there is no wait at all for an event for one subscriber of the
/// loop (see ``enqueue(_:to:)``).
///
/// A drain writes ``maximumSinksAtOnce`` sinks at a time, and the loop runs what else waits for it
/// between the parts; what waits for the drain's writes runs after the last.
final class LoopWriter: Sendable {
    let loop: any EventLoop
    /// The CPU time of the calling thread so far.
    private let threadCPUTime: @Sendable () -> TimeAmount
    private let pending = NIOLockedValueBox(Pending())

    private struct Pending {
        /// Whether a drain is scheduled (and has not begun).
        var scheduled = false
        var writes: [(EncodedEvent, [(SubscriberQueue, ChannelSink)])] = []
        /// The writes (events times subscribers) in `writes`.
        var backlog = 0
        /// What runs once `writes` are written.
        var then: [@Sendable () -> Void] = []
        /// What runs once the drain under way is done (see `afterWrites`).
        var thenDrained: [@Sendable () -> Void] = []
        /// Whether a drain came due while another was under way: it begins when that one is done.
        var drainWhenDone = false
        /// The last drain's time on the clock, at most `maximumDelay`.
        var delay = TimeAmount.zero
        /// `holdFactor` times the CPU time of the last drain that wrote an event for at least
        /// `minimumSubscribersToHold` subscribers of the loop (a wide event), at most
        /// `maximumHold`, if that drain found the writer saturated (see `drained`); zero if not.
        var hold = TimeAmount.zero
        /// When the last drain of wide events began, on the loop's clock.
        var lastWideDrain: NIODeadline?
        /// The CPU time a write took in the last drain of one wide event (what a write costs when
        /// each event goes out on its own), and when that drain began.
        var writeCPU: (each: TimeAmount, measured: NIODeadline)?
        /// When the last drain of wide events that did not wait by the CPU time began.
        var lastUnheldDrain: NIODeadline?
        /// The share of the loop's time that writing each wide event on its own takes, averaged
        /// over the last drains of wide events (see `drained`); `nil` while `writeCPU` is unknown
        /// or too old.
        var load: Double?
        /// When the last drain ended on the loop's clock, or `distantFuture` while one is under way.
        var ended = NIODeadline.uptimeNanoseconds(0)
        /// Whether a drain is under way: begun, and its last part not written yet.
        var draining: Bool { self.ended == .distantFuture }
        /// Until when the scheduled drain waits by choice: the events queued meanwhile do not make
        /// the writer behind, up to ``maximumEventsHeld``.
        var holdUntil = NIODeadline.uptimeNanoseconds(0)
        /// Whether the scheduled drain waits by the CPU time of the last (`hold`).
        var holds = false

        typealias Queued = (
            writes: [(EncodedEvent, [(SubscriberQueue, ChannelSink)])], then: [@Sendable () -> Void], held: Bool
        )

        /// Takes what is queued, what waits for it, and whether the drain waited by the CPU time of
        /// the last: the next event schedules a drain again.
        mutating func take() -> Queued {
            self.scheduled = false
            self.backlog = 0
            self.holdUntil = .uptimeNanoseconds(0)
            defer { (self.writes, self.then, self.holds) = ([], [], false) }
            return (self.writes, self.then, self.holds)
        }

        /// Sets the next drain's wait by the CPU time after a drain of wide events that began at
        /// `started`, waited by the CPU time or not (`held`), and took `cpu` for `events` wide
        /// events, `writes` writes in all. The writer waits only while it is saturated: when the
        /// events queued behind each other with no wait by choice, or when, a write costing what
        /// it cost in the last drain of one event, writing each event on its own takes at least
        /// `busyShare` of the loop's time (`load`: the share of the time since the last drain of
        /// wide events that this drain's writes would take, averaged with `loadWeight` over the
        /// drains since the writer was last idle, so that one event that comes early does not make
        /// the writer wait). That cost is measured in drains of one event only (a drain that
        /// gathers several costs less a write); when it is older than `maximumWriteCPUAge` and the
        /// writer has waited that long, the next drain goes with no wait, and the one after knows
        /// again.
        mutating func drained(started: NIODeadline, held: Bool, cpu: TimeAmount, events: Int, writes: Int) {
            if events == 1 { self.writeCPU = (.nanoseconds(cpu.nanoseconds / Int64(writes)), started) }
            if let writeCPU = self.writeCPU, let last = self.lastWideDrain,
                started - writeCPU.measured < LoopWriter.maximumWriteCPUAge
            {
                let since = started - last
                // Writes that would take longer than the time since the last drain: the whole of it.
                let need = Double(writeCPU.each.nanoseconds) * Double(writes)
                let share = min(1, need / Double(max(since.nanoseconds, 1)))
                if let load = self.load, since < LoopWriter.idleTime {
                    self.load = load + (share - load) * LoopWriter.loadWeight
                } else {
                    self.load = share
                }
            } else {
                self.load = nil
            }
            let saturated: Bool
            if events > 1, !held {
                saturated = true
            } else if let load = self.load {
                saturated = load >= LoopWriter.busyShare
            } else {
                saturated = held && started - (self.lastUnheldDrain ?? started) < LoopWriter.maximumWriteCPUAge
            }
            self.hold = saturated ? min(cpu * LoopWriter.holdFactor, LoopWriter.maximumHold) : .zero
            self.lastWideDrain = started
            if !held { self.lastUnheldDrain = started }
        }
    }

    /// The longest a drain waits for more events because the last took that long on the clock, and
    /// how long a writer that is not saturated must have been idle to write an event at once.
    static let maximumDelay = TimeAmount.milliseconds(5)
    /// The sinks a drain writes before it lets the loop run what else waits for it. At 10 000
    /// subscribers, 5 000 a loop, a drain of one event takes 20 to 40 ms, and the answer to a
    /// publish on that loop would wait for all of it.
    static let maximumSinksAtOnce = 256
    /// How many sinks a drain reads ahead of its writes (see ``ChannelSink/readAhead()``). At
    /// 10 000 subscribers and 10 publishes/s it gave 4 to 6 % more deliveries per server
    /// CPU-second (medians of two runs of 6 alternated pairs), more in 15 of 16 pairs in all (see
    /// docs/PERFORMANCE.md).
    static let sinksReadAhead = 32
    /// How many times the CPU time of its last drain of an event for many subscribers (see
    /// ``minimumSubscribersToHold``) a busy writer waits for more events. CPU time, not time on the
    /// clock: a longer wait by the clock cost throughput at 1 000 subscribers flat out, where the
    /// drains share the cores with the publishers (see docs/PERFORMANCE.md).
    static let holdFactor: Int64 = 3
    /// The share of the loop's time that writing each event on its own would take, from which a
    /// writer waits by the CPU time. A loop with room to spare writes each event as it comes: at
    /// 10 000 subscribers and 10 publishes/s (a drain of 38 to 75 ms of CPU time a loop every
    /// 100 ms), the wait made the p50 and p99 latency two to three times as long to save a quarter
    /// to a third of the CPU per delivery (see docs/PERFORMANCE.md).
    static let busyShare = 0.8
    /// The weight of the last drain in the average share of the loop's time that writing each
    /// event on its own takes: at 10 publishes/s the publishes come 56 to 167 ms apart on a busy
    /// machine, and a drain's share alone would make the writer wait after each that came early.
    static let loadWeight = 0.25
    /// How long the CPU time of a write measured in a drain of one wide event stands, for a writer
    /// that waits (its drains gather several events, and measure nothing).
    static let maximumWriteCPUAge = TimeAmount.seconds(1)
    /// The longest a drain waits for more events because of the CPU time of the last.
    static let maximumHold = TimeAmount.milliseconds(200)
    /// How long a writer must have been idle (no drain running or ended) for its next drain to wait
    /// at most ``maximumDelay``, whatever the CPU time of the last.
    static let idleTime = TimeAmount.milliseconds(200)
    /// The subscribers on the loop an event needs for a busy writer to wait by the CPU time of its
    /// last drain of such an event. An event for a few is most likely one of many topics, each
    /// event for other subscribers, where the wait gathers nothing to share: on 1 000 topics with
    /// 2 subscribers each, publishers flat out, it cost 11 to 31 % of the p50 latency. With 50
    /// subscribers a loop on one topic it gave 32 % more deliveries per CPU-second for 2.3 times
    /// the p50 (see docs/PERFORMANCE.md): below this, the latency a small topic's subscribers see
    /// comes first.
    static let minimumSubscribersToHold = 100
    /// The events that may queue while a drain waits by choice before the writer is behind. With 256
    /// the p99 at 1 000 subscribers flat out rose from 69 to 401 ms; with none, the publishers
    /// waited for every held drain, and at 10 000 subscribers and 100 publishes/s they published
    /// half as often.
    static let maximumEventsHeld = 16
    /// The writes (events times subscribers) queued and not begun past which the writer is behind,
    /// and a publisher waits (see ``Hub/publish(_:)``): 3 to 20 ms of the loop's work, at 1.5 to
    /// 9.5 µs of server CPU per delivery (1k subscribers flat out, and 10k at 10 publishes/s).
    static let maximumBacklog = 2_000
    /// The events queued and not begun past which the writer is behind too, however few
    /// subscribers they have. On 1 000 topics with a subscriber each, publishers answered at once
    /// ran ahead of the drains, and the events waited behind each other: p99 0.75 against 0.92 ms
    /// with it, lower in 8 of 8 pairs, at the same publishes/s (see docs/PERFORMANCE.md). With 500
    /// subscribers an event on a loop (1k subscribers, two loops), it is the backlog above.
    static let maximumQueuedEvents = 4

    private init(loop: any EventLoop, threadCPUTime: @escaping @Sendable () -> TimeAmount) {
        self.loop = loop
        self.threadCPUTime = threadCPUTime
    }

    /// The CPU time of the calling thread so far.
    static func threadCPUTime() -> TimeAmount {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return .seconds(Int64(time.tv_sec)) + .nanoseconds(Int64(time.tv_nsec))
    }

    /// Queues `event` for `targets`. Returns whether the writer is behind: at least
    /// ``maximumBacklog`` writes, or ``maximumQueuedEvents`` events, queued before wait for the
    /// loop still (their drain has not begun), unless the drain waits by choice and fewer than
    /// ``maximumEventsHeld`` events are queued.
    @discardableResult
    func enqueue(_ event: EncodedEvent, to targets: [(SubscriberQueue, ChannelSink)]) -> Bool {
        let now = self.loop.now
        let (schedule, delay, behind) = self.pending.withLockedValue { pending in
            let held = now < pending.holdUntil && pending.writes.count < Self.maximumEventsHeld
            let behind = !held && (pending.backlog >= Self.maximumBacklog || pending.writes.count >= Self.maximumQueuedEvents)
            pending.writes.append((event, targets))
            pending.backlog += targets.count
            guard !pending.scheduled else { return (false, TimeAmount.zero, behind) }
            pending.scheduled = true
            // No drain under way (`ended` is then in the future) for `idleFor`.
            let idleFor = pending.ended < now ? now - pending.ended : .zero
            // The wait by the clock is for events that come close together: a writer that is not
            // saturated, idle for as long as that wait at most, writes at once.
            if pending.hold == .zero, idleFor >= Self.maximumDelay { return (true, .zero, behind) }
            let idle = idleFor >= Self.idleTime
            guard !idle, targets.count >= Self.minimumSubscribersToHold else { return (true, pending.delay, behind) }
            let delay = max(pending.delay, pending.hold)
            pending.holdUntil = now + delay
            pending.holds = pending.hold > .zero
            return (true, delay, behind)
        }
        // An event for one subscriber of this loop is written at once: waiting for more would save
        // no write unless they were for the same subscriber (on 1 000 topics, say, they are not).
        if schedule, delay == .zero || targets.count == 1 {
            self.loop.execute { self.drain() }
        } else if schedule {
            // A loop that shuts down fails what it has scheduled (it runs what it was told to
            // execute): its channels close, and whoever waits for the writes must not wait forever.
            self.loop.scheduleTask(in: delay) { self.drain() }.futureResult.whenFailure { _ in self.abandon() }
        }
        return behind
    }

    /// Drops what is queued, unwritten, and runs what waits for it: the loop shut down before
    /// the drain (see ``enqueue(_:to:)``).
    private func abandon() {
        for body in self.pending.withLockedValue({ $0.take() }).then { body() }
    }

    /// Runs `body` on the loop once what is queued so far is written.
    func afterWrites(_ body: @escaping @Sendable () -> Void) {
        let now = self.pending.withLockedValue { pending in
            if pending.scheduled {
                pending.then.append(body)
            } else if pending.draining {
                pending.thenDrained.append(body)
            }
            return !pending.scheduled && !pending.draining
        }
        if now { self.loop.execute(body) }
    }

    /// A drain under way: what it writes, how far it got, and the CPU time its parts took.
    private struct Drain: Sendable {
        let writes: [(EncodedEvent, [(SubscriberQueue, ChannelSink)])]
        let then: [@Sendable () -> Void]
        /// Whether it waited by the CPU time of the last (see `Pending.drained`).
        let held: Bool
        let started: NIODeadline
        /// The events for at least `minimumSubscribersToHold` subscribers of the loop (wide), and
        /// their writes.
        let wideEvents: Int
        let wideWrites: Int
        /// The CPU time of the parts written so far; `nil` when there is no wide event (see
        /// `drain()`).
        var cpu: TimeAmount?
        /// The first event of the run being written, and the next of its targets.
        var run: Int
        var target = 0
    }

    private func drain() {
        let started = self.loop.now
        let taken = self.pending.withLockedValue { pending -> Pending.Queued? in
            // The drain under way begins this one when it is done.
            if pending.draining {
                pending.drainWhenDone = true
                return nil
            }
            pending.ended = .distantFuture  // the writer is busy
            return pending.take()
        }
        guard let (writes, then, held) = taken else { return }
        // Only the drains that write an event for enough subscribers to wait by the CPU time read
        // the thread's CPU clock, a system call (on 1 000 topics, a drain for each publish); the
        // others leave the last such drain's figure in place.
        var (wideEvents, wideWrites) = (0, 0)
        for index in writes.indices where writes[index].1.count >= Self.minimumSubscribersToHold {
            wideEvents += 1
            wideWrites += writes[index].1.count
        }
        self.write(
            Drain(
                writes: writes, then: then, held: held, started: started, wideEvents: wideEvents,
                wideWrites: wideWrites, cpu: wideEvents == 0 ? nil : .zero, run: writes.startIndex
            )
        )
    }

    /// Writes the next part of `drain`, ``maximumSinksAtOnce`` sinks at most, then leaves the loop
    /// to what else waits for it (a publish's answer, say) before the part after, or ends the drain.
    private func write(_ drain: Drain) {
        var drain = drain
        let startedCPU = drain.cpu.map { _ in self.threadCPUTime() }
        // Sink by sink: each run of events for the same subscribers (one route's) goes to a sink in
        // one go, so that a drain visits each sink, its channel and its pipeline once, not once an
        // event (thousands of them do not stay in the caches from one pass to the next). With one
        // run, as when the loop keeps up, each sink also flushes at once; with several, once the
        // part is written.
        let writes = drain.writes
        var flush: [(SubscriberQueue, ChannelSink)] = []
        var sinks = 0
        while drain.run < writes.endIndex, sinks < Self.maximumSinksAtOnce {
            let targets = writes[drain.run].1
            var end = drain.run + 1
            while end < writes.endIndex, Self.same(writes[end].1, targets) { end += 1 }
            let onlyRun = drain.run == writes.startIndex && end == writes.endIndex
            let events = writes[drain.run..<end].map { $0.0 }
            let last = min(targets.count, drain.target + Self.maximumSinksAtOnce - sinks)
            var joined: [EncodedEvent]?  // the run as one buffer, made once for the sinks over TLS
            var readAhead = drain.target
            for index in drain.target..<last {
                if index == readAhead {
                    readAhead = min(index + Self.sinksReadAhead, last)
                    for ahead in index..<readAhead { targets[ahead].1.readAhead() }
                }
                let (queue, sink) = targets[index]
                var run = events
                if sink.isOverTLS, events.count > 1 {
                    run = joined ?? [EncodedEvent(joining: events)]
                    joined = run
                }
                let first = sink.write(run)  // its first writes since the last flush
                if first, onlyRun {
                    if !sink.flush(maximumBytes: queue.limits.bytes) { queue.cut(reason: .tooManyBytes) }
                } else if first {
                    flush.append((queue, sink))
                }
            }
            sinks += last - drain.target
            (drain.run, drain.target) = last < targets.count ? (drain.run, last) : (end, 0)
        }
        for (queue, sink) in flush where !sink.flush(maximumBytes: queue.limits.bytes) {
            queue.cut(reason: .tooManyBytes)
        }
        if let startedCPU, let cpu = drain.cpu { drain.cpu = cpu + (self.threadCPUTime() - startedCPU) }
        guard drain.run == writes.endIndex else {
            let rest = drain
            self.loop.execute { self.write(rest) }
            return
        }
        for body in drain.then { body() }
        // The next drain's wait (see `LoopWriter`).
        let ended = self.loop.now
        let delay = min(ended - drain.started, Self.maximumDelay)
        let (then, next) = self.pending.withLockedValue { pending in
            (pending.delay, pending.ended) = (delay, ended)
            if let cpu = drain.cpu {
                pending.drained(
                    started: drain.started, held: drain.held, cpu: cpu, events: drain.wideEvents, writes: drain.wideWrites
                )
            }
            defer { (pending.thenDrained, pending.drainWhenDone) = ([], false) }
            return (pending.thenDrained, pending.drainWhenDone)
        }
        for body in then { body() }
        if next { self.drain() }
    }

    /// Whether two lists of targets are one array (the same route's).
    private static func same(_ one: [(SubscriberQueue, ChannelSink)], _ other: [(SubscriberQueue, ChannelSink)]) -> Bool {
        one.withUnsafeBufferPointer { one in
            other.withUnsafeBufferPointer { other in one.baseAddress == other.baseAddress && one.count == other.count }
        }
    }

    /// One writer per event loop, made when first needed; `threadCPUTime` gives the CPU time of
    /// the calling thread to the writer made (tests give their own clock).
    static func forLoop(
        _ loop: any EventLoop,
        threadCPUTime: @escaping @Sendable () -> TimeAmount = LoopWriter.threadCPUTime
    ) -> LoopWriter {
        Self.writers.withLockedValue { writers in
            if let writer = writers[ObjectIdentifier(loop)] { return writer }
            let writer = LoopWriter(loop: loop, threadCPUTime: threadCPUTime)
            writers[ObjectIdentifier(loop)] = writer
            return writer
        }
    }

    private static let writers = NIOLockedValueBox<[ObjectIdentifier: LoopWriter]>([:])
}
