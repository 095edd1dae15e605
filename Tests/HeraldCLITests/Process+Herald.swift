//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `herald` executable that `swift build` put beside the test bundle.
let heraldExecutable: URL = {
    if let path = ProcessInfo.processInfo.environment["HERALD_EXECUTABLE"] {
        return URL(fileURLWithPath: path)
    }
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    // On Apple platforms the tests run inside an .xctest bundle.
    while directory.pathExtension == "xctest" || directory.lastPathComponent == "Contents"
        || directory.lastPathComponent == "MacOS"
    {
        directory.deleteLastPathComponent()
    }
    return directory.appendingPathComponent("herald")
}()

struct ProcessResult {
    let status: Int32
    let standardOutput: String
    let standardError: String
}

struct ProcessTimeout: Error {}

extension Process {
    /// Makes the process `herald` with `arguments`; with `openFiles`, under those limits of open
    /// files (through a shell that sets them, then becomes `herald`).
    func runHerald(_ arguments: [String], openFiles: (soft: Int, hard: Int)? = nil) {
        if let openFiles {
            self.executableURL = URL(fileURLWithPath: "/bin/sh")
            let limits = "ulimit -Sn \(openFiles.soft) && ulimit -Hn \(openFiles.hard) && exec \"$0\" \"$@\""
            self.arguments = ["-c", limits, heraldExecutable.path] + arguments
        } else {
            self.executableURL = heraldExecutable
            self.arguments = arguments
        }
    }
}

/// Runs `herald` with `arguments` and `input` on standard input, through files so that no pipe can
/// fill up, and waits at most `timeLimit` seconds for it; with `openFiles`, under those limits of
/// open files.
func runHerald(
    _ arguments: [String],
    input: [UInt8] = [],
    timeLimit: Double = 30,
    openFiles: (soft: Int, hard: Int)? = nil
) async throws -> ProcessResult {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("herald-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let inputURL = directory.appendingPathComponent("in")
    let outputURL = directory.appendingPathComponent("out")
    let errorURL = directory.appendingPathComponent("err")
    try Data(input).write(to: inputURL)
    _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)

    let process = Process()
    process.runHerald(arguments, openFiles: openFiles)
    process.standardInput = try FileHandle(forReadingFrom: inputURL)
    process.standardOutput = try FileHandle(forWritingTo: outputURL)
    process.standardError = try FileHandle(forWritingTo: errorURL)
    try process.run()
    let deadline = Date().addingTimeInterval(timeLimit)
    // A cancelled caller (a test that failed early) does not leave the process behind either.
    while process.isRunning, Date() < deadline, !Task.isCancelled {
        try? await Task.sleep(for: .milliseconds(10))
    }
    if process.isRunning {
        process.stop()
        throw Task.isCancelled ? CancellationError() : ProcessTimeout()
    }
    return ProcessResult(
        status: process.terminationStatus,
        standardOutput: String(decoding: try Data(contentsOf: outputURL), as: UTF8.self),
        standardError: String(decoding: try Data(contentsOf: errorURL), as: UTF8.self)
    )
}

/// Reads bytes from `descriptor` up to a line feed, waiting at most `seconds` in all.
func readLine(from descriptor: Int32, within seconds: Double) throws -> String {
    let deadline = Date().addingTimeInterval(seconds)
    var line: [UInt8] = []
    while true {
        let remaining = deadline.timeIntervalSinceNow
        guard remaining > 0 else { throw ProcessTimeout() }
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(remaining * 1000)) > 0 else { continue }
        var byte: UInt8 = 0
        guard read(descriptor, &byte, 1) == 1 else { throw ProcessTimeout() }
        if byte == 0x0A { return String(decoding: line, as: UTF8.self) }
        line.append(byte)
    }
}
