//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import SSECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode a text/event-stream into JSON lines.",
        discussion: """
            Reads a raw event stream from standard input, or from FILE, and writes one JSON object \
            per line as soon as it is decoded:

              {"type": "<event type>", "data": "<data>", "lastEventId": "<last event ID>"}
                for every dispatched event, and
              {"retry": <milliseconds>}
                for every valid retry field, when its line is read.

            Exits 0 at the end of the input; on a limit or an I/O error it says why on standard \
            error and exits 1.
            """
    )

    @Argument(help: "The file to read. Standard input when left out or '-'.")
    var file: String?

    @Option(help: "The largest line, and the largest data of one event, in bytes.")
    var maxEventSize: Int = ServerSentEventParser.Configuration().maximumEventSize

    func validate() throws {
        guard self.maxEventSize > 0 else {
            throw ValidationError("--max-event-size must be a positive number of bytes.")
        }
    }

    func run() throws {
        let input: Int32
        if let file, file != "-" {
            input = open(file, O_RDONLY)
            guard input >= 0 else { throw CommandFailure("cannot open \(file): \(errorDescription())") }
        } else {
            input = STDIN_FILENO
        }
        defer { if input != STDIN_FILENO { close(input) } }

        var parser = ServerSentEventParser(configuration: .init(maximumEventSize: self.maxEventSize))
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var output: [UInt8] = []
        while true {
            let count = chunk.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw CommandFailure("cannot read \(self.file ?? "standard input"): \(errorDescription())")
            }
            if count == 0 { break }
            do {
                try parser.parse(chunk[0..<count]) { JSONLines.append($0, to: &output) }
            } catch {
                // Events decoded before the failure are still written.
                try writeAll(output)
                throw CommandFailure("\(error) (offending input in \(self.file ?? "standard input"))")
            }
            // Everything this chunk completed goes out now: a live stream is shown as it arrives.
            try writeAll(output)
            output.removeAll(keepingCapacity: true)
        }
        parser.finish()
    }
}
