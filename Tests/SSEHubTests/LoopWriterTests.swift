//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import NIOSSL
import Testing

@testable import SSEHub

/// An event loop's writer, on an embedded loop whose clock the test moves.
@Suite("Loop writers")
struct LoopWriterTests {
    /// The bodies the channel has written so far.
    func written(_ channel: EmbeddedChannel) throws -> [String] {
        var bodies: [String] = []
        while let part = try channel.readOutbound(as: HTTPResponsePart.self) {
            if case .body(let bytes) = part { bodies.append(String(buffer: bytes)) }
        }
        return bodies
    }

    /// A subscriber's queue and its sink on `channel`.
    func subscriber(on channel: EmbeddedChannel) -> (SubscriberQueue, ChannelSink) {
        (SubscriberQueue(limits: .init(events: 10, bytes: 1 << 20)), ChannelSink(channel: channel))
    }

    /// A thread's CPU clock that moves on by `step` each time it is read: a drain that reads it
    /// takes `step` of CPU time (and no time on the loop's clock, which only the test moves).
    final class CPUClock: Sendable {
        private let state: NIOLockedValueBox<(now: TimeAmount, step: TimeAmount, reads: Int)>

        init(step: TimeAmount) { self.state = NIOLockedValueBox((.zero, step, 0)) }

        var step: TimeAmount {
            get { self.state.withLockedValue { $0.step } }
            set { self.state.withLockedValue { $0.step = newValue } }
        }

        var reads: Int { self.state.withLockedValue { $0.reads } }

        @Sendable func read() -> TimeAmount {
            self.state.withLockedValue { state in
                state.reads += 1
                state.now = state.now + state.step
                return state.now
            }
        }
    }

    /// The writer of `loop` (whose sinks wait for it when they stop), made with drains that each
    /// take `cpu` of CPU time.
    func writer(on loop: any EventLoop, drainsTaking cpu: TimeAmount) -> LoopWriter {
        LoopWriter.forLoop(loop, threadCPUTime: CPUClock(step: cpu).read)
    }

    @Test func aDrainWaitsForMoreEventsAndASinkStopsOnlyAfterWhatWasHandedOver() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(1))
        let sink = subscribers.all[0].1
        let stopped = NIOLockedValueBox(false)
        sink.done.futureResult.whenSuccess { stopped.withLockedValue { $0 = true } }

        // The next waits for more events to share its writes (see `LoopWriter`).
        subscribers.send("two")
        sink.stop()
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel).isEmpty)
        #expect(!stopped.withLockedValue { $0 })

        subscribers.loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(subscribers.channel) == ["two"], "written before the sink stops")
        #expect(try self.written(subscribers.other) == ["two"])
        #expect(stopped.withLockedValue { $0 })

        subscribers.send("three")
        subscribers.loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(subscribers.channel).isEmpty, "nothing after the sink stopped")
        #expect(try self.written(subscribers.other) == ["three"])
        subscribers.stop()
    }

    /// An app's own event loops shut down with a drain scheduled: what waits for its writes (a
    /// publisher held back by the flow control, a sink stopping) goes on rather than hang.
    @Test func whatWaitsForADrainGoesOnWhenTheLoopShutsDownFirst() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(1))
        subscribers.send("two")  // the drain waits (see above)
        let afterWrites = NIOLockedValueBox(false)
        subscribers.writer.afterWrites { afterWrites.withLockedValue { $0 = true } }
        let stopped = NIOLockedValueBox(false)
        subscribers.all[0].1.done.futureResult.whenSuccess { stopped.withLockedValue { $0 = true } }
        subscribers.stop()
        #expect(!afterWrites.withLockedValue { $0 } && !stopped.withLockedValue { $0 })
        try subscribers.loop.syncShutdownGracefully()
        #expect(afterWrites.withLockedValue { $0 }, "answered, though nothing was written")
        #expect(stopped.withLockedValue { $0 })
        #expect(try self.written(subscribers.channel).isEmpty)
    }

    @Test func anEventForOneSubscriberDoesNotWait() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(1))
        let (first, second) = (subscribers.all[0], subscribers.all[1])

        // After a drain that took some time, an event for one subscriber is written at once: there
        // is no other to share its write with.
        subscribers.writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: [first])
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two"])

        // Events that come while it waits go with it.
        subscribers.send("three")
        subscribers.writer.enqueue(EncodedEvent(ByteBuffer(string: "four")), to: [second])
        subscribers.loop.run()
        #expect(try self.written(subscribers.other).isEmpty, "waits for more")
        subscribers.loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(subscribers.channel) == ["three"])
        #expect(try self.written(subscribers.other) == ["three", "four"])
        subscribers.stop()
    }

    /// An event for fewer subscribers of the loop than ``LoopWriter/minimumSubscribersToHold``
    /// waits as long as the last drain took on the clock, not by its CPU time.
    @Test func anEventForAFewSubscribersDoesNotWaitByTheCPUTime() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        let few = Array(subscribers.all.prefix(2))
        #expect(few.count < LoopWriter.minimumSubscribersToHold)
        subscribers.writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: few)
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two"], "the last drain took no time on the clock")
        #expect(try self.written(subscribers.other) == ["two"])
        subscribers.stop()
    }

    /// A drain that writes no event for enough subscribers to wait by the CPU time leaves the
    /// thread's CPU clock (a system call) unread, and the wait of the last drain that read it as
    /// it was.
    @Test func aDrainOfEventsForAFewSubscribersLeavesTheWaitByTheCPUTimeAsItWas() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        let reads = subscribers.clock.reads
        subscribers.clock.step = .milliseconds(1)
        subscribers.writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: Array(subscribers.all.prefix(2)))
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two"])
        #expect(subscribers.clock.reads == reads, "not read for an event for 2 subscribers")

        subscribers.send("three")
        let three = try self.written(after: .milliseconds(30), to: subscribers, "3 times the drain of \"one\"")
        #expect(three == ["three"])
        #expect(subscribers.clock.reads == reads + 2)
        subscribers.stop()
    }

    /// As many subscribers on one loop as make a busy writer wait by the CPU time of its last
    /// drain, the first two on the channels the tests read, and the loop's writer.
    struct Subscribers {
        let channel: EmbeddedChannel
        let other: EmbeddedChannel
        let all: [(SubscriberQueue, ChannelSink)]
        let writer: LoopWriter
        /// The CPU clock of the writer's drains.
        let clock: CPUClock
        var loop: EmbeddedEventLoop { self.channel.embeddedEventLoop }

        /// Queues `event` for all; whether the writer is behind.
        @discardableResult
        func send(_ event: String) -> Bool {
            self.writer.enqueue(EncodedEvent(ByteBuffer(string: event)), to: self.all)
        }

        func stop() {
            for (_, sink) in self.all { sink.stop() }
            self.loop.run()
        }
    }

    /// The subscribers, after the first drains of a writer whose drains take `cpu` of CPU time:
    /// they ran at once, the second right after the first, which makes the writer saturated (a
    /// drain's CPU time each time the loop's clock has not moved) and busy until the test moves
    /// the loop's clock on.
    func afterAFirstDrain(taking cpu: TimeAmount) throws -> Subscribers {
        let loop = EmbeddedEventLoop()
        let channels = (0..<LoopWriter.minimumSubscribersToHold).map { _ in EmbeddedChannel(loop: loop) }
        let clock = CPUClock(step: cpu)
        let subscribers = Subscribers(
            channel: channels[0], other: channels[1], all: channels.map(self.subscriber(on:)),
            writer: LoopWriter.forLoop(loop, threadCPUTime: clock.read), clock: clock
        )
        subscribers.send("zero")
        loop.run()
        #expect(try self.written(subscribers.channel) == ["zero"], "nothing to wait for before the first drain")
        subscribers.send("one")
        loop.run()
        #expect(try self.written(subscribers.channel) == ["one"], "no wait: the writer was not known to be saturated")
        #expect(try self.written(subscribers.other) == ["zero", "one"])
        return subscribers
    }

    /// What the first of `subscribers` was written once the loop's clock moved on by `wait`,
    /// having been written nothing 1 ms before (`comment` says why the drain waits that long).
    func written(
        after wait: TimeAmount,
        to subscribers: Subscribers,
        _ comment: Comment? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> [String] {
        subscribers.loop.advanceTime(by: wait - .milliseconds(1))
        #expect(try self.written(subscribers.channel).isEmpty, comment, sourceLocation: sourceLocation)
        subscribers.loop.advanceTime(by: .milliseconds(1))
        return try self.written(subscribers.channel)
    }

    @Test(arguments: [(Int64(10), Int64(30)), (100, 200)])
    func aBusyWriterWaitsThreeTimesTheCPUTimeOfItsLastDrainAtMostTheMaximumHold(cpu: Int64, wait: Int64) throws {
        #expect(LoopWriter.maximumHold == .milliseconds(200))
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(cpu))
        subscribers.send("two")
        subscribers.loop.advanceTime(by: .milliseconds(wait - 1))
        #expect(try self.written(subscribers.channel).isEmpty)
        subscribers.send("three")
        subscribers.loop.advanceTime(by: .milliseconds(1))
        #expect(try self.written(subscribers.channel) == ["two", "three"])
        #expect(try self.written(subscribers.other) == ["two", "three"])
        subscribers.stop()
    }

    /// Sends events one by one, the loop's clock moving on by `interval` before each, until one
    /// waits (then written once its wait is over) or `count` have gone; returns how many went
    /// out at once.
    func sentAtOnce(_ count: Int, every interval: TimeAmount, to subscribers: Subscribers) throws -> Int {
        for sent in 0..<count {
            subscribers.loop.advanceTime(by: interval)
            subscribers.send("\(sent)")
            subscribers.loop.run()
            if try self.written(subscribers.channel) != ["\(sent)"] {
                subscribers.loop.advanceTime(by: LoopWriter.maximumHold)
                #expect(try self.written(subscribers.channel) == ["\(sent)"], "written once its wait is over")
                return sent
            }
        }
        return count
    }

    @Test func anIdleWriterWaitsAtMostTheMaximumDelayAndIsSaturatedAgainWhenEventsComeFast() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        subscribers.send("two")
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two"], "no wait: the last drain took no time on the clock")

        // 10 ms of writing in the 200 ms since the drain before: a load of 0.05 starts the
        // average afresh. Then drains of 10 ms in no time at all, a load of 1 each: the average
        // goes to 0.29, 0.47, 0.60, 0.70, 0.78 and 0.83, past the busy share of 0.8 at the sixth.
        #expect(LoopWriter.busyShare == 0.8 && LoopWriter.loadWeight == 0.25)
        #expect(try self.sentAtOnce(10, every: .zero, to: subscribers) == 6)
        subscribers.stop()
    }

    /// A writer whose drains would take less than ``LoopWriter/busyShare`` of the time, on
    /// average, writing each event on its own, writes each when it comes.
    @Test(arguments: [(Int64(7_900), false), (8_100, true)])
    func aWriterWaitsByTheCPUTimeOnlyWhileItsWritesTakeTheBusyShareOfTheTime(microseconds: Int64, waits: Bool) throws {
        let subscribers = try self.afterAFirstDrain(taking: .microseconds(microseconds))
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        // Drains taking `microseconds` of each 10 ms: the average goes from the share after the
        // idle moment up towards it, past 0.8 at the 17th drain if it is 0.81.
        #expect(try self.sentAtOnce(30, every: .milliseconds(10), to: subscribers) == (waits ? 17 : 30))
        subscribers.stop()
    }

    /// Events that queue behind each other with no wait by choice make the writer saturated,
    /// whatever a write costs (here the 200 writes take 2 ms of the 200 since the drain before).
    @Test func eventsQueuedWithNoWaitByChoiceMakeTheWriterWait() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(1))
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        subscribers.send("two")
        subscribers.send("three")
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two", "three"], "no wait after an idle moment")
        subscribers.send("four")
        #expect(try self.written(after: .milliseconds(3), to: subscribers) == ["four"])
        subscribers.stop()
    }

    /// A writer that waits gathers several events a drain, which measures nothing of what a write
    /// costs on its own: after ``LoopWriter/maximumWriteCPUAge`` of that, it stops waiting, and a
    /// drain of one event measures again.
    @Test func aWriterThatWaitsMeasuresTheCostOfAWriteAgainAfterTheMaximumAge() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        var waited = TimeAmount.zero
        // Three events each 30 ms wait: 300 writes of the 0.1 ms measured, in the 30 ms since the
        // drain before, saturated.
        while waited < LoopWriter.maximumWriteCPUAge {
            for event in ["a", "b", "c"] { subscribers.send(event) }
            #expect(try self.written(after: .milliseconds(30), to: subscribers) == ["a", "b", "c"])
            waited = waited + .milliseconds(30)
        }
        subscribers.send("d")
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["d"], "measures again")
        subscribers.stop()
    }

    /// An event that comes while a drain runs finds the writer busy, however long ago the drain
    /// before it ended.
    @Test func aWriterIsBusyWhileADrainRuns() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        subscribers.send("two")
        // Runs in the drain of "two", as a publisher held back by the flow control does.
        subscribers.writer.afterWrites { subscribers.send("three") }
        subscribers.loop.run()
        #expect(try self.written(subscribers.channel) == ["two"])
        #expect(try self.written(after: .milliseconds(30), to: subscribers) == ["three"])
        subscribers.stop()
    }

    /// While a drain waits by choice, the events queued do not make the writer behind (a publisher
    /// would wait for a loop that has nothing to do), up to the maximum held.
    @Test func aWriterWaitingByChoiceIsNotBehindUntilTheMaximumOfEventsHeld() throws {
        let subscribers = try self.afterAFirstDrain(taking: .milliseconds(10))
        #expect(LoopWriter.maximumEventsHeld > LoopWriter.maximumQueuedEvents)
        let events = (0...LoopWriter.maximumEventsHeld).map { "e\($0)" }
        for event in events.dropLast() { #expect(!subscribers.send(event), "\(event)") }
        #expect(subscribers.send(events.last!), "behind")
        subscribers.loop.advanceTime(by: .milliseconds(30))
        #expect(try self.written(subscribers.channel) == events)

        // With no wait (after 200 ms idle), the writer is behind at the usual maximum.
        let late = (0...LoopWriter.maximumQueuedEvents).map { "late\($0)" }
        subscribers.loop.advanceTime(by: LoopWriter.idleTime)
        for event in late.dropLast() { #expect(!subscribers.send(event), "\(event)") }
        #expect(subscribers.send(late.last!), "behind")
        subscribers.loop.run()
        #expect(try self.written(subscribers.other) == events + late)
        subscribers.stop()
    }

    @Test func aWriterIsBehindWhileTheMaximumBacklogOfWritesWaitsForTheLoop() throws {
        let loop = EmbeddedEventLoop()
        let channels = (0..<LoopWriter.maximumBacklog).map { _ in EmbeddedChannel(loop: loop) }
        let targets = channels.map(self.subscriber(on:))
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))

        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: Array(targets.dropFirst())))
        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: [targets[0]]), "one write short of the backlog")
        #expect(writer.enqueue(EncodedEvent(ByteBuffer(string: "three")), to: [targets[0]]), "the backlog waits for the loop")
        let written = NIOLockedValueBox(false)
        writer.afterWrites { written.withLockedValue { $0 = true } }
        #expect(!written.withLockedValue { $0 })
        loop.run()
        #expect(try self.written(channels[0]) == ["two", "three"])
        #expect(try self.written(channels[1]) == ["one"])
        #expect(written.withLockedValue { $0 }, "once all are written")
        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "four")), to: targets), "caught up")
        loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(channels[0]) == ["four"])
        for (_, sink) in targets { sink.stop() }
        loop.run()
    }

    @Test func aWriterIsBehindWhileTheMaximumOfEventsWaitsForTheLoopHoweverFewTheirWrites() throws {
        let channel = EmbeddedChannel()
        let loop = channel.embeddedEventLoop
        let (queue, sink) = self.subscriber(on: channel)
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))
        let events = (0...LoopWriter.maximumQueuedEvents).map { "e\($0)" }
        for event in events.dropLast() {
            #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: event)), to: [(queue, sink)]), "\(event)")
        }
        #expect(writer.enqueue(EncodedEvent(ByteBuffer(string: events.last!)), to: [(queue, sink)]), "the events wait for the loop")
        let written = NIOLockedValueBox(false)
        writer.afterWrites { written.withLockedValue { $0 = true } }
        loop.run()
        #expect(try self.written(channel) == events)
        #expect(written.withLockedValue { $0 }, "once all are written")
        #expect(!writer.enqueue(EncodedEvent(ByteBuffer(string: "next")), to: [(queue, sink)]), "caught up")
        sink.stop()
        loop.run()
    }

    /// A drain of more sinks than ``LoopWriter/maximumSinksAtOnce`` writes them in parts, and the
    /// loop runs what else waits for it in between; what waits for the drain's writes runs once
    /// its last part is written, an event that comes meanwhile goes out after it, to each sink in
    /// order, and the wait by the CPU time counts the CPU time of every part.
    @Test func aDrainOfManySinksLetsTheLoopRunBetweenItsPartsAndKeepsEachSinksOrder() throws {
        let loop = EmbeddedEventLoop()
        let channels = (0...(2 * LoopWriter.maximumSinksAtOnce)).map { _ in EmbeddedChannel(loop: loop) }
        let targets = channels.map(self.subscriber(on:))
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))  // each part, 3 in all
        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: targets)
        let between = NIOLockedValueBox<[[String]]>([])
        let afterOne = NIOLockedValueBox<[String]?>(nil)
        loop.execute {
            // After the first part: the first sink has "one", the last nothing yet.
            between.withLockedValue { $0 = [(try? self.written(channels[0])) ?? [], (try? self.written(channels.last!)) ?? []] }
            writer.afterWrites { afterOne.withLockedValue { $0 = (try? self.written(channels.last!)) ?? [] } }
            writer.enqueue(EncodedEvent(ByteBuffer(string: "two")), to: targets)
        }
        loop.run()
        #expect(between.withLockedValue { $0 } == [["one"], []])
        #expect(afterOne.withLockedValue { $0 } == ["one"], "once \"one\" is written to every sink, before \"two\"")
        #expect(try self.written(channels[0]) == ["two"])
        for channel in channels.dropFirst().dropLast() { #expect(try self.written(channel) == ["one", "two"]) }
        #expect(try self.written(channels.last!) == ["two"])

        // The drain of "two", right after that of "one", found the writer saturated: the next
        // waits 3 times its CPU time, 3 parts of 1 ms (a part's alone would make it 3 ms).
        writer.enqueue(EncodedEvent(ByteBuffer(string: "three")), to: targets)
        loop.advanceTime(by: .milliseconds(8))
        #expect(try self.written(channels[0]).isEmpty)
        loop.advanceTime(by: .milliseconds(1))
        #expect(try self.written(channels[0]) == ["three"])
        for (_, sink) in targets { sink.stop() }
        loop.run()
    }

    /// A writer that is not saturated waits as long as its last drain took on the clock only for
    /// an event that comes less than ``LoopWriter/maximumDelay`` after the drain ended.
    @Test func aWriterNotSaturatedWaitsTheClockTimeOfItsLastDrainOnlyRightAfterIt() throws {
        let loop = EmbeddedEventLoop()
        let channels = (0..<LoopWriter.minimumSubscribersToHold).map { _ in EmbeddedChannel(loop: loop) }
        let clock = CPUClock(step: .microseconds(100))  // never saturated
        let subscribers = Subscribers(
            channel: channels[0], other: channels[1], all: channels.map(self.subscriber(on:)),
            writer: LoopWriter.forLoop(loop, threadCPUTime: clock.read), clock: clock
        )
        /// Sends `event`, whose drain takes 4 ms on the clock (what waits for its writes moves the
        /// clock on), and moves the clock on by 4 ms; returns when the drain ran.
        func sendTaking4ms(_ event: String) -> NIODeadline? {
            let ran = NIOLockedValueBox<NIODeadline?>(nil)
            let end = loop.now + .milliseconds(4)
            subscribers.send(event)
            subscribers.writer.afterWrites {
                ran.withLockedValue { $0 = loop.now }
                loop.advanceTime(by: .milliseconds(4))
            }
            loop.advanceTime(to: end)
            return ran.withLockedValue { $0 }
        }
        #expect(LoopWriter.maximumDelay == .milliseconds(5))
        let start = loop.now
        #expect(sendTaking4ms("zero") == start)
        #expect(try self.written(subscribers.channel) == ["zero"])

        loop.advanceTime(by: .milliseconds(4))
        subscribers.send("one")
        #expect(try self.written(after: .milliseconds(4), to: subscribers, "4 ms after a drain of 4 ms") == ["one"])

        // The drain of "one" took no time on the clock; that of "two" takes 4 ms again.
        let now = loop.now
        #expect(sendTaking4ms("two") == now)
        #expect(try self.written(subscribers.channel) == ["two"])
        loop.advanceTime(by: .milliseconds(5))
        let later = loop.now
        #expect(sendTaking4ms("three") == later, "at once, 5 ms after it")
        #expect(try self.written(subscribers.channel) == ["three"])
        subscribers.stop()
    }

    @Test func aRunOfEventsGoesToASinkOverTLSAsOneBufferAndToAPlainOneAsItIs() throws {
        let plain = EmbeddedChannel()
        let loop = plain.embeddedEventLoop
        // A TLS handler, which the sink finds, and a recorder in front of it, which takes the
        // writes before they are encrypted.
        let context = try NIOSSLContext(configuration: HubTLSTests.serverTLS())
        let recorder = BodyRecorder()
        let tls = EmbeddedChannel(handlers: [NIOSSLServerHandler(context: context), recorder], loop: loop)
        let (plainQueue, plainSink) = self.subscriber(on: plain)
        let (tlsQueue, tlsSink) = self.subscriber(on: tls)
        #expect(!plainSink.isOverTLS && tlsSink.isOverTLS)
        // Enough subscribers for the drain to wait by the CPU time of the last.
        let more = (2..<LoopWriter.minimumSubscribersToHold).map { _ in self.subscriber(on: EmbeddedChannel(loop: loop)) }
        let both = [(plainQueue, plainSink), (tlsQueue, tlsSink)] + more
        let writer = self.writer(on: loop, drainsTaking: .milliseconds(1))

        writer.enqueue(EncodedEvent(ByteBuffer(string: "one")), to: both)
        loop.run()
        // The next drain waits, and the events that come meanwhile go in it together.
        for event in ["two", "three", "four"] { writer.enqueue(EncodedEvent(ByteBuffer(string: event)), to: both) }
        loop.advanceTime(by: .milliseconds(3))
        #expect(try self.written(plain) == ["one", "two", "three", "four"], "each event's own buffer")
        #expect(recorder.bodies.withLockedValue { $0 } == ["one", "twothreefour"], "a record for the run")
        for (_, sink) in both { sink.stop() }
        loop.run()
    }

    /// The sizes either side of one more hex digit in the chunk's size line.
    @Test(arguments: [0, 1, 15, 16, 255, 256, 4_095, 4_096])
    func anEncodedEventIsItsBytesAndTheSameBytesFramedAsAChunk(size: Int) throws {
        let data = String(repeating: "x", count: size)
        let event = try ServerSentEvent(type: "message", data: data, id: "i")
        let expected = String(buffer: ByteBufferAllocator().buffer(encoding: event))
        let frame = { (bytes: String) in String(bytes.utf8.count, radix: 16) + "\r\n" + bytes + "\r\n" }
        let encoded = EncodedEvent(encoding: event, allocator: ByteBufferAllocator())
        #expect(String(buffer: encoded.bytes) == expected)
        #expect(String(buffer: encoded.chunk) == frame(expected))
        let joined = EncodedEvent(joining: [encoded, EncodedEvent(ByteBuffer(string: "more"))])
        #expect(String(buffer: joined.bytes) == expected + "more")
        #expect(String(buffer: joined.chunk) == frame(expected + "more"))
    }
}

/// Takes the response parts written to its channel, and records the bodies.
private final class BodyRecorder: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = HTTPResponsePart
    let bodies = NIOLockedValueBox<[String]>([])

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .body(let bytes) = Self.unwrapOutboundIn(data) {
            self.bodies.withLockedValue { $0.append(String(buffer: bytes)) }
        }
        promise?.succeed()
    }
}
