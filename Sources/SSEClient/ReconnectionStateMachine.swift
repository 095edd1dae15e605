//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

/// Decides when an ``EventSource`` reconnects, and when it gives up. No I/O and no clock of its
/// own: instants come in from the caller's clock, so that tests drive it with a manual one.
///
/// - The first reconnection after a connection that stayed up waits exactly the reconnection
///   time, as a browser does (3 s, or what the last `retry` field said).
/// - Each further failure in a row doubles the wait, from the reconnection time but at least
///   ``minimumBackOff`` (a server may ask for `retry: 0`, and a client should not then try a
///   server that is down in a busy loop), capped at `maximumDelay` (or that least wait), with
///   jitter: a random part of up to half the wait is taken off, so that many clients do not come
///   back in step.
/// - A connection that stayed open for `resetInterval` or longer ends the run of failures.
/// - After `maximumAttempts` reconnections in a row that open no stream at all, it gives up. A
///   server that accepts and closes at once is backed off from, but never given up on.
struct ReconnectionStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    struct Policy: Sendable {
        var reconnectionTime: Duration
        var maximumDelay: Duration
        var resetInterval: Duration
        var maximumAttempts: Int?
    }

    enum Action: Equatable {
        /// Connect again after this delay.
        case reconnect(after: Duration)
        /// Stop: the attempts are used up.
        case giveUp
    }

    let policy: Policy
    /// The least wait that backing off doubles from.
    static var minimumBackOff: Duration { .milliseconds(100) }
    /// The reconnection time, as the last valid `retry` field set it.
    private(set) var reconnectionTime: Duration
    /// Reconnections in a row since a connection last stayed up: the back-off exponent.
    private(set) var failures = 0
    /// Reconnections in a row since a stream last opened: what `maximumAttempts` limits.
    private(set) var attemptsSinceOpen = 0
    private var openedAt: Instant?

    init(policy: Policy) {
        self.policy = policy
        self.reconnectionTime = policy.reconnectionTime
    }

    /// A `retry` field arrived.
    mutating func retryReceived(_ reconnectionTime: Duration) {
        self.reconnectionTime = reconnectionTime
    }

    /// The stream opened (a 200 response with the right content type).
    mutating func opened(at now: Instant) {
        self.openedAt = now
        self.attemptsSinceOpen = 0
    }

    /// The stream ended, the network failed, or a connection attempt failed: what now?
    mutating func connectionLost(at now: Instant, using generator: inout some RandomNumberGenerator) -> Action {
        if let openedAt = self.openedAt, openedAt.duration(to: now) >= self.policy.resetInterval {
            self.failures = 0
        }
        self.openedAt = nil
        if let maximum = self.policy.maximumAttempts, self.attemptsSinceOpen >= maximum {
            return .giveUp
        }
        self.attemptsSinceOpen += 1
        self.failures += 1
        guard self.failures > 1 else {
            return .reconnect(after: self.reconnectionTime)
        }
        // max(reconnectionTime, minimumBackOff) × 2^(failures − 1), capped (the cap no lower than
        // minimumBackOff either); the doubling stops once past the cap.
        let cap = max(self.policy.maximumDelay, Self.minimumBackOff)
        var delay = max(self.reconnectionTime, Self.minimumBackOff)
        var doublings = self.failures - 1
        while doublings > 0, delay < cap {
            delay *= 2
            doublings -= 1
        }
        delay = min(delay, cap)
        let jitter = Double.random(in: 0...0.5, using: &generator)
        return .reconnect(after: delay - delay * jitter)
    }
}
