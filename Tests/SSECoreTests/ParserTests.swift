//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import SSECore

/// One rule of the standard's "Interpreting an event stream", as input bytes and expected outputs.
struct Vector: Sendable, CustomTestStringConvertible {
    let name: String
    let input: [UInt8]
    let expected: [ServerSentEventParser.Output]

    init(_ name: String, _ input: String, _ expected: [ServerSentEventParser.Output]) {
        self.init(name, Array(input.utf8), expected)
    }

    init(_ name: String, _ input: [UInt8], _ expected: [ServerSentEventParser.Output]) {
        self.name = name
        self.input = input
        self.expected = expected
    }

    var testDescription: String { self.name }
}

let vectors: [Vector] = [
    // The standard's own examples.
    Vector(
        "spec: three messages, one of two lines",
        "data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n",
        [
            event("This is the first message."),
            event("This is the second message, it\nhas two lines."),
            event("This is the third message."),
        ]
    ),
    Vector(
        "spec: named events",
        "event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        [event("73857293", type: "add"), event("2153", type: "remove"), event("113411", type: "add")]
    ),
    Vector("spec: stock ticker", "data: YHOO\ndata: +2\ndata: 10\n\n", [event("YHOO\n+2\n10")]),
    Vector(
        "spec: comment, ids, reset id, two spaces",
        ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        [event("first event", id: "1"), event("second event"), event(" third event")]
    ),
    Vector("spec: colon-less data lines; last block unterminated", "data\n\ndata\ndata\n\ndata:", [event(""), event("\n")]),
    Vector("spec: space after colon is optional", "data:test\n\ndata: test\n\n", [event("test"), event("test")]),

    // Byte order mark and UTF-8.
    Vector("BOM at the start is stripped", [0xEF, 0xBB, 0xBF] + Array("data: a\n\n".utf8), [event("a")]),
    Vector(
        "only one BOM is stripped: a second one is part of the field name",
        [0xEF, 0xBB, 0xBF, 0xEF, 0xBB, 0xBF] + Array("data: a\n\ndata: b\n\n".utf8),
        [event("b")]
    ),
    Vector("BOM later in the stream is data", "data: \u{FEFF}a\n\n", [event("\u{FEFF}a")]),
    Vector(
        "an incomplete BOM at the start is invalid UTF-8 in the first line",
        [0xEF, 0xBB] + Array("data: a\n\ndata: b\n\n".utf8),
        [event("b")]
    ),
    Vector(
        "an incomplete BOM before a line end makes an unknown field",
        [0xEF, 0xBB, 0x0A] + Array("data: b\n\n".utf8),
        [event("b")]
    ),
    Vector("a stream of just a BOM", [0xEF, 0xBB, 0xBF], []),
    Vector("multi-byte UTF-8", "event: é\ndata: 価格 €😀\nid: ✓\n\n", [event("価格 €😀", type: "é", id: "✓")]),
    Vector("invalid byte becomes U+FFFD", [0x64, 0x61, 0x74, 0x61, 0x3A, 0xFF, 0x0A, 0x0A], [event("\u{FFFD}")]),
    Vector(
        "a truncated sequence is one U+FFFD",
        Array("data: ".utf8) + [0xE2, 0x82] + Array("x\n\n".utf8),
        [event("\u{FFFD}x")]
    ),
    Vector(
        "a truncated sequence before the line end is one U+FFFD",
        Array("data: ".utf8) + [0xF0, 0x9F, 0x98] + Array("\n\n".utf8),
        [event("\u{FFFD}")]
    ),
    Vector(
        "an overlong encoding is one U+FFFD per byte",
        Array("data: ".utf8) + [0xC0, 0xAF, 0xF0, 0x80, 0x80] + Array("\n\n".utf8),
        [event("\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}")]
    ),
    Vector(
        "a surrogate is one U+FFFD per byte",
        Array("data: ".utf8) + [0xED, 0xA0, 0x80] + Array("\n\n".utf8),
        [event("\u{FFFD}\u{FFFD}\u{FFFD}")]
    ),
    Vector(
        "invalid UTF-8 in an id is kept as U+FFFD",
        Array("id: ".utf8) + [0xFE] + Array("\ndata: x\n\n".utf8),
        [event("x", id: "\u{FFFD}")]
    ),

    // Line ends.
    Vector("CRLF", "data: a\r\ndata: b\r\n\r\n", [event("a\nb")]),
    Vector("CR", "data: a\rdata: b\r\r", [event("a\nb")]),
    Vector("LF then CR is two line ends", "data: a\n\r", [event("a")]),
    Vector("CR CR LF is two line ends", "data: a\r\r\ndata: b\n\n", [event("a"), event("b")]),
    Vector("mixed line ends", "data: a\rdata: b\r\ndata: c\n\r\n", [event("a\nb\nc")]),
    Vector(
        "no other character ends a line",
        "data: a\u{2028}b\u{2029}c\u{85}d\u{0B}e\u{0C}f\n\n",
        [event("a\u{2028}b\u{2029}c\u{85}d\u{0B}e\u{0C}f")]
    ),
    Vector("NUL in data is data", "data: a\u{0}b\n\n", [event("a\u{0}b")]),

    // Fields.
    Vector("comments are ignored, also inside an event", ":\n: x\ndata: a\n:data: b\ndata: c\n\n", [event("a\nc")]),
    Vector("a line without a colon is a field with an empty value", "data\ndata\n\n", [event("\n")]),
    Vector("exactly one space is removed", "data:  x\n\n", [event(" x")]),
    Vector("a tab is not removed", "data:\tx\n\n", [event("\tx")]),
    Vector("a colon in the value is kept", "data: a: b\n\n", [event("a: b")]),
    Vector("field names are case-sensitive", "Data: x\n\nDATA: y\n\n", []),
    Vector("a space before the colon is part of the name", "data : x\n\n", []),
    Vector("unknown fields are ignored", "foo: bar\ndata: x\nidx: 1\n\n", [event("x")]),
    Vector("the last LF of the data is removed, once", "data: a\ndata:\n\n", [event("a\n")]),
    Vector("an empty data line dispatches an empty event", "data:\n\n", [event("")]),
    Vector("no data, no event", "event: a\n\n\n\n", []),
    Vector("the type is reset even when nothing is dispatched", "event: foo\n\ndata: x\n\n", [event("x")]),
    Vector("the type applies to its block only", "event: a\ndata: 1\n\ndata: 2\n\n", [event("1", type: "a"), event("2")]),
    Vector("an empty event type means message", "event:\ndata: x\n\n", [event("x")]),
    Vector("the last event field wins", "event: a\nevent: b\ndata: x\n\n", [event("x", type: "b")]),

    // The last event ID.
    Vector("the id carries over to later events", "id: 1\ndata: a\n\ndata: b\n\n", [event("a", id: "1"), event("b", id: "1")]),
    Vector("an id in a block without data still counts", "id: 7\n\ndata: x\n\n", [event("x", id: "7")]),
    Vector("an id line after data belongs to the same event", "data: x\nid: 3\n\n", [event("x", id: "3")]),
    Vector("an empty id resets", "id: 1\ndata: a\n\nid:\ndata: b\n\n", [event("a", id: "1"), event("b")]),
    Vector("an id without colon resets", "id: 1\ndata: a\n\nid\ndata: b\n\n", [event("a", id: "1"), event("b")]),
    Vector("an id with NUL is ignored", "id: 1\ndata: a\n\nid: 2\u{0}3\ndata: b\n\n", [event("a", id: "1"), event("b", id: "1")]),
    Vector("an id keeps a second space", "id:  x\ndata: a\n\n", [event("a", id: " x")]),

    // retry.
    Vector("retry alone", "retry: 1000\n\n", [retry(1000)]),
    Vector("retry before its event", "retry: 5\ndata: x\n\ndata: y\n\n", [retry(5), event("x", retry: 5), event("y")]),
    Vector("retry zero", "retry: 0\n\n", [retry(0)]),
    Vector("retry with leading zeros", "retry: 0042\n\n", [retry(42)]),
    Vector("retry: the largest UInt64", "retry: 18446744073709551615\n\n", [retry(UInt64.max)]),
    Vector("retry past UInt64 is ignored", "retry: 18446744073709551616\n\n", []),
    Vector("retry with a letter is ignored", "retry: 10a\n\n", []),
    Vector("retry with a sign is ignored", "retry: -1\nretry: +1\n\n", []),
    Vector("retry with a second space is ignored", "retry:  1\n\n", []),
    Vector("retry with a trailing space is ignored", "retry: 1 \n\n", []),
    Vector("retry with a decimal point is ignored", "retry: 1.5\n\n", []),
    Vector("retry empty is ignored", "retry:\nretry\n\n", []),
    Vector("retry with non-ASCII digits is ignored", "retry: ١٢\n\n", []),
    Vector("an invalid retry does not undo a valid one", "retry: 7\nretry: x\ndata: a\n\n", [retry(7), event("a", retry: 7)]),

    // End of the stream.
    Vector("an event without its blank line is dropped", "data: x\n", []),
    Vector("an unterminated line is dropped", "data: a\n\ndata: x", [event("a")]),
    Vector("an unterminated empty-looking end is nothing", "data: a\n\ndata: b\n\r", [event("a"), event("b")]),
    Vector("an empty stream", "", []),
]

@Suite("Parser: the standard's rules")
struct ParserTests {
    @Test(arguments: vectors)
    func wholeInput(_ vector: Vector) {
        #expect(parse(vector.input) == ParseResult(outputs: vector.expected))
    }

    @Test(arguments: vectors)
    func oneByteAtATime(_ vector: Vector) {
        #expect(parse(vector.input, cuts: everyByte(vector.input.count)) == ParseResult(outputs: vector.expected))
    }

    @Test(arguments: vectors)
    func everySplitInTwo(_ vector: Vector) {
        for cut in 0...vector.input.count {
            #expect(parse(vector.input, cuts: [cut]) == ParseResult(outputs: vector.expected), "cut at \(cut)")
        }
    }

    @Test(arguments: vectors)
    func randomChunks(_ vector: Vector) {
        var generator = SplitMix64(seed: 42)
        for _ in 0..<50 {
            let cuts = randomCuts(vector.input.count, using: &generator)
            #expect(parse(vector.input, cuts: cuts) == ParseResult(outputs: vector.expected), "cuts \(cuts)")
        }
    }

    @Test(arguments: vectors)
    func referenceAgrees(_ vector: Vector) {
        #expect(referenceParse(vector.input) == vector.expected)
    }

    @Test func lastEventIDIsCommittedAtDispatch() throws {
        var parser = ServerSentEventParser()
        try parser.parse(Array("id: 1\ndata: a\n\nid: 2\ndata: b\n".utf8)) { _ in }
        #expect(parser.lastEventID == "1")
        try parser.parse(Array("\n".utf8)) { _ in }
        #expect(parser.lastEventID == "2")
        try parser.parse(Array("id: 3\n".utf8)) { _ in }
        parser.finish()
        #expect(parser.lastEventID == "2", "the id of an unfinished event is not used")
    }

    @Test func finishStartsANewStreamFromTheLastEventID() throws {
        var parser = ServerSentEventParser(lastEventID: "41")
        var outputs: [ServerSentEventParser.Output] = []
        try parser.parse(Array("data: a\n\nevent: x\ndata: half".utf8)) { outputs.append($0) }
        parser.finish()
        // A new stream: a BOM is stripped again, and nothing of the unfinished event remains.
        try parser.parse([0xEF, 0xBB, 0xBF] + Array("data: b\n\n".utf8)) { outputs.append($0) }
        #expect(outputs == [event("a", id: "41"), event("b", id: "41")])
    }

    @Test func aCarriageReturnAtTheEndOfAChunkWaitsForTheNext() throws {
        var parser = ServerSentEventParser()
        var outputs: [ServerSentEventParser.Output] = []
        try parser.parse(Array("data: a\r".utf8)) { outputs.append($0) }
        try parser.parse([UInt8]()) { outputs.append($0) }
        try parser.parse(Array("\n".utf8)) { outputs.append($0) }
        #expect(outputs.isEmpty, "CR then LF across chunks is one line end, not an empty line")
        try parser.parse(Array("\r".utf8)) { outputs.append($0) }
        #expect(outputs == [event("a")])
    }

    @Test func nonContiguousInput() throws {
        var parser = ServerSentEventParser()
        var outputs: [ServerSentEventParser.Output] = []
        try parser.parse(Array("data: a\n\n".utf8).lazy.map { $0 }) { outputs.append($0) }
        #expect(outputs == [event("a")])
    }
}

@Suite("Parser: limits")
struct ParserLimitTests {
    let configuration = ServerSentEventParser.Configuration(maximumEventSize: 16)

    @Test func dataUpToTheLimitIsAccepted() {
        // 16 bytes of data over two lines, each line within 16 bytes.
        let input = Array("data: 01234567\ndata: 0123456\n\n".utf8)
        let expected = ParseResult(outputs: [event("01234567\n0123456")])
        #expect(parse(input, configuration: self.configuration) == expected)
        #expect(parse(input, cuts: everyByte(input.count), configuration: self.configuration) == expected)
    }

    @Test func dataPastTheLimitThrows() {
        let input = Array("data: a\n\ndata: 01234567\ndata: 01234567\n\ndata: b\n\n".utf8)
        let expected = ParseResult(outputs: [event("a")], error: .eventTooLarge)
        #expect(parse(input, configuration: self.configuration) == expected)
        #expect(parse(input, cuts: everyByte(input.count), configuration: self.configuration) == expected)
    }

    @Test(arguments: [
        "data: 0123456789abcdef\n",  // a complete long line
        "data: 0123456789abcdef",  // a long line that never ends
        ": a comment that goes on and on\n",
        "x-unknown-field-that-is-long: 1\n",
    ])
    func aLongLineThrowsWhateverTheChunking(_ line: String) {
        let input = Array("data: a\n\n".utf8) + Array(line.utf8) + Array("data: b\n\n".utf8)
        let expected = ParseResult(outputs: [event("a")], error: .eventTooLarge)
        #expect(parse(input, configuration: self.configuration) == expected)
        #expect(parse(input, cuts: everyByte(input.count), configuration: self.configuration) == expected)
        var generator = SplitMix64(seed: 7)
        for _ in 0..<20 {
            let cuts = randomCuts(input.count, using: &generator)
            #expect(parse(input, cuts: cuts, configuration: self.configuration) == expected)
        }
    }

    @Test func theParserStaysFailed() throws {
        var parser = ServerSentEventParser(configuration: self.configuration)
        #expect(throws: ServerSentEventError.eventTooLarge) {
            try parser.parse(Array(repeating: UInt8(ascii: "x"), count: 17)) { _ in }
        }
        #expect(throws: ServerSentEventError.eventTooLarge) {
            try parser.parse(Array("data: a\n\n".utf8)) { _ in }
        }
    }

    @Test func manyShortLinesNeedNoMoreThanTheLimit() throws {
        // Keep-alive comments and events forever: nothing accumulates.
        var parser = ServerSentEventParser(configuration: self.configuration)
        var count = 0
        for _ in 0..<10_000 {
            try parser.parse(Array(":\ndata: 0123456789\n\n".utf8)) { _ in count += 1 }
        }
        #expect(count == 10_000)
    }

    @Test func errorsDescribeThemselves() {
        #expect(ServerSentEventError.eventTooLarge.description.contains("maximum event size"))
        #expect(ServerSentEventError.eventTooLarge != ServerSentEventError.invalidID)
    }
}
