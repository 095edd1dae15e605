//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

@testable import SSECore

/// What parsing a whole stream gave: its outputs, and the error that stopped it, if any.
struct ParseResult: Equatable, CustomStringConvertible {
    var outputs: [ServerSentEventParser.Output] = []
    var error: ServerSentEventError?

    var description: String {
        "\(self.outputs.map { "\($0)" }.joined(separator: "\n"))\(self.error.map { "\nthrew \($0)" } ?? "")"
    }
}

/// Parses `bytes` cut into chunks ending at `cuts` (sorted offsets), then ends the stream.
func parse(
    _ bytes: [UInt8],
    cuts: [Int] = [],
    configuration: ServerSentEventParser.Configuration = .init()
) -> ParseResult {
    var parser = ServerSentEventParser(configuration: configuration)
    var result = ParseResult()
    var start = 0
    do {
        for end in cuts + [bytes.count] where end >= start {
            try parser.parse(bytes[start..<end]) { result.outputs.append($0) }
            start = end
        }
        parser.finish()
    } catch {
        result.error = error as? ServerSentEventError
    }
    return result
}

/// Cut points that feed `count` bytes one at a time.
func everyByte(_ count: Int) -> [Int] {
    count > 1 ? Array(1..<count) : []
}

/// Random cut points; empty chunks included now and then.
func randomCuts(_ count: Int, using generator: inout SplitMix64) -> [Int] {
    guard count > 0 else { return [] }
    var cuts: [Int] = []
    var position = 0
    while position < count {
        position += Int(generator.next() % 9)  // 0 gives an empty chunk
        if position < count { cuts.append(position) }
    }
    return cuts
}

/// A small, seeded, reproducible random number generator for property tests.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func event(_ data: String, type: String = "message", id: String? = nil, retry: UInt64? = nil)
    -> ServerSentEventParser.Output
{
    .event(ServerSentEvent(validatedType: type, data: data, id: id, retry: retry.map { .milliseconds($0) }))
}

func retry(_ milliseconds: UInt64) -> ServerSentEventParser.Output {
    .retry(.milliseconds(milliseconds))
}

/// An independent reading of the standard's "Interpreting an event stream", written for clarity
/// rather than speed: decode the whole stream first, then walk its scalars. The parser must agree
/// with it on every input.
func referenceParse(_ bytes: [UInt8]) -> [ServerSentEventParser.Output] {
    var scalars = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
    if scalars.first == "\u{FEFF}" { scalars.removeFirst() }
    var lines: [String] = []
    var current = String.UnicodeScalarView()
    var index = 0
    while index < scalars.count {
        let scalar = scalars[index]
        if scalar == "\r" || scalar == "\n" {
            lines.append(String(current))
            current = String.UnicodeScalarView()
            if scalar == "\r", index + 1 < scalars.count, scalars[index + 1] == "\n" { index += 1 }
        } else {
            current.append(scalar)
        }
        index += 1
    }
    // The unterminated last line (in `current`) is discarded.

    var outputs: [ServerSentEventParser.Output] = []
    var data = ""
    var type = ""
    var idBuffer = ""
    var lastEventID = ""
    var blockRetry: UInt64?
    for line in lines {
        if line.isEmpty {
            lastEventID = idBuffer
            defer { blockRetry = nil }
            if data.isEmpty {
                type = ""
                continue
            }
            if data.hasSuffix("\n") { data.removeLast() }
            outputs.append(
                event(data, type: type.isEmpty ? "message" : type, id: lastEventID.isEmpty ? nil : lastEventID, retry: blockRetry)
            )
            data = ""
            type = ""
            continue
        }
        // Scalars, not Characters: a combining mark after ':' must not hide the colon.
        let scalars = Array(line.unicodeScalars)
        if scalars.first == ":" { continue }
        var name = scalars[...]
        var value = scalars[scalars.endIndex...]
        if let colon = scalars.firstIndex(of: ":") {
            name = scalars[..<colon]
            value = scalars[(colon + 1)...]
            if value.first == " " { value = value.dropFirst() }
        }
        let text = String(String.UnicodeScalarView(value))
        switch Array(String(String.UnicodeScalarView(name)).utf8) {
        case Array("event".utf8): type = text
        case Array("data".utf8): data += text + "\n"
        case Array("id".utf8): if !value.contains("\u{0}") { idBuffer = text }
        case Array("retry".utf8):
            if !value.isEmpty, value.allSatisfy({ $0.value >= 0x30 && $0.value <= 0x39 }),
                let milliseconds = UInt64(text)
            {
                blockRetry = milliseconds
                outputs.append(retry(milliseconds))
            }
        default: break
        }
    }
    return outputs
}
