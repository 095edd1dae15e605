//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

import HeraldTestSupport

@testable import SSEClient

@Suite("Reconnection state machine")
struct ReconnectionStateMachineTests {
    let clock = ManualClock()
    var generator = SystemRandomNumberGenerator()

    func machine(maximumAttempts: Int? = nil) -> ReconnectionStateMachine<ManualClock.Instant> {
        ReconnectionStateMachine(
            policy: .init(
                reconnectionTime: .seconds(3),
                maximumDelay: .seconds(30),
                resetInterval: .seconds(60),
                maximumAttempts: maximumAttempts
            )
        )
    }

    func delay(_ action: ReconnectionStateMachine<ManualClock.Instant>.Action) -> Duration? {
        if case .reconnect(let delay) = action { return delay }
        return nil
    }

    @Test mutating func theFirstReconnectionWaitsExactlyTheReconnectionTime() {
        var machine = self.machine()
        machine.opened(at: self.clock.now)
        self.clock.advance(by: .seconds(5))
        #expect(machine.connectionLost(at: self.clock.now, using: &self.generator) == .reconnect(after: .seconds(3)))
    }

    @Test mutating func aRetryFieldSetsTheReconnectionTime() {
        var machine = self.machine()
        machine.opened(at: self.clock.now)
        machine.retryReceived(.milliseconds(250))
        #expect(machine.connectionLost(at: self.clock.now, using: &self.generator) == .reconnect(after: .milliseconds(250)))
    }

    /// A server may ask for `retry: 0`: the first reconnection is then immediate, but failures in
    /// a row still back off, from 100 ms, rather than try a server that is down in a busy loop.
    @Test mutating func aZeroReconnectionTimeStillBacksOff() {
        var machine = self.machine()
        machine.opened(at: self.clock.now)
        machine.retryReceived(.zero)
        var delays: [Duration] = []
        for _ in 0..<12 {
            delays.append(self.delay(machine.connectionLost(at: self.clock.now, using: &self.generator))!)
        }
        #expect(delays[0] == .zero)
        // The n-th failure waits between half and all of 100 ms × 2^(n−1), capped at 30 s.
        for (index, delay) in delays.enumerated().dropFirst() {
            let full = min(.milliseconds(100) * (1 << index), .seconds(30))
            #expect(delay <= full && delay >= full / 2, "\(delay) for \(full)")
        }
    }

    /// A cap of zero (a configuration's mistake) does not make a busy loop either.
    @Test mutating func aZeroCapStillWaits() {
        var machine = ReconnectionStateMachine<ManualClock.Instant>(
            policy: .init(reconnectionTime: .zero, maximumDelay: .zero, resetInterval: .seconds(60), maximumAttempts: nil)
        )
        _ = machine.connectionLost(at: self.clock.now, using: &self.generator)
        for _ in 0..<5 {
            let delay = self.delay(machine.connectionLost(at: self.clock.now, using: &self.generator))!
            #expect(delay >= .milliseconds(50) && delay <= .milliseconds(100), "\(delay)")
        }
    }

    @Test mutating func failuresInARowBackOffExponentiallyWithJitterUpToTheCap() {
        var machine = self.machine()
        var delays: [Duration] = []
        for _ in 0..<8 {
            delays.append(self.delay(machine.connectionLost(at: self.clock.now, using: &self.generator))!)
        }
        #expect(delays[0] == .seconds(3))
        // The n-th failure waits between half and all of 3 s × 2^(n−1), capped at 30 s.
        let full: [Duration] = [.seconds(3), .seconds(6), .seconds(12), .seconds(24), .seconds(30), .seconds(30), .seconds(30), .seconds(30)]
        for (delay, full) in zip(delays, full).dropFirst() {
            #expect(delay <= full && delay >= full / 2, "\(delay) for \(full)")
        }
        #expect(Set(delays.dropFirst(4)).count > 1, "jitter spreads the waits")
    }

    @Test mutating func aConnectionThatStayedUpResetsTheBackOff() {
        var machine = self.machine()
        for _ in 0..<4 { _ = machine.connectionLost(at: self.clock.now, using: &self.generator) }
        #expect(machine.failures == 4)
        machine.opened(at: self.clock.now)
        self.clock.advance(by: .seconds(59))
        _ = machine.connectionLost(at: self.clock.now, using: &self.generator)
        #expect(machine.failures == 5, "59 s is not long enough")
        machine.opened(at: self.clock.now)
        self.clock.advance(by: .seconds(60))
        #expect(machine.connectionLost(at: self.clock.now, using: &self.generator) == .reconnect(after: .seconds(3)))
        #expect(machine.failures == 1)
    }

    @Test mutating func itGivesUpAfterTheMaximumAttempts() {
        var machine = self.machine(maximumAttempts: 2)
        #expect(self.delay(machine.connectionLost(at: self.clock.now, using: &self.generator)) != nil)
        #expect(self.delay(machine.connectionLost(at: self.clock.now, using: &self.generator)) != nil)
        #expect(machine.connectionLost(at: self.clock.now, using: &self.generator) == .giveUp)
    }

    @Test mutating func anOpenedStreamStartsTheAttemptsAgainButNotTheBackOff() {
        var machine = self.machine(maximumAttempts: 2)
        for _ in 0..<10 {
            // A server that accepts and closes at once: never given up on, but backed off from.
            machine.opened(at: self.clock.now)
            #expect(self.delay(machine.connectionLost(at: self.clock.now, using: &self.generator)) != nil)
        }
        #expect(machine.failures == 10)
        #expect(machine.attemptsSinceOpen == 1)
    }

    @Test mutating func zeroAttemptsNeverReconnects() {
        var machine = self.machine(maximumAttempts: 0)
        machine.opened(at: self.clock.now)
        self.clock.advance(by: .seconds(120))
        #expect(machine.connectionLost(at: self.clock.now, using: &self.generator) == .giveUp)
    }
}
