//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import SSEClient

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to an event stream and print its events as they arrive.",
        discussion: """
            A curl for Server-Sent Events: connects like a browser's EventSource (reconnecting with \
            Last-Event-ID when the stream ends) and prints each event at once. Exits 0 after \
            --max-events or --timeout, or when the server answers 204; a failed connection (another \
            status, with the server's reason when its body is text, a wrong content type, an \
            unreachable host once --max-attempts are used up) is reported on standard error with \
            exit status 1. Each reconnection, with its reason and its wait, is logged on standard \
            error.
            """
    )

    @Argument(help: "The http or https URL of the stream.")
    var url: String

    @Flag(help: "Print the JSON lines of 'herald decode' instead of the readable form.")
    var json = false

    @Option(help: "Exit after this many events.")
    var maxEvents: Int?

    @Option(help: "Exit after this many seconds.")
    var timeout: Double?

    @Option(name: [.customShort("H"), .long], help: "A request header, 'Name: value'. Repeatable.")
    var header: [String] = []

    @Option(help: "The last event ID to send on the first connection.")
    var lastEventID: String?

    @Option(help: "The request method.")
    var method: String = "GET"

    @Option(help: "The request body.")
    var data: String?

    @Flag(help: "Do not reconnect when the stream ends or fails.")
    var noReconnect = false

    @Option(help: "Reconnection attempts in a row that may fail before giving up.")
    var maxAttempts: Int = 5

    @Option(help: "Seconds to wait for each connection's response.")
    var connectTimeout: Double = 10

    @Option(help: "Seconds of silence after which the stream counts as stalled and is reconnected.")
    var readTimeout: Double = 300

    @OptionGroup var trust: Trust

    func validate() throws {
        for header in self.header where Self.parseHeader(header) == nil {
            throw ValidationError("--header '\(header)' is not of the form 'Name: value'.")
        }
        if let maxEvents, maxEvents < 1 { throw ValidationError("--max-events must be at least 1.") }
        if let timeout { try checkSeconds(timeout, of: "--timeout") }
        if self.maxAttempts < 0 { throw ValidationError("--max-attempts must not be negative.") }
        try checkSeconds(self.connectTimeout, of: "--connect-timeout")
        try checkSeconds(self.readTimeout, of: "--read-timeout")
        if self.method.isEmpty || self.method.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) {
            throw ValidationError("--method '\(self.method)' is not an HTTP method.")
        }
    }

    static func parseHeader(_ header: String) -> (name: String, value: String)? {
        guard let colon = header.firstIndex(of: ":") else { return nil }
        let name = header[..<colon].trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, !name.contains(where: { $0 == " " || $0 == "\t" }) else { return nil }
        return (name, header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces))
    }

    func run() async throws {
        var configuration = EventSource.Configuration()
        configuration.method = HTTPMethod(rawValue: self.method.uppercased())
        configuration.body = self.data.map { Array($0.utf8) }
        for header in self.header {
            if let (name, value) = Self.parseHeader(header) { configuration.headers.add(name: name, value: value) }
        }
        configuration.lastEventID = self.lastEventID ?? ""
        configuration.maximumAttempts = self.noReconnect ? 0 : self.maxAttempts
        configuration.connectTimeout = .seconds(self.connectTimeout)
        configuration.readTimeout = .seconds(self.readTimeout)
        configuration.tlsConfiguration = try self.trust.tlsConfiguration()

        var logger = Logger(label: "herald.listen")
        logger.logLevel = .info  // the source's reconnections: what a user waits on
        let source = EventSource(url: self.url, configuration: configuration, logger: logger)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.printEvents(of: source) }
            if let timeout = self.timeout {
                group.addTask {
                    try await Task.sleep(for: .seconds(timeout))
                    source.close()
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private func printEvents(of source: EventSource) async throws {
        var events = 0
        var bytes: [UInt8] = []
        do {
            for try await output in source.outputs {
                if self.json {
                    JSONLines.append(output, to: &bytes)
                } else if case .event(let event) = output {
                    Self.appendReadable(event, to: &bytes)
                }
                try writeAll(bytes)
                bytes.removeAll(keepingCapacity: true)
                if case .event = output {
                    events += 1
                    if let maxEvents = self.maxEvents, events >= maxEvents {
                        source.close()
                        return
                    }
                }
            }
        } catch let error as EventSourceError {
            throw CommandFailure("\(error)" + Trust.hint(for: error.underlying))
        }
    }

    /// `type #id` on one line, then each data line indented.
    static func appendReadable(_ event: ServerSentEvent, to bytes: inout [UInt8]) {
        bytes += Array(event.type.utf8)
        if let id = event.id { bytes += Array(" #\(id)".utf8) }
        bytes.append(0x0A)
        for line in event.data.split(separator: "\n", omittingEmptySubsequences: false) {
            bytes += Array("  \(line)\n".utf8)
        }
    }
}
