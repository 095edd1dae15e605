//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import SSECore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif

/// The JSON line format of `herald decode` and `herald listen --json`.
enum JSONLines {
    static func append(_ output: ServerSentEventParser.Output, to bytes: inout [UInt8]) {
        switch output {
        case .event(let event):
            bytes.append(contentsOf: #"{"type": "#.utf8)
            appendString(event.type, to: &bytes)
            bytes.append(contentsOf: #", "data": "#.utf8)
            appendString(event.data, to: &bytes)
            bytes.append(contentsOf: #", "lastEventId": "#.utf8)
            appendString(event.id ?? "", to: &bytes)
            bytes.append(contentsOf: "}\n".utf8)
        case .retry(let duration):
            let (seconds, attoseconds) = duration.components
            let milliseconds = UInt64(seconds) * 1000 + UInt64(attoseconds / 1_000_000_000_000_000)
            bytes.append(contentsOf: #"{"retry": \#(milliseconds)}"#.utf8)
            bytes.append(0x0A)
        }
    }

    /// Appends `string` as a JSON string: quotes, backslashes and control characters escaped.
    static func appendString(_ string: String, to bytes: inout [UInt8]) {
        bytes.append(0x22)
        for byte in string.utf8 {
            switch byte {
            case 0x22: bytes.append(contentsOf: #"\""#.utf8)
            case 0x5C: bytes.append(contentsOf: #"\\"#.utf8)
            case 0x0A: bytes.append(contentsOf: #"\n"#.utf8)
            case 0x0D: bytes.append(contentsOf: #"\r"#.utf8)
            case 0x09: bytes.append(contentsOf: #"\t"#.utf8)
            case 0..<0x20, 0x7F:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: #"\u00"#.utf8)
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0x0F)])
            default: bytes.append(byte)
            }
        }
        bytes.append(0x22)
    }
}

/// Writes all of `bytes` to standard output, or to another file descriptor.
func writeAll(_ bytes: [UInt8], to descriptor: Int32 = STDOUT_FILENO) throws {
    try bytes.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw CommandFailure("cannot write to file descriptor \(descriptor): \(errorDescription())")
            }
            offset += written
        }
    }
}

func errorDescription() -> String {
    String(cString: strerror(errno))
}

/// Raises this process's limit of open files (each connection takes one) to the most it may have,
/// as Go's runtime does for its programs, and returns the limit it has then (`nil` if unknown).
func raiseOpenFileLimit() -> Int? {
    #if os(Linux)
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    let resource = RLIMIT_NOFILE
    #endif
    var limit = rlimit()
    guard getrlimit(resource, &limit) == 0 else { return nil }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(resource, &raised) == 0 { limit = raised }  // (on macOS, an unlimited one fails: kept as it was)
    }
    return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
}
