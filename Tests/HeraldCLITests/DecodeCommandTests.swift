//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import SSECore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `herald decode`, run as a process on real pipes and files.
@Suite("herald decode")
struct DecodeCommandTests {
    @Test func writesOneJSONLinePerEventAndRetry() async throws {
        let input = "retry: 2500\nid: 7\nevent: price\ndata: {\"p\": 1}\ndata: two\n\n: comment\ndata: next\n\ndata: dropped"
        let result = try await runHerald(["decode"], input: Array(input.utf8))
        #expect(result.status == 0)
        #expect(result.standardError == "")
        #expect(
            result.standardOutput == """
                {"retry": 2500}
                {"type": "price", "data": "{\\"p\\": 1}\\ntwo", "lastEventId": "7"}
                {"type": "message", "data": "next", "lastEventId": "7"}

                """
        )
    }

    @Test func everyLineIsJSONThatMatchesTheParser() async throws {
        // Control characters, quotes, backslashes, invalid UTF-8 and astral characters.
        var input: [UInt8] = Array("event: \u{1}\"\\\u{7F}\ndata: a\tb\r\ndata: 😀".utf8)
        input += [0xFF, 0xE2, 0x82]
        input += Array("\u{2028}\nid: \u{1B}[0m\n\nretry: 9\ndata:\n\n".utf8)
        let result = try await runHerald(["decode"], input: input)
        #expect(result.status == 0)

        var expected: [JSONLine] = []
        var parser = ServerSentEventParser()
        try parser.parse(input) { output in
            switch output {
            case .event(let event):
                expected.append(JSONLine(type: event.type, data: event.data, lastEventId: event.id ?? ""))
            case .retry(let duration):
                expected.append(JSONLine(retry: Int64(duration / .milliseconds(1))))
            }
        }
        let lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.last == "", "every line ends with a line feed")
        let decoded = try lines.dropLast().map { try JSONDecoder().decode(JSONLine.self, from: Data($0.utf8)) }
        #expect(decoded == expected)
        #expect(decoded.count == 3)
    }

    /// One line of `herald decode`'s output; decoding fails on a key of the wrong type.
    struct JSONLine: Decodable, Equatable {
        var type: String?
        var data: String?
        var lastEventId: String?
        var retry: Int64?
    }

    @Test func readsAFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("herald-decode-\(UUID().uuidString).txt")
        try Data("data: from a file\n\n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try await runHerald(["decode", file.path], input: [])
        #expect(result.status == 0)
        #expect(result.standardOutput == #"{"type": "message", "data": "from a file", "lastEventId": ""}"# + "\n")
    }

    @Test func aMissingFileFails() async throws {
        let result = try await runHerald(["decode", "/nonexistent/herald/stream.txt"], input: [])
        #expect(result.status == 1)
        #expect(result.standardError.contains("cannot open /nonexistent/herald/stream.txt"))
        #expect(result.standardOutput == "")
    }

    @Test func aLimitFailsAfterWritingTheEventsBeforeIt() async throws {
        let result = try await runHerald(
            ["decode", "--max-event-size", "10"],
            input: Array("data: ok\n\ndata: far too long for the limit\n\ndata: never\n\n".utf8)
        )
        #expect(result.status == 1)
        #expect(result.standardOutput == #"{"type": "message", "data": "ok", "lastEventId": ""}"# + "\n")
        #expect(result.standardError.contains("larger than the configured maximum event size"))
    }

    @Test(arguments: [["decode", "--max-event-size", "0"], ["decode", "--max-event-size", "x"], ["decode", "a", "b"]])
    func badArgumentsAreUsageErrors(_ arguments: [String]) async throws {
        let result = try await runHerald(arguments, input: [])
        #expect(result.status == 64)
        #expect(result.standardError.contains("Usage: herald decode"))
    }

    @Test func eventsAreWrittenAsTheyArrive() async throws {
        // A live stream: the first event must come out while standard input is still open.
        let process = Process()
        process.executableURL = heraldExecutable
        process.arguments = ["decode"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        input.fileHandleForWriting.write(Data("data: first\n\ndata: sec".utf8))
        let line = try readLine(from: output.fileHandleForReading.fileDescriptor, within: 10)
        #expect(line == #"{"type": "message", "data": "first", "lastEventId": ""}"#)
        input.fileHandleForWriting.write(Data("ond\n\n".utf8))
        let second = try readLine(from: output.fileHandleForReading.fileDescriptor, within: 10)
        #expect(second == #"{"type": "message", "data": "second", "lastEventId": ""}"#)
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}
