//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SSEClient
import SSECore
import SSEHub

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a hub with subscribers and publishes; report deliveries, latency and completeness.",
        discussion: """
            Opens --subscribers EventSource connections (subscriber i listens to topic i mod \
            --topics), then publishes for --duration seconds, at --rate publishes a second or as \
            fast as --publishers concurrent publishers can. Each event carries its send time, so \
            each delivery's latency is measured. With --rate it also carries the time it was due, \
            and latencyFromSchedule counts from then: a hub that takes publishes later than asked \
            (the publishers wait for its answers) shows it there, not in latency. A progress line \
            goes to standard error, a JSON summary to standard output; the exit status is 1 when \
            an event is missing or a request failed. Works with any Mercure hub, and with Nchan \
            (--protocol nchan: subscribers at <hub>/sub/<topic>, publishes to <hub>/pub/<topic>); \
            subscribers send a token only when given --subscriber-token or --subscriber-key. \
            --server-pid (repeatable) adds the server's memory and CPU time per connection opened, \
            and its CPU time while publishing (serverSystemCPUSeconds: the kernel's part), read \
            from /proc and the processes' CPU clocks; the bench's own CPU time while publishing \
            is generatorCPUSeconds.
            """
    )

    enum WireProtocol: String, ExpressibleByArgument, CaseIterable {
        case mercure, nchan
    }

    @Option(
        help: """
            The hub: its Mercure URL (http://127.0.0.1:8080/.well-known/mercure), or Nchan's base URL. \
            https:// speaks HTTP/1.1 over TLS. Repeat it for the nodes of a cluster: subscribers and \
            publishes go to each in turn.
            """
    )
    var hub: [String]

    @Option(name: .customLong("protocol"), help: "mercure or nchan.")
    var wireProtocol: WireProtocol = .mercure

    @Option(help: "Subscriber connections to open.")
    var subscribers = 100

    @Option(help: "Topics; subscriber i listens to topic i mod this, and publishes go round-robin.")
    var topics = 1

    @Option(help: "Publishes a second; 0 publishes as fast as the publishers can.")
    var rate: Double = 0

    @Option(help: "Seconds of publishing (or of holding the connections, with --idle).")
    var duration: Double = 10

    @Option(help: "Concurrent publishers.")
    var publishers = 4

    @Flag(help: "Publish nothing: open the connections and hold them for --duration.")
    var idle = false

    @Option(help: "Bytes of padding in each event's data.")
    var padding = 0

    @Option(help: "A Mercure publisher JWT.")
    var token: String?

    @Option(help: "The Mercure hub's HS256 publisher key: signs a token that may publish to any topic.")
    var key: String?

    @Option(help: "A Mercure subscriber JWT, for a hub that allows no anonymous subscribers.")
    var subscriberToken: String?

    @Option(help: "The Mercure hub's HS256 subscriber key: signs a token that may subscribe to any topic.")
    var subscriberKey: String?

    @Option(
        help: """
            Subscriber connections being opened at once. As many as --subscribers makes a \
            reconnect storm: every client of a restarted hub connecting again at the same time.
            """
    )
    var inFlight = 256

    @Option(help: "Source addresses 127.0.0.1, .2, … to spread connections over (default: one per 10 000).")
    var sourceAddresses: Int?

    @Option(help: "A server process to measure (memory, CPU time) from /proc. Repeatable.")
    var serverPID: [Int32] = []

    @Option(help: "Seconds to wait after publishing for the last deliveries.")
    var drain: Double = 10

    @OptionGroup var trust: Trust

    func validate() throws {
        guard self.subscribers >= 1 else { throw ValidationError("--subscribers must be at least 1.") }
        guard self.topics >= 1 else { throw ValidationError("--topics must be at least 1.") }
        guard self.rate >= 0, self.rate.isFinite else {
            throw ValidationError("--rate must be a number of publishes a second, or 0 for as fast as the publishers can.")
        }
        try checkSeconds(self.duration, of: "--duration")
        try checkSeconds(self.drain, of: "--drain", zeroMeans: "no wait")
        guard self.publishers >= 1 else { throw ValidationError("--publishers must be at least 1.") }
        guard self.inFlight >= 1 else { throw ValidationError("--in-flight must be at least 1.") }
        guard self.padding >= 0 else { throw ValidationError("--padding must not be negative.") }
        if self.wireProtocol == .mercure, !self.idle, (self.token == nil) == (self.key == nil) {
            throw ValidationError("publishing to a Mercure hub needs either --token or --key.")
        }
        if self.subscriberToken != nil, self.subscriberKey != nil {
            throw ValidationError("give either --subscriber-token or --subscriber-key, not both.")
        }
        if self.wireProtocol == .nchan, self.subscriberToken != nil || self.subscriberKey != nil {
            throw ValidationError("--subscriber-token and --subscriber-key are for a Mercure hub (Nchan takes no token).")
        }
        guard !self.hub.isEmpty, self.hub.allSatisfy(Publish.isHTTPURL) else {
            throw ValidationError("--hub must be an http:// or https:// URL.")
        }
    }

    func run() async throws {
        let targets = try self.hub.map { try Target(hub: $0, wireProtocol: self.wireProtocol) }
        // A connection each, and some for the event loops, standard streams and the like.
        let needed = self.subscribers + self.publishers * targets.count + 64
        if let openFiles = raiseOpenFileLimit(), needed > openFiles {
            throw CommandFailure(
                "--subscribers \(self.subscribers) needs about \(needed) open files, and this process may have \(openFiles): "
                    + "raise its hard limit (ulimit -Hn), or open fewer (the hub needs as many too)"
            )
        }
        var tls = try self.trust.tlsConfiguration()
        tls.applicationProtocols = ["http/1.1"]
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let stats = group.makeIterator().map { _ in LoopStats() }
        let server = ServerProcesses(pids: self.serverPID)
        let generator = ServerProcesses(pids: [getpid()])
        var report = Report(protocol: self.wireProtocol.rawValue, subscribers: self.subscribers, topics: self.topics)
        report.serverRSSKilobytesBefore = server.rssKilobytes()
        let cpuBeforeConnecting = server.cpuSeconds()

        // 1. Connect every subscriber.
        let progress = Progress(stats: stats, subscribers: self.subscribers)
        let ticker = Task { await progress.run() }
        let connectStart = ContinuousClock.now
        let channels: [any Channel]
        do {
            channels = try await self.connectSubscribers(targets: targets, tls: tls, group: group, stats: stats)
        } catch {
            ticker.cancel()
            await ticker.value
            try? await group.shutdownGracefully()
            throw error
        }
        report.connected = channels.count
        report.connectSeconds = (ContinuousClock.now - connectStart).seconds
        report.connectionsPerSecond = Double(channels.count) / max(report.connectSeconds, 1e-9)
        try await Task.sleep(for: .seconds(1))  // let the server settle before measuring it
        report.serverRSSKilobytesConnected = server.rssKilobytes()
        if let before = report.serverRSSKilobytesBefore, let connected = report.serverRSSKilobytesConnected {
            report.serverKilobytesPerConnection = Double(connected - before) / Double(max(1, channels.count))
        }
        if let before = cpuBeforeConnecting, let connected = server.cpuSeconds() {
            report.serverCPUMicrosecondsPerConnection = (connected.total - before.total) * 1e6 / Double(max(1, channels.count))
        }

        // 2. Publish (or hold the connections).
        let cpuBefore = server.cpuSeconds()
        let generatorCPUBefore = generator.cpuSeconds()
        let publishStart = ContinuousClock.now
        var publishing = PublishResult()
        if self.idle {
            try await Task.sleep(for: .seconds(self.duration))
        } else {
            progress.publishing.withLockedValue { $0 = true }
            publishing = try await self.publish(targets: targets, tls: tls, progress: progress)
        }
        let publishSeconds = (ContinuousClock.now - publishStart).seconds

        // 3. Wait for the last deliveries, then stop.
        let perTopic = (0..<self.topics).map { topic in (self.subscribers - topic + self.topics - 1) / self.topics }
        let expected = publishing.publishedPerTopic.enumerated().reduce(0) { $0 + $1.element * perTopic[$1.offset] }
        let drainDeadline = ContinuousClock.now + .seconds(self.drain)
        while LoopStats.total(stats).delivered < expected, ContinuousClock.now < drainDeadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let deliverySeconds = (ContinuousClock.now - publishStart).seconds
        let cpuAfter = server.cpuSeconds()
        let generatorCPUAfter = generator.cpuSeconds()
        let totals = LoopStats.total(stats)  // before closing: what closing does is not counted
        ticker.cancel()
        await ticker.value  // the progress line ends
        for channel in channels { channel.close(promise: nil) }
        try await group.shutdownGracefully()

        report.published = publishing.published
        report.publishErrors = publishing.errors
        report.publishesPerSecond = Double(publishing.published) / max(publishSeconds, 1e-9)
        report.publishLatency = Percentiles(publishing.latency)
        report.expectedDeliveries = expected
        report.delivered = totals.delivered
        report.completeness = expected == 0 ? 1 : Double(totals.delivered) / Double(expected)
        report.deliveriesPerSecond = Double(totals.delivered) / max(deliverySeconds, 1e-9)
        report.latency = Percentiles(totals.latency)
        if self.rate > 0 { report.latencyFromSchedule = Percentiles(totals.scheduleLatency) }
        report.subscriberErrors = totals.errors
        report.streamsEnded = totals.ended
        if let cpuBefore, let cpuAfter {
            let serverCPU = cpuAfter.total - cpuBefore.total
            report.serverCPUSeconds = serverCPU
            report.serverSystemCPUSeconds = min(cpuAfter.system - cpuBefore.system, serverCPU)
            report.deliveriesPerServerCPUSecond = Double(totals.delivered) / max(serverCPU, 1e-9)
        }
        if let generatorCPUBefore, let generatorCPUAfter { report.generatorCPUSeconds = generatorCPUAfter.total - generatorCPUBefore.total }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try writeAll(Array(try encoder.encode(report)) + [UInt8(ascii: "\n")])
        if report.completeness < 1 || report.publishErrors > 0 || report.subscriberErrors > 0 || report.streamsEnded > 0 {
            throw CommandFailure(
                "incomplete: \(totals.delivered) of \(expected) deliveries, \(publishing.errors) publish errors, "
                    + "\(totals.errors) subscriber errors, \(totals.ended) streams ended early"
            )
        }
    }

    // MARK: Subscribers

    private func connectSubscribers(
        targets: [Target],
        tls: TLSConfiguration,
        group: MultiThreadedEventLoopGroup,
        stats: [LoopStats]
    ) async throws -> [any Channel] {
        let context = try targets.contains(where: \.isSecure) ? NIOSSLContext(configuration: tls) : nil
        let sources = self.sourceAddresses ?? max(1, (self.subscribers + 9_999) / 10_000)
        let loops = Array(group.makeIterator())
        var token = self.subscriberToken
        if let key = self.subscriberKey {
            token = try await Hub.developmentToken(publish: nil, subscribe: ["*"], key: key)
        }
        let authorization = token.map { "Bearer \($0)" }
        return try await withThrowingTaskGroup(of: (any Channel).self) { tasks in
            var channels: [any Channel] = []
            channels.reserveCapacity(self.subscribers)
            for index in 0..<self.subscribers {
                if index >= self.inFlight, let channel = try await tasks.next() { channels.append(channel) }
                let loopIndex = index % loops.count
                let target = targets[index % targets.count]
                let source = target.isLoopback && sources > 1 ? "127.0.0.\(1 + index % sources)" : nil
                tasks.addTask {
                    try await self.openSubscriber(
                        target: target,
                        tls: target.isSecure ? context : nil,
                        topic: index % self.topics,
                        loop: loops[loopIndex],
                        stats: stats[loopIndex],
                        source: source,
                        authorization: authorization
                    )
                }
            }
            for try await channel in tasks { channels.append(channel) }
            return channels
        }
    }

    private func openSubscriber(
        target: Target,
        tls: NIOSSLContext?,
        topic: Int,
        loop: any EventLoop,
        stats: LoopStats,
        source: String?,
        authorization: String?
    ) async throws -> any Channel {
        let opened = loop.makePromise(of: Void.self)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.subscribePath(topic: topic))
        head.headers.add(name: "Host", value: target.hostHeader)
        head.headers.add(name: "Accept", value: "text/event-stream")
        if let authorization { head.headers.add(name: "Authorization", value: authorization) }
        let request = head
        var bootstrap = target.bootstrap(on: loop, tls: tls) { SubscriberHandler(request: request, stats: stats, opened: opened) }
        if let source { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0)) }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: target.host, port: target.port).get()
        } catch {
            opened.fail(error)
            throw CommandFailure("cannot connect a subscriber: \(describe(networkError: error))")
        }
        do {
            try await opened.futureResult.get()
        } catch let error as NIOSSLError {
            channel.close(promise: nil)
            throw CommandFailure("no TLS with \(target.host):\(target.port): \(describe(networkError: error))" + Trust.hint(for: error))
        } catch {
            channel.close(promise: nil)
            throw CommandFailure("a subscription failed: \(describe(networkError: error))")
        }
        return channel
    }

    // MARK: Publishers

    fileprivate struct PublishResult {
        var published = 0
        var errors = 0
        var publishedPerTopic: [Int] = []
        var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
    }

    private func publish(targets: [Target], tls: TLSConfiguration, progress: Progress) async throws -> PublishResult {
        var signed = self.token ?? ""
        if let key = self.key {
            // Any topic, as a backend's publisher token usually says: one selector per topic
            // made a 15 KB header at 1 000 topics, more than proxies take (nginx: 8 KB).
            signed = try await Hub.developmentToken(publish: ["*"], subscribe: nil, key: key)
        }
        let context = try targets.contains(where: \.isSecure) ? NIOSSLContext(configuration: tls) : nil
        let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
        let plan = PublishPlan(
            targets: targets,
            authorization: "Bearer \(signed)",
            topics: self.topics,
            rate: self.rate,
            padding: self.padding > 0 ? " " + String(repeating: "x", count: self.padding) : "",
            duration: .nanoseconds(Int64(self.duration * 1e9)),
            progress: progress
        )
        return await withTaskGroup(of: PublishResult.self) { tasks in
            for index in 0..<self.publishers {
                // A connection to each hub, kept alive, on loops of their own: on the subscribers'
                // loops, a publish waits while they read (at 10 000 subscribers, for as long as
                // 5 000 events take), and goes late. A publisher runs on its loop from start to end:
                // from a task, each publish went to another thread and back.
                let loop = loops[index % loops.count]
                tasks.addTask {
                    let publisher = loop.flatSubmit {
                        let connections = targets.map { PublisherConnection(target: $0, tls: $0.isSecure ? context : nil, loop: loop) }
                        return Publisher(plan: plan, connections: connections, loop: loop).run()
                    }
                    return (try? await publisher.get()) ?? PublishResult(publishedPerTopic: Array(repeating: 0, count: plan.topics))
                }
            }
            var total = PublishResult(publishedPerTopic: Array(repeating: 0, count: self.topics))
            for await part in tasks {
                total.published += part.published
                total.errors += part.errors
                for topic in 0..<self.topics { total.publishedPerTopic[topic] += part.publishedPerTopic[topic] }
                total.latency.add(part.latency)
            }
            return total
        }
    }
}

/// What every publisher of a bench publishes, and when.
private struct PublishPlan: Sendable {
    let targets: [Target]
    /// The `Authorization` field of a publish to a Mercure hub.
    let authorization: String
    let topics: Int
    /// Publishes a second, for all publishers together; 0 for as fast as they can.
    let rate: Double
    /// Appended to each event's data.
    let padding: String
    let duration: TimeAmount
    let progress: Progress
    /// The number of the next publish, shared by the publishers.
    let sequence = NIOLockedValueBox(0)
    /// The start, as `monotonicNanoseconds()` and NIO's clock read it (in that order: a due time
    /// in an event's data is never after its publish).
    let startNanoseconds = monotonicNanoseconds()
    let start = NIODeadline.now()
}

/// One publisher: one request at a time over its connections, all on its event loop (an answer
/// sends the next publish, or schedules it at its due time), until the plan's end.
private final class Publisher {
    private let plan: PublishPlan
    private let connections: [PublisherConnection]
    private let loop: any EventLoop
    private var result: Bench.PublishResult
    private let done: EventLoopPromise<Bench.PublishResult>

    init(plan: PublishPlan, connections: [PublisherConnection], loop: any EventLoop) {
        self.plan = plan
        self.connections = connections
        self.loop = loop
        self.result = Bench.PublishResult(publishedPerTopic: Array(repeating: 0, count: plan.topics))
        self.done = loop.makePromise()
    }

    /// Publishes until the end; call on the loop.
    func run() -> EventLoopFuture<Bench.PublishResult> {
        self.next()
        return self.done.futureResult
    }

    private func next() {
        let number = self.plan.sequence.withLockedValue { value -> Int in
            defer { value += 1 }
            return value
        }
        let end = self.plan.start + self.plan.duration
        if self.plan.rate > 0 {
            let due = self.plan.start + .nanoseconds(Int64(Double(number) / self.plan.rate * 1e9))
            guard due < end else { return self.finish() }
            if due > .now() {
                self.loop.assumeIsolated().scheduleTask(deadline: due) { self.publish(number) }
                return
            }
        } else if NIODeadline.now() >= end {
            return self.finish()
        }
        self.publish(number)
    }

    private func publish(_ number: Int) {
        let topic = number % self.plan.topics
        let sent = monotonicNanoseconds()
        let due = self.plan.rate > 0 ? " \(self.plan.startNanoseconds + UInt64(Double(number) / self.plan.rate * 1e9))" : ""
        let target = number % self.plan.targets.count
        let data = "\(number) \(sent)\(due)\(self.plan.padding)"
        let (head, body) = self.plan.targets[target].publishRequest(topic: topic, data: data, authorization: self.plan.authorization)
        self.connections[target].send(head, body).assumeIsolated().whenSuccess { ok in
            _ = self.result.latency.record(monotonicNanoseconds() - sent)
            if ok {
                self.result.published += 1
                self.result.publishedPerTopic[topic] += 1
                self.plan.progress.published.withLockedValue { $0 += 1 }
            } else {
                self.result.errors += 1
            }
            // Through the loop's queue: an answer that came at once would recurse.
            self.loop.assumeIsolated().execute { self.next() }
        }
    }

    private func finish() {
        for connection in self.connections { connection.close() }
        self.done.succeed(self.result)
    }
}

/// Where the bench connects, and how it speaks to the hub.
private struct Target: Sendable {
    let url: URL
    let host: String
    let port: Int
    let wireProtocol: Bench.WireProtocol
    /// The URL's path, without a final `/`.
    private let basePath: String
    let hostHeader: String
    /// How long a connection may take to open, and a subscription's stream then.
    static let connectTimeout = TimeAmount.seconds(10)

    init(hub: String, wireProtocol: Bench.WireProtocol) throws {
        guard let url = URL(string: hub), url.scheme == "http" || url.scheme == "https", let host = url.host else {
            throw CommandFailure("--hub must be an http:// or https:// URL (the bench speaks HTTP/1.1): \(hub)")
        }
        self.url = url
        self.host = host
        self.port = url.port ?? (url.scheme == "https" ? 443 : 80)
        self.wireProtocol = wireProtocol
        // Once, not for each request: `URL.path` parses.
        self.basePath = url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path
        self.hostHeader = "\(host):\(self.port)"
    }

    /// Whether the hub is spoken to over TLS.
    var isSecure: Bool { self.url.scheme == "https" }
    var isLoopback: Bool { self.host == "127.0.0.1" || self.host == "localhost" }
    /// Whether the host is an IP address, which TLS does not send as the server's name.
    var hostIsAnAddress: Bool { (try? SocketAddress(ipAddress: self.host, port: 0)) != nil }

    func topicName(_ topic: Int) -> String { "bench\(topic)" }

    func subscribePath(topic: Int) -> String {
        switch self.wireProtocol {
        case .mercure: return "\(self.basePath)?topic=\(self.topicName(topic))"
        case .nchan: return "\(self.basePath)/sub/\(self.topicName(topic))"
        }
    }

    /// The request that publishes `data` to `topic`.
    func publishRequest(topic: Int, data: String, authorization: String) -> (HTTPRequestHead, ByteBuffer) {
        var head: HTTPRequestHead
        let body: ByteBuffer
        switch self.wireProtocol {
        case .mercure:
            head = HTTPRequestHead(version: .http1_1, method: .POST, uri: self.basePath.isEmpty ? "/" : self.basePath)
            head.headers.add(name: "Authorization", value: authorization)
            head.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            var form = ByteBuffer()
            form.reserveCapacity(32 + 3 * data.utf8.count)
            form.writeStaticString("topic=")
            form.writeString(self.topicName(topic))
            form.writeStaticString("&data=")
            Publish.formEncode(data, into: &form)
            body = form
        case .nchan:
            head = HTTPRequestHead(version: .http1_1, method: .POST, uri: self.basePath + "/pub/" + self.topicName(topic))
            body = ByteBuffer(string: data)
        }
        head.headers.add(name: "Host", value: self.hostHeader)
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        return (head, body)
    }

    /// Connects to the hub on `loop`, over TLS with `tls`, speaking HTTP/1.1 through the handler
    /// `last` makes.
    func bootstrap(on loop: any EventLoop, tls: NIOSSLContext?, last: @escaping @Sendable () -> some ChannelHandler) -> ClientBootstrap {
        ClientBootstrap(group: loop)
            .connectTimeout(Self.connectTimeout)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let hostname = self.hostIsAnAddress ? nil : self.host
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: hostname))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(last())
                }
            }
    }
}

/// One publisher's connection to a hub, kept alive: a request at a time, connected again after the
/// hub closes it. Lighter than an HTTP client with a pool: through AsyncHTTPClient a publish took
/// about twice the generator's CPU on 1 000 topics, and the generator shares the machine with the
/// hub it measures (docs/PERFORMANCE.md). Used on its loop, by one publisher.
private final class PublisherConnection {
    private let target: Target
    private let tls: NIOSSLContext?
    private let loop: any EventLoop
    private var channel: (any Channel)?

    init(target: Target, tls: NIOSSLContext?, loop: any EventLoop) {
        self.target = target
        self.tls = tls
        self.loop = loop
    }

    /// Sends a request; whether the hub answered it with a 2xx (`false` for any failure: the
    /// future never fails). Call on the connection's loop.
    func send(_ head: HTTPRequestHead, _ body: ByteBuffer) -> EventLoopFuture<Bool> {
        // Once more on a new connection if the hub closed this one before the request went (as
        // nginx does after `keepalive_requests`).
        self.send(head, body, attempts: 2).assumeIsolated().recover { _ in
            self.channel?.close(promise: nil)
            self.channel = nil
            return false
        }.nonisolated()
    }

    private func send(_ head: HTTPRequestHead, _ body: ByteBuffer, attempts: Int) -> EventLoopFuture<Bool> {
        guard attempts > 0 else { return self.loop.makeSucceededFuture(false) }
        let channel: EventLoopFuture<any Channel>
        if let open = self.channel, open.isActive {
            channel = self.loop.makeSucceededFuture(open)
        } else {
            self.channel?.close(promise: nil)
            self.channel = nil
            channel = self.target.bootstrap(on: self.loop, tls: self.tls) { PublishHandler() }
                .connect(host: self.target.host, port: self.target.port)
        }
        return channel.assumeIsolated().flatMap { channel in
            self.channel = channel
            // The handler knows whether the connection is still open.
            let handler = try? channel.pipeline.syncOperations.handler(type: PublishHandler.self)
            let answer = handler?.send(head, body) ?? self.loop.makeSucceededFuture(nil)
            return answer.assumeIsolated().flatMap { answer in
                if let answer { return self.loop.makeSucceededFuture(answer) }
                self.channel = nil
                return self.send(head, body, attempts: attempts - 1)
            }.nonisolated()
        }.nonisolated()
    }

    func close() {
        self.channel?.close(promise: nil)
    }
}

/// Writes a publish request and says, when the answer has come whole, whether its status was 2xx;
/// `false` if the connection closes first, or after 30 seconds with no answer; `nil` if it was
/// closed before the request went.
private final class PublishHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private var context: ChannelHandlerContext?
    private var waiting: (answered: EventLoopPromise<Bool?>, timeout: Scheduled<Void>)?
    private var status: HTTPResponseStatus?
    private var keepAlive = true

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.answer(false)
    }

    /// Sends a request, one at a time; call on the loop. `nil` when the handler has left the
    /// closed connection.
    func send(_ head: HTTPRequestHead, _ body: ByteBuffer) -> EventLoopFuture<Bool?>? {
        guard let context = self.context else { return nil }
        guard context.channel.isActive, self.waiting == nil else { return context.eventLoop.makeSucceededFuture(nil) }
        let answered = context.eventLoop.makePromise(of: Bool?.self)
        let timeout = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(30)) { context.close(promise: nil) }
        self.waiting = (answered, timeout)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        return answered.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.status = head.status
            self.keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            self.answer(self.status.map { (200..<300).contains($0.code) } ?? false)
            self.status = nil
            if !self.keepAlive { context.close(promise: nil) }  // (after the answer: the close fails what waits)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.answer(false)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func answer(_ ok: Bool) {
        guard let (answered, timeout) = self.waiting else { return }
        self.waiting = nil
        timeout.cancel()
        answered.succeed(ok)
    }
}

/// What the subscribers of one event loop saw; touched only on that loop, read under its lock.
private final class LoopStats: Sendable {
    struct Counts {
        var connected = 0
        var delivered = 0
        var errors = 0
        var ended = 0
        var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        var scheduleLatency = Histogram<UInt64>(highestTrackableValue: 600_000_000_000)
    }

    let counts = NIOLockedValueBox(Counts())

    static func total(_ all: [LoopStats]) -> Counts {
        var total = Counts()
        for stats in all {
            stats.counts.withLockedValue { counts in
                total.connected += counts.connected
                total.delivered += counts.delivered
                total.errors += counts.errors
                total.ended += counts.ended
                total.latency.add(counts.latency)
                total.scheduleLatency.add(counts.scheduleLatency)
            }
        }
        return total
    }
}

/// One subscriber connection: sends the request, parses the event stream, records each event's
/// latency from the send time in its data.
private final class SubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let stats: LoopStats
    private let opened: EventLoopPromise<Void>
    private var parser = ServerSentEventParser()
    private var open = false
    /// The latencies of the events of the body part being read, from their send time and from the
    /// time they were due if known (kept to reuse the storage).
    private var latencies: [(fromSend: UInt64, fromSchedule: UInt64?)] = []

    /// Fails the subscription if its stream has not opened by then, or, for a refusal, if its
    /// body has not ended.
    private var answerDeadline: Scheduled<Void>?
    /// A refusal's head and the start of its body, which says why, until the body ends.
    private var refusal: (head: HTTPResponseHead, body: [UInt8])?

    init(request: HTTPRequestHead, stats: LoopStats, opened: EventLoopPromise<Void>) {
        self.request = request
        self.stats = stats
        self.opened = opened
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(self.wrapOutboundOut(.head(self.request)), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        self.answerDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: Target.connectTimeout) {
            if self.refusal != nil { return self.refuse(context: context) }
            // A hub out of open files leaves new connections waiting, unanswered.
            self.opened.fail(CommandFailure("the hub did not answer within \(Target.connectTimeout.nanoseconds / 1_000_000_000) s"))
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            if head.status == .ok {
                self.answerDeadline?.cancel()
                self.open = true
                self.stats.counts.withLockedValue { $0.connected += 1 }
                self.opened.succeed()
            } else {
                self.refusal = (head, [])  // read on, for the reason
            }
        case .body(let buffer) where self.refusal != nil:
            self.refusal!.body += buffer.readableBytesView.prefix(EventSourceError.reasonLimit - self.refusal!.body.count)
            if self.refusal!.body.count == EventSourceError.reasonLimit { self.refuse(context: context) }
        case .end where self.refusal != nil:
            self.refuse(context: context)
        case .body(let buffer):
            let now = monotonicNanoseconds()
            var delivered = 0
            self.latencies.removeAll(keepingCapacity: true)
            do {
                try self.parser.parse(buffer.readableBytesView) { output in
                    guard case .event(let event) = output else { return }
                    delivered += 1
                    if let (sent, due) = Self.times(in: event.data), sent <= now {
                        self.latencies.append((now - sent, due.map { now - min($0, now) }))
                    }
                }
            } catch {
                self.stats.counts.withLockedValue { $0.errors += 1 }
                context.close(promise: nil)
            }
            self.stats.counts.withLockedValue { counts in
                counts.delivered += delivered
                for (fromSend, fromSchedule) in self.latencies {
                    _ = counts.latency.record(fromSend)
                    if let fromSchedule { _ = counts.scheduleLatency.record(fromSchedule) }
                }
            }
        case .end:
            self.stats.counts.withLockedValue { $0.ended += 1 }
        }
    }

    /// The send time and the due time in an event's data, "<sequence> <send time in ns> [<due
    /// time in ns>] …", read as bytes: the load generator must cost little next to the hub it measures.
    static func times(in data: String) -> (sent: UInt64, due: UInt64?)? {
        let bytes = data.utf8
        guard let space = bytes.firstIndex(of: UInt8(ascii: " ")) else { return nil }
        let start = bytes.index(after: space)
        let end = bytes[start...].firstIndex(of: UInt8(ascii: " ")) ?? bytes.endIndex
        guard let sent = UInt64(Substring(bytes[start..<end])) else { return nil }
        guard end < bytes.endIndex else { return (sent, nil) }
        let next = bytes.index(after: end)
        let dueEnd = bytes[next...].firstIndex(of: UInt8(ascii: " ")) ?? bytes.endIndex
        return (sent, UInt64(Substring(bytes[next..<dueEnd])))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.stats.counts.withLockedValue { $0.errors += 1 }
        self.opened.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.refusal != nil { self.refuse(context: context) }
        self.answerDeadline?.cancel()
        self.opened.fail(CommandFailure("the connection closed before the stream opened"))
        context.fireChannelInactive()
    }

    /// Fails the subscription with the refusal's status and, when its body gives one, its reason.
    private func refuse(context: ChannelHandlerContext) {
        guard let (head, body) = self.refusal else { return }
        self.refusal = nil
        self.answerDeadline?.cancel()
        let reason = EventSourceError.reason(fromBody: body, contentType: head.headers.first(name: "Content-Type"))
        self.opened.fail(
            CommandFailure("the hub answered \(head.status.code) \(head.status.reasonPhrase)" + (reason.map { ": \($0)" } ?? ""))
        )
        context.close(promise: nil)
    }
}

/// A progress line on standard error, once a second.
private final class Progress: Sendable {
    let stats: [LoopStats]
    let subscribers: Int
    let published = NIOLockedValueBox(0)
    let publishing = NIOLockedValueBox(false)

    init(stats: [LoopStats], subscribers: Int) {
        self.stats = stats
        self.subscribers = subscribers
    }

    /// Writes the line once a second until cancelled, then ends it. (A line after that would count
    /// what closing the connections does.)
    func run() async {
        let start = ContinuousClock.now
        var lastDelivered = 0
        var written = false
        while (try? await Task.sleep(for: .seconds(1))) != nil {
            let totals = LoopStats.total(self.stats)
            let elapsed = (ContinuousClock.now - start).seconds
            var line = String(format: "\r%6.1fs  subscribers %d/%d", elapsed, totals.connected, self.subscribers)
            if self.publishing.withLockedValue({ $0 }) {
                line += String(
                    format: "  published %d  delivered %d (%.0f/s)  p99 %.2f ms  errors %d   ",
                    self.published.withLockedValue { $0 }, totals.delivered, Double(totals.delivered - lastDelivered),
                    Double(totals.latency.valueAtPercentile(99)) / 1e6, totals.errors
                )
            }
            lastDelivered = totals.delivered
            try? writeAll(Array(line.utf8), to: STDERR_FILENO)
            written = true
        }
        if written { try? writeAll(Array("\n".utf8), to: STDERR_FILENO) }
    }
}

/// The server's processes (or the generator's own), read from /proc (Linux): resident memory and
/// CPU time.
private struct ServerProcesses {
    let pids: [Int32]

    func rssKilobytes() -> Int? {
        guard !self.pids.isEmpty else { return nil }
        var total = 0
        for pid in self.pids {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
            else { return nil }
            total += kilobytes
        }
        return total
    }

    /// Their CPU time in seconds, in all (user and system) and in the kernel (system). The total
    /// is read from each process's CPU clock, in nanoseconds (opening a thousand connections takes
    /// a server about a tenth of a second); the kernel's part only comes in clock ticks (10 ms).
    func cpuSeconds() -> (total: Double, system: Double)? {
        guard !self.pids.isEmpty else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var (total, system) = (0.0, 0.0)
        for pid in self.pids {
            // Fields after the command (which is in parentheses): utime is the 12th, stime the 13th.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Double(fields[11]), let kernel = Double(fields[12]) else { return nil }
            system += kernel / ticks
            total += Self.clockSeconds(pid) ?? (user + kernel) / ticks
        }
        return (total, system)
    }

    /// The CPU time of process `pid` by its CPU clock, if it can be read.
    private static func clockSeconds(_ pid: Int32) -> Double? {
        #if os(Linux)
        var clock = clockid_t()
        var time = timespec()
        guard clock_getcpuclockid(pid, &clock) == 0, clock_gettime(clock, &time) == 0 else { return nil }
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
        #else
        return nil
        #endif
    }
}

/// Latency percentiles in milliseconds.
private struct Percentiles: Encodable {
    var p50 = 0.0, p90 = 0.0, p99 = 0.0, p999 = 0.0, max = 0.0

    init(_ histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else { return }
        let milliseconds = { (value: UInt64) in (Double(value) / 1e6 * 1000).rounded() / 1000 }
        self.p50 = milliseconds(histogram.valueAtPercentile(50))
        self.p90 = milliseconds(histogram.valueAtPercentile(90))
        self.p99 = milliseconds(histogram.valueAtPercentile(99))
        self.p999 = milliseconds(histogram.valueAtPercentile(99.9))
        self.max = milliseconds(histogram.max)
    }

    init() {}
}

/// The JSON summary.
private struct Report: Encodable {
    let `protocol`: String
    let subscribers: Int
    let topics: Int
    var connected = 0
    var connectSeconds = 0.0
    var connectionsPerSecond = 0.0
    var serverRSSKilobytesBefore: Int?
    var serverRSSKilobytesConnected: Int?
    var serverKilobytesPerConnection: Double?
    /// The server's CPU time from before the first connection to a second after the last.
    var serverCPUMicrosecondsPerConnection: Double?
    var published = 0
    var publishErrors = 0
    var publishesPerSecond = 0.0
    var publishLatency = Percentiles()
    var expectedDeliveries = 0
    var delivered = 0
    var completeness = 1.0
    var deliveriesPerSecond = 0.0
    var latency = Percentiles()
    /// With `--rate`: from the time each publish was due, not sent.
    var latencyFromSchedule: Percentiles?
    var subscriberErrors = 0
    var streamsEnded = 0
    var serverCPUSeconds: Double?
    /// The part of `serverCPUSeconds` spent in the kernel (system time), to a clock tick (10 ms):
    /// on loopback, sending an event to a subscriber also runs the receiving side's TCP in the
    /// sender's time.
    var serverSystemCPUSeconds: Double?
    var deliveriesPerServerCPUSecond: Double?
    /// This process's CPU time over the same span as `serverCPUSeconds`: when the two together
    /// near the machine's cores, the latencies measure the wait for a core as much as the server.
    var generatorCPUSeconds: Double?
}

private func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

extension Duration {
    fileprivate var seconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }
}
