//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

// Appends updates one at a time to the in-memory history, as a hub's publishes do, and prints how
// long each append took as a Markdown row for docs/PERFORMANCE.md. Every publish takes the
// history's lock, on the event loop that read it: an append that takes milliseconds holds up the
// publishes of every loop, so the slowest appends matter as much as the total.
//
//   swift run -c release HistoryBenchmark [--updates N] [--history N] [--quick]
//
// `--quick` appends 20 000 updates into a history of 5 000: a check that it runs, not a measure.

import Foundation
import SSEHub

func value(of option: String, default fallback: Int) -> Int {
    guard let index = CommandLine.arguments.firstIndex(of: option), index + 1 < CommandLine.arguments.count,
        let value = Int(CommandLine.arguments[index + 1]), value > 0
    else { return fallback }
    return value
}

let quick = CommandLine.arguments.contains("--quick")
let count = quick ? 20_000 : value(of: "--updates", default: 400_000)
let history = quick ? 5_000 : value(of: "--history", default: Retention().count)

// The updates first, so that only the appends are timed: IDs and topics as `herald bench` makes them.
let updates = (0..<count).map { n in
    [Update(id: "urn:uuid:\(UUID().uuidString.lowercased())", topics: ["https://example.com/topics/\(n % 1_000)"], data: "\(n) 0123456789")]
}
let store = InMemoryEventStore(retention: try Retention(count: history))
let clock = ContinuousClock()
let started = clock.now
// Off the main actor, where this file's code runs: there every append would go to another thread
// and back, and the times would be the trips'.
let nanoseconds = try await Task.detached {
    var nanoseconds = [UInt64](repeating: 0, count: count)
    for (index, update) in updates.enumerated() {
        let before = DispatchTime.now().uptimeNanoseconds
        _ = try await store.append(update)
        nanoseconds[index] = DispatchTime.now().uptimeNanoseconds - before
    }
    return nanoseconds
}.value
let elapsed = clock.now - started
let kept = try await store.size().updates
guard kept == min(count, history) else {
    print("HistoryBenchmark: the history keeps \(kept) updates, not \(min(count, history))")
    exit(1)
}

let sorted = nanoseconds.sorted()
func milliseconds(_ fraction: Double) -> String {
    String(format: "%.3f", Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) / 1e6)
}
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
print("| appends | history | appends/s | p50 / p99.9 / max, ms | appends over 1 ms |")
print("|---:|---:|---:|---|---:|")
print(
    "| \(count) | \(history) | \(Int(Double(count) / seconds)) | \(milliseconds(0.5)) / \(milliseconds(0.999)) / "
        + "\(String(format: "%.3f", Double(sorted.last ?? 0) / 1e6)) | \(nanoseconds.filter { $0 > 1_000_000 }.count) |"
)
