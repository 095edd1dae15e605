//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
public import Logging
import Metrics
public import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import SSECore
import SSENIO

/// The hub's core: stores each update, then hands the same encoded bytes to every subscriber
/// whose selectors match, in the order of the history.
///
/// Resuming is exact: a subscriber is registered for live updates first, and its replay from the
/// store stops at the last update fanned out at that moment, so an update published during the
/// replay is delivered once, live, and never lost.
public final class Hub: Sendable {
    /// How the hub treats its subscribers.
    public struct Configuration: Sendable {
        /// Updates waiting for one subscriber before it is cut as too slow (it then reconnects
        /// and catches up from the history, so nothing is lost and the others never wait).
        public var subscriberQueueLimit: Int = 1_000
        /// Bytes of updates waiting for one subscriber before it is cut as too slow. (The bytes
        /// of an update are shared by all its subscribers: this bounds what one slow subscriber
        /// keeps alive.)
        public var subscriberQueueBytes: Int = 16 << 20
        /// Whether the hub tracks its subscriptions: it then publishes a private update on
        /// `/.well-known/mercure/subscriptions/{topic}/{subscriber}` when a subscription starts
        /// and when it ends, and answers the subscriptions API. Off by default, as in Mercure.
        public var tracksSubscriptions = false

        /// Creates a configuration with the defaults.
        public init() {}

        /// Throws the first setting the hub cannot work with.
        func check() throws(ConfigurationError) {
            guard self.subscriberQueueLimit > 0 else {
                throw ConfigurationError("subscriberQueueLimit must be at least 1 (it is \(self.subscriberQueueLimit))")
            }
            guard self.subscriberQueueBytes > 0 else {
                throw ConfigurationError("subscriberQueueBytes must be at least 1 (it is \(self.subscriberQueueBytes))")
            }
        }
    }

    /// What a subscriber asked to resume from, and what the response says it resumes after.
    public struct Resumption: Sendable, Hashable {
        /// The `Last-Event-ID` to send back: the ID before the first update replayed, or
        /// `earliest` when everything kept is replayed.
        public let lastEventID: String
    }

    /// A class: the fan-out looks one up per delivery, and copies one reference, not its fields.
    private final class Subscriber: Sendable {
        let id: Int
        let selectors: [TopicSelector]
        /// What the subscriber's token allows of private updates (`mercure.subscribe`).
        let grants: [TopicSelector]
        let queue: SubscriberQueue
        /// How the subscriptions API shows it, when the hub tracks subscriptions.
        let tracked: TrackedSubscriber?

        init(id: Int, selectors: [TopicSelector], grants: [TopicSelector], queue: SubscriberQueue, tracked: TrackedSubscriber?) {
            self.id = id
            self.selectors = selectors
            self.grants = grants
            self.queue = queue
            self.tracked = tracked
        }
    }

    private struct Registry {
        /// The last update fanned out.
        var lastSequence: UInt64
        /// Its ID, `nil` before the first.
        var lastEventID: String?
        /// Updates stored but waiting for an earlier one to be fanned out first.
        var waiting: [UInt64: (Update, EncodedEvent)] = [:]
        private(set) var subscribers: [Int: Subscriber] = [:]
        private var index = SubscriberIndex()
        var nextSubscriberID = 0
        /// How a public update on these topics reaches its subscribers, made by the first such
        /// update since the subscribers last changed: the fan-out then costs a few operations per
        /// event loop, not several per subscriber.
        private var routes: [[String]: Route] = [:]

        init(lastSequence: UInt64, lastEventID: String?) {
            self.lastSequence = lastSequence
            self.lastEventID = lastEventID
        }

        /// The subscribers of public updates on some topics: those whose connection takes events
        /// directly, by event loop, and the others (queued until their connection is attached).
        struct Route {
            var direct = DirectWrites()
            var queued: [Subscriber] = []
        }

        mutating func insert(_ subscriber: Subscriber) {
            self.subscribers[subscriber.id] = subscriber
            self.index.insert(subscriber.id, selectors: subscriber.selectors)
            self.routes.removeAll()
        }

        @discardableResult
        mutating func remove(_ id: Int) -> Subscriber? {
            guard let subscriber = self.subscribers.removeValue(forKey: id) else { return nil }
            self.index.remove(id, selectors: subscriber.selectors)
            self.routes.removeAll()
            return subscriber
        }

        /// Calls `body` once for every subscriber with a selector matching one of `topics`.
        mutating func forEachSubscriber(of topics: [String], _ body: (Subscriber) -> Void) {
            let subscribers = self.subscribers
            self.index.forEachSubscriber(of: topics) { id in
                if let subscriber = subscribers[id] { body(subscriber) }
            }
        }

        /// The route of public updates on `topics`.
        mutating func route(_ topics: [String]) -> Route {
            if let route = self.routes[topics] { return route }
            var route = Route()
            self.forEachSubscriber(of: topics) { subscriber in
                if let (sink, writer) = subscriber.queue.directSink {
                    route.direct.add(sink, of: subscriber.queue, to: writer)
                } else {
                    route.queued.append(subscriber)
                }
            }
            if self.routes.count >= SubscriberIndex.cachedTopicsLimit { self.routes.removeAll() }
            self.routes[topics] = route
            return route
        }

        /// Forgets the route of `topics`: one of its queued subscribers now takes events directly.
        mutating func forgetRoute(_ topics: [String]) {
            self.routes[topics] = nil
        }
    }

    /// The history.
    public let store: any EventStore
    /// `store`, if it answers appends through a callback (cast once, not at each publish).
    private let answeringStore: (any AnswersAppends)?
    /// The configuration.
    public let configuration: Configuration
    private let registry: NIOLockedValueBox<Registry>
    /// Subscription events on their way to the store, by a key of their own.
    private let announcements = NIOLockedValueBox((nextKey: 0, tasks: [Int: Task<Void, Never>]()))
    let logger: Logger
    /// How the Mercure routes check and answer their requests, set by `addRoutes`: the HTTP/1
    /// server's door (``http1Server(configuration:requestTimeout:)``) opens subscriptions and
    /// takes publishes the same way.
    let mercureRoute = NIOLockedValueBox<Authorizer?>(nil)
    /// The last heartbeat comment the subscribers were given, encoded once for all of them.
    let heartbeat = NIOLockedValueBox<(comment: String, event: EncodedEvent)?>(nil)
    private let allocator = ByteBufferAllocator()
    // Through swift-metrics: the application picks the backend (herald serve: Prometheus).
    private let publishes = Counter(label: "herald_publishes_total")
    private let deliveries = Counter(label: "herald_deliveries_total")
    let subscribersCut = Counter(label: "herald_subscribers_cut_total")
    private let subscribers = Gauge(label: "herald_subscribers")
    private let storeLatency = Metrics.Timer(label: "herald_store_append_seconds")
    private let storeUpdates = Gauge(label: "herald_store_updates")
    private let storeBytes = Gauge(label: "herald_store_bytes")

    /// A hub on `store`, continuing its history.
    ///
    /// - Throws: ``ConfigurationError`` for a limit in `configuration` that is not positive, and
    ///   what `store` throws when it cannot read where its history ends.
    public init(store: any EventStore, configuration: Configuration = .init(), logger: Logger = Logger(label: "herald.hub")) async throws {
        try configuration.check()
        self.store = store
        self.answeringStore = store as? any AnswersAppends
        self.configuration = configuration
        self.logger = logger
        self.registry = NIOLockedValueBox(
            Registry(lastSequence: try await store.lastSequence(), lastEventID: try await store.lastEventID())
        )
    }

    /// The number of subscribers connected now.
    public var subscriberCount: Int {
        self.registry.withLockedValue { $0.subscribers.count }
    }

    /// Reads the store's size into the `herald_store_updates` and `herald_store_bytes` gauges:
    /// call it before metrics are exported (`herald serve` does on each scrape of `/metrics`).
    public func recordStoreSize() async throws {
        let size = try await self.store.size()
        self.storeUpdates.record(size.updates)
        self.storeBytes.record(size.bytes)
    }

    /// Stores `update` and delivers it to the matching subscribers. Returns once it is stored
    /// (durably, for a durable store); the subscribers may have it before (see
    /// ``EventStore/append(_:written:)``).
    ///
    /// Publishers cannot outrun the hub's own writes: when an event loop that writes to the
    /// update's subscribers already had a backlog of writes it had not begun (two thousand events
    /// times subscribers: 3 to 20 ms of its work, at the server CPU per delivery measured in
    /// docs/PERFORMANCE.md; or four events), the call also waits until that loop has written them
    /// and this one. So what waits for a loop stays short, and so does the latency of delivery. A
    /// slow subscriber does not hold it up: the loop hands events to the connection's buffer, and a
    /// subscriber that does not read is cut.
    ///
    /// - Throws: ``PublishError`` for an update without a topic, `ServerSentEventError` for an ID,
    ///   type or retry an event cannot carry, ``EventStoreError/duplicateID`` for an ID the history
    ///   holds, or why the store could not take it.
    public func publish(_ update: Update) async throws {
        try await self.publish(update, idIsNew: false)
    }

    /// Publishes an update whose ID the hub makes, as for a publish request without one, and
    /// returns it: as ``publish(_:)`` does, but the ID needs no check against the history. With
    /// ``SQLiteEventStore`` the subscribers then have the update before it is written, not after,
    /// as they do for the hub's own publish route (see ``EventStore/append(_:written:)``).
    ///
    /// The ID is a `urn:uuid:` (a version 7 UUID), unique and in the order of the calls that made
    /// it, to the millisecond.
    ///
    /// - Throws: as ``publish(_:)`` does (never ``EventStoreError/duplicateID``).
    @discardableResult
    public func publish(
        topics: [String],
        data: String,
        isPrivate: Bool = false,
        type: String? = nil,
        retry: Duration? = nil
    ) async throws -> Update {
        let update = Update(id: Self.makeID(), topics: topics, data: data, isPrivate: isPrivate, type: type, retry: retry)
        try await self.publish(update, idIsNew: true)
        return update
    }

    /// Publishes `update` as ``publish(_:)`` does; `idIsNew` says that the hub made its ID (see
    /// `AnswersAppends`).
    func publish(_ update: Update, idIsNew: Bool) async throws {
        try await withCheckedThrowingContinuation { continuation in
            self.publish(update, idIsNew: idIsNew) { continuation.resume(with: $0) }
        }
    }

    /// Publishes `update` as ``publish(_:)`` does, and calls `answer` with its outcome, on
    /// whichever thread finishes it. With a store that answers appends through a callback (the
    /// hub's own stores), no task runs between the call and the answer. `idIsNew` says that the
    /// hub made the update's ID (see `AnswersAppends`).
    func publish(_ update: Update, idIsNew: Bool, then answer: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let buffer: EncodedEvent
        do {
            guard !update.topics.isEmpty else { throw PublishError("an update needs at least one topic") }
            buffer = EncodedEvent(encoding: try update.event(), allocator: self.allocator)  // once, for every subscriber
        } catch {
            return answer(.failure(error))
        }
        let started = ContinuousClock.now
        let behind = NIOLockedValueBox<[LoopWriter]>([])
        let written: @Sendable ([StoredUpdate]) -> Void = { stored in
            guard let stored = stored.first else { return }
            let writers = self.fanOut([(stored.sequence, update, buffer)])
            behind.withLockedValue { $0 = writers }
        }
        let stored: AppendAnswer = { result in
            if case .failure(let error) = result { return answer(.failure(error)) }
            self.storeLatency.record(duration: ContinuousClock.now - started)
            self.publishes.increment()
            // Flow control (above): wait for the loops that were behind.
            let writers = behind.withLockedValue { $0 }
            guard !writers.isEmpty else { return answer(.success(())) }
            let remaining = NIOLockedValueBox(writers.count)
            for writer in writers {
                writer.afterWrites {
                    if remaining.withLockedValue({ $0 -= 1; return $0 }) == 0 { answer(.success(())) }
                }
            }
        }
        if let store = self.answeringStore {
            store.append([update], idsAreNew: idIsNew, written: written, then: stored)
        } else {
            Task {
                do {
                    stored(.success(try await self.store.append([update], written: written)))
                } catch {
                    stored(.failure(error))
                }
            }
        }
    }

    /// Delivers updates that another node stored in the shared history (see
    /// ``PostgresEventStore/follow(_:every:)``), in order with this node's own. Updates already
    /// fanned out are skipped; when the history no longer holds the ones before the first given
    /// (retention dropped them), the hub moves on to it.
    public func deliver(_ stored: [StoredUpdate]) throws {
        let encoded = try stored.map { ($0.sequence, $0.update, EncodedEvent(encoding: try $0.update.event(), allocator: self.allocator)) }
        self.registry.withLockedValue { registry in
            if let first = stored.first, first.sequence > registry.lastSequence + 1, registry.waiting[registry.lastSequence + 1] == nil {
                registry.lastSequence = first.sequence - 1
            }
        }
        self.fanOut(encoded)
    }

    /// The sequence of the last update fanned out.
    public var lastSequence: UInt64 {
        self.registry.withLockedValue { $0.lastSequence }
    }

    /// Hands stored updates to their subscribers, in the order of the history. Returns the loops'
    /// writers that were behind (see ``publish(_:)``).
    @discardableResult
    private func fanOut(_ updates: [(sequence: UInt64, update: Update, event: EncodedEvent)]) -> [LoopWriter] {
        var delivered = 0
        var behind: [LoopWriter] = []
        let cut = self.registry.withLockedValue { registry in
            for (sequence, update, event) in updates where sequence > registry.lastSequence && registry.waiting[sequence] == nil {
                registry.waiting[sequence] = (update, event)
            }
            var cut: [SubscriberQueue] = []
            // Fan out in history order, whatever order concurrent publishes finished storing in.
            while let (next, bytes) = registry.waiting.removeValue(forKey: registry.lastSequence + 1) {
                registry.lastSequence += 1
                registry.lastEventID = next.id
                var slow: [Subscriber] = []
                var direct = DirectWrites()
                if next.isPrivate {
                    registry.forEachSubscriber(of: next.topics) { subscriber in
                        guard subscriber.grants.contains(where: { $0.matchesAny(of: next.topics) }) else { return }
                        delivered += 1
                        if !subscriber.queue.push(bytes, direct: &direct) { slow.append(subscriber) }
                    }
                } else {
                    let route = registry.route(next.topics)
                    direct = route.direct
                    delivered += route.direct.count + route.queued.count
                    for subscriber in route.queued where !subscriber.queue.push(bytes, direct: &direct) {
                        slow.append(subscriber)
                    }
                    if direct.count != route.direct.count { registry.forgetRoute(next.topics) }
                }
                // Under the lock: the loops get the events in order.
                for writer in direct.enqueue(bytes) where !behind.contains(where: { $0 === writer }) {
                    behind.append(writer)
                }
                for subscriber in slow where registry.remove(subscriber.id) != nil {
                    self.logger.notice("subscriber cut: too slow", metadata: ["subscriber": "\(subscriber.id)"])
                    cut.append(subscriber.queue)
                }
            }
            return cut
        }
        // Outside the lock: finishing runs the subscription's end, which takes it.
        for queue in cut { queue.finish() }
        self.deliveries.increment(by: delivered)
        self.subscribersCut.increment(by: cut.count)
        return behind
    }

    /// Subscribes to the updates matching `selectors`, after `lastEventID` if given (`earliest`
    /// for everything kept; an ID the history does not hold also replays everything kept).
    ///
    /// - Parameters:
    ///   - selectors: The topic selectors.
    ///   - lastEventID: Where to resume, if anywhere.
    ///   - claims: The subscriber's token, if it has one: a private update is delivered only when
    ///     one of its topics matches one of the `mercure.subscribe` selectors; the subscription
    ///     ends when the token expires.
    /// - Returns: The encoded events, replay first, then live; and, when `lastEventID` was given,
    ///   what the response's `Last-Event-ID` header must say.
    public func subscribe(
        _ selectors: [TopicSelector],
        lastEventID: String?,
        claims: MercureClaims? = nil
    ) async throws -> (events: Subscription, resumption: Resumption?) {
        let (queue, registeredThrough, tracked) = self.register(selectors, claims: claims)
        if let tracked {
            if let directory = self.store as? any SubscriptionDirectory {
                do {
                    try await directory.insert(tracked)
                } catch {
                    self.logger.error("subscription not listed", metadata: ["subscriber": "\(tracked.id)", "error": "\(String(reflecting: error))"])
                }
            }
            await self.publishSubscriptionEvents(for: tracked, active: true)
        }

        guard let lastEventID else {
            return (Subscription(replay: [], queue: queue), nil)
        }
        do {
            var replayed: [StoredUpdate]
            var resumption = Resumption(lastEventID: "earliest")
            if lastEventID != "earliest", let after = try await self.store.updates(after: lastEventID, through: registeredThrough) {
                replayed = after
                resumption = Resumption(lastEventID: lastEventID)
            } else {
                replayed = try await self.store.updates(through: registeredThrough)
            }
            replayed.removeAll { !Self.delivers($0.update, to: selectors, grants: claims?.subscribe ?? []) }
            let replay = try replayed.map { self.allocator.buffer(encoding: try $0.update.event()) }
            return (Subscription(replay: replay, queue: queue), resumption)
        } catch {
            queue.finish()  // no subscription without its replay
            throw error
        }
    }

    /// Subscribes to the updates matching `selectors` from now on, as
    /// ``subscribe(_:lastEventID:claims:)`` does with no `lastEventID`, with no waiting: for a hub
    /// that does not track subscriptions (it would publish their events).
    func subscribeNow(_ selectors: [TopicSelector], claims: MercureClaims?) -> Subscription {
        precondition(!self.configuration.tracksSubscriptions, "a tracked subscription's events are published: use subscribe")
        return Subscription(replay: [], queue: self.register(selectors, claims: claims).queue)
    }

    /// Adds a subscriber to the registry, and its end to its queue: its queue, the sequence of the
    /// last update fanned out before it (its replay goes up to there), and what the hub tracks of
    /// it, if it tracks subscriptions.
    private func register(
        _ selectors: [TopicSelector],
        claims: MercureClaims?
    ) -> (queue: SubscriberQueue, registeredThrough: UInt64, tracked: TrackedSubscriber?) {
        let grants = claims?.subscribe ?? []
        let queue = SubscriberQueue(
            limits: .init(events: self.configuration.subscriberQueueLimit, bytes: self.configuration.subscriberQueueBytes)
        )
        let tracked = self.configuration.tracksSubscriptions
            ? TrackedSubscriber(id: Self.makeID(), topics: selectors.map(\.description), payload: claims?.payload)
            : nil
        let (id, registeredThrough) = self.registry.withLockedValue { registry in
            let id = registry.nextSubscriberID
            registry.nextSubscriberID += 1
            registry.insert(Subscriber(id: id, selectors: selectors, grants: grants, queue: queue, tracked: tracked))
            self.subscribers.record(registry.subscribers.count)
            return (id, registry.lastSequence)
        }
        // The token's expiry ends the stream, and so closes the connection. (An expiry past what
        // the timer counts, some 292 years, never comes: a token of year 9999 is a usual "never".)
        let expiry = claims?.expiresAt.map { expiresAt in
            let nanoseconds = expiresAt.timeIntervalSinceNow * 1e9
            return MultiThreadedEventLoopGroup.singleton.any().scheduleTask(
                in: .nanoseconds(nanoseconds < Double(Int64.max) ? Int64(nanoseconds) : .max)
            ) {
                queue.finish()
            }
        }
        queue.onFinish { [registry, subscribers] in
            expiry?.cancel()
            let count = registry.withLockedValue { registry in
                registry.remove(id)
                return registry.subscribers.count
            }
            subscribers.record(count)
            if let tracked {
                self.announcements.withLockedValue { announcements in
                    let key = announcements.nextKey
                    announcements.nextKey += 1
                    announcements.tasks[key] = Task {
                        await self.unlist(tracked)
                        await self.publishSubscriptionEvents(for: tracked, active: false)
                        // Runs after the insertion, which holds the lock.
                        self.announcements.withLockedValue { _ = $0.tasks.removeValue(forKey: key) }
                    }
                }
            }
        }
        return (queue, registeredThrough, tracked)
    }

    /// Waits until the subscription events of subscriptions that have ended are stored: call it
    /// once the server has stopped, before closing the store.
    public func waitForSubscriptionEvents() async {
        while let task = self.announcements.withLockedValue({ $0.tasks.values.first }) {
            await task.value
        }
    }

    /// The subscriptions active now (when the hub tracks them), on every node when the store is
    /// shared, and the ID of the last update fanned out (`earliest` before the first): resuming
    /// the subscription events from it misses no change to the list.
    func activeSubscriptions() async throws -> (lastEventID: String, subscribers: [TrackedSubscriber]) {
        let (lastEventID, local) = self.registry.withLockedValue { registry in
            (registry.lastEventID ?? "earliest", registry.subscribers.values.compactMap(\.tracked))
        }
        guard let directory = self.store as? any SubscriptionDirectory else { return (lastEventID, local) }
        return (lastEventID, try await directory.subscribers())  // read after the ID: see SubscriptionDirectory
    }

    /// The IDs of this hub's tracked subscribers.
    func trackedSubscriberIDs() -> [String] {
        self.registry.withLockedValue { $0.subscribers.values.compactMap(\.tracked?.id) }
    }

    /// Removes `subscriber` from a shared directory, if there is one, before its end is announced.
    private func unlist(_ subscriber: TrackedSubscriber) async {
        guard let directory = self.store as? any SubscriptionDirectory else { return }
        do {
            try await directory.remove(subscriber)
        } catch {
            self.logger.error("subscription not unlisted", metadata: ["subscriber": "\(subscriber.id)", "error": "\(String(reflecting: error))"])
        }
    }

    /// Announces the ends of subscriptions that another node held and can no longer announce
    /// (it died): the store has already removed them from its directory.
    func announceEnds(of subscribers: [TrackedSubscriber]) async {
        for subscriber in subscribers {
            await self.publishSubscriptionEvents(for: subscriber, active: false)
        }
    }

    /// Publishes that `subscriber`'s subscriptions started or ended: one private update per topic
    /// selector, on the subscription's own URL.
    private func publishSubscriptionEvents(for subscriber: TrackedSubscriber, active: Bool) async {
        for topic in subscriber.topics {
            let document = subscriber.document(topic: topic, active: active)
            do {
                try await self.publish(topics: [document.id], data: document.json(), isPrivate: true)
            } catch {
                self.logger.error(
                    "subscription event not published",
                    metadata: ["topic": "\(document.id)", "error": "\(String(describing: error))"]
                )
            }
        }
    }

    /// Whether a subscriber with `selectors` and `grants` receives `update`: one of its topics
    /// (canonical or alternate) matches a selector, and, if it is private, one matches a grant.
    private static func delivers(_ update: Update, to selectors: [TopicSelector], grants: [TopicSelector]) -> Bool {
        selectors.contains { $0.matchesAny(of: update.topics) }
            && (!update.isPrivate || grants.contains { $0.matchesAny(of: update.topics) })
    }
}

/// The encoded events of one subscription: the replay, then live updates.
///
/// The subscription ends when ``finish()`` is called, when the subscriber is cut as too slow,
/// when its token expires, or when the last copy of it is dropped.
public struct Subscription: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let replay: [ByteBuffer]
    let queue: SubscriberQueue
    private let lifetime: Lifetime

    /// Finishes the queue when the last copy of the subscription goes.
    private final class Lifetime: Sendable {
        let queue: SubscriberQueue
        init(_ queue: SubscriberQueue) { self.queue = queue }
        deinit { self.queue.finish() }
    }

    init(replay: [ByteBuffer], queue: SubscriberQueue) {
        self.replay = replay
        self.queue = queue
        self.lifetime = Lifetime(queue)
    }

    /// Ends the subscription: what is queued is still delivered, then the sequence ends (when the
    /// hub shuts down, so that clients reconnect elsewhere).
    public func finish() {
        self.queue.finish()
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(subscription: self, pending: self.replay[...])
    }

    /// The iterator of a ``Subscription``.
    public struct AsyncIterator: AsyncIteratorProtocol, Sendable {
        let subscription: Subscription
        var pending: ArraySlice<ByteBuffer>

        public mutating func next() async -> ByteBuffer? {
            if self.pending.isEmpty {
                self.pending = await self.subscription.queue.next()[...]
            }
            return self.pending.popFirst()
        }
    }
}
