//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser

@main
struct Herald: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Server-Sent Events tools.",
        subcommands: [Decode.self, Listen.self, Serve.self, Publish.self, Bench.self]
    )
}

/// A failure a command reports: ArgumentParser prints it as `Error: <message>` and exits with 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Throws the usage error for an option in seconds that is not a number from 0 (when `zeroMeans`
/// says what 0 does; above 0 otherwise) to `maximum` (a day by default). Infinity, NaN and
/// numbers too large for a duration are refused here, before anything converts them.
func checkSeconds(_ value: Double, of option: String, zeroMeans: String? = nil, maximum: Double = 86_400) throws {
    let minimumOK = zeroMeans == nil ? value > 0 : value >= 0
    guard minimumOK, value <= maximum else {
        let range = zeroMeans.map { "from 0 (\($0)) to" } ?? "above 0, at most"
        throw ValidationError("\(option) must be a number of seconds \(range) \(Int(maximum)).")
    }
}
