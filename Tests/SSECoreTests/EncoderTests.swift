//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import SSECore

@Suite("Encoder")
struct EncoderTests {
    func encoded(_ event: ServerSentEvent) -> String {
        var bytes: [UInt8] = []
        event.encode(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func dataOnly() {
        #expect(self.encoded(ServerSentEvent(data: "hello")) == "data: hello\n\n")
    }

    @Test func everyField() throws {
        let event = try ServerSentEvent(type: "price", data: "42", id: "7", retry: .milliseconds(1500))
        #expect(self.encoded(event) == "id: 7\nevent: price\nretry: 1500\ndata: 42\n\n")
    }

    @Test func dataIsSplitAtEveryKindOfLineBreak() {
        #expect(self.encoded(ServerSentEvent(data: "a\nb\r\nc\rd")) == "data: a\ndata: b\ndata: c\ndata: d\n\n")
        #expect(self.encoded(ServerSentEvent(data: "a\n")) == "data: a\ndata: \n\n")
        #expect(self.encoded(ServerSentEvent(data: "\r\r\n")) == "data: \ndata: \ndata: \n\n")
    }

    @Test func emptyDataIsStillAnEvent() {
        #expect(self.encoded(ServerSentEvent(data: "")) == "data: \n\n")
    }

    @Test func aLeadingSpaceSurvives() throws {
        let event = try ServerSentEvent(type: " t", data: " x", id: " i")
        #expect(self.encoded(event) == "id:  i\nevent:  t\ndata:  x\n\n")
        #expect(parse(Array(self.encoded(event).utf8)).outputs == [.event(event)])
    }

    @Test func messageTypeIsLeftOut() throws {
        #expect(self.encoded(try ServerSentEvent(type: "message", data: "x")) == "data: x\n\n")
        #expect(try ServerSentEvent(type: "", data: "x") == ServerSentEvent(data: "x"))
    }

    @Test func anEmptyIDIsSentToResetTheClient() throws {
        #expect(self.encoded(try ServerSentEvent(data: "x", id: "")) == "id: \ndata: x\n\n")
    }

    @Test func retryIsRoundedDownToWholeMilliseconds() throws {
        let event = try ServerSentEvent(data: "x", retry: .microseconds(2999))
        #expect(event.retry == .milliseconds(2))
        #expect(self.encoded(event) == "retry: 2\ndata: x\n\n")
        #expect(self.encoded(try ServerSentEvent(data: "x", retry: .seconds(3))) == "retry: 3000\ndata: x\n\n")
    }

    @Test(arguments: ["a\nb", "a\rb", "\r\n", "\n"])
    func aTypeWithALineBreakIsRefused(_ type: String) {
        #expect(throws: ServerSentEventError.invalidEventType) { try ServerSentEvent(type: type, data: "x") }
    }

    @Test(arguments: ["a\nb", "a\rb", "a\u{0}b", "\u{0}"])
    func anIDWithALineBreakOrNULIsRefused(_ id: String) {
        #expect(throws: ServerSentEventError.invalidID) { try ServerSentEvent(data: "x", id: id) }
    }

    @Test func aNegativeOrHugeRetryIsRefused() {
        #expect(throws: ServerSentEventError.invalidRetry) { try ServerSentEvent(data: "x", retry: .milliseconds(-1)) }
        #expect(throws: ServerSentEventError.invalidRetry) {
            try ServerSentEvent(data: "x", retry: .seconds(Int64.max))
        }
        let largest = Duration.milliseconds(exactly: .max)
        #expect(throws: Never.self) { try ServerSentEvent(data: "x", retry: largest) }
    }

    @Test func theByteCountIsExact() throws {
        let events = [
            ServerSentEvent(data: ""),
            try ServerSentEvent(type: "é", data: "😀\r\nb\rc\n", id: "1", retry: .milliseconds(10)),
        ]
        for event in events {
            var bytes: [UInt8] = [1, 2, 3]
            event.encode(into: &bytes)
            #expect(bytes.count == 3 + event.encodedByteCount)
            #expect(bytes.prefix(3) == [1, 2, 3], "appends, never overwrites")
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: event.encodedByteCount, alignment: 1)
            defer { raw.deallocate() }
            #expect(event.encode(into: raw) == event.encodedByteCount)
            #expect(Array(raw) == Array(bytes.dropFirst(3)))
        }
    }

    @Test func comments() {
        #expect(ServerSentEvent.encodedComment() == Array(":\n".utf8))
        #expect(ServerSentEvent.encodedComment("keep-alive") == Array(": keep-alive\n".utf8))
        #expect(ServerSentEvent.encodedComment("a\nb\r\nc") == Array(": a\n: b\n: c\n".utf8))
        let stream = ServerSentEvent.encodedComment("x\ndata: no") + Array("data: yes\n\n".utf8)
        #expect(parse(stream).outputs == [event("yes")], "a comment never becomes a field")
    }
}

@Suite("Encoder: round trips")
struct RoundTripTests {
    static func randomText(using generator: inout SplitMix64, allowLineBreaks: Bool) -> String {
        let pieces = ["a", " ", ":", "é", "😀", "\u{FEFF}", "\u{2028}", "\u{0}", "data: ", "\t", "id", "0"]
        let breaks = ["\n", "\r", "\r\n"]
        var text = ""
        for _ in 0..<Int(generator.next() % 8) {
            if allowLineBreaks, generator.next() % 4 == 0 {
                text += breaks[Int(generator.next() % 3)]
            } else {
                text += pieces[Int(generator.next() % UInt64(pieces.count))]
            }
        }
        return text
    }

    static func randomEvent(using generator: inout SplitMix64) throws -> ServerSentEvent {
        var id = generator.next() % 3 == 0 ? nil : randomText(using: &generator, allowLineBreaks: false)
        id?.unicodeScalars.removeAll { $0 == "\u{0}" }
        return try ServerSentEvent(
            type: randomText(using: &generator, allowLineBreaks: false),
            data: randomText(using: &generator, allowLineBreaks: true),
            id: id,
            retry: generator.next() % 3 == 0 ? .milliseconds(Int64(generator.next() % 100_000)) : nil
        )
    }

    /// What a client reads back: data lines joined with LF, and the last event ID carried over.
    static func expectedOutputs(_ events: [ServerSentEvent]) -> [ServerSentEventParser.Output] {
        var outputs: [ServerSentEventParser.Output] = []
        var lastEventID = ""
        for sent in events {
            if let id = sent.id { lastEventID = id }
            if let retry = sent.retry { outputs.append(.retry(retry)) }
            var data = sent.data.replacing("\r\n", with: "\n")
            data = String(String.UnicodeScalarView(data.unicodeScalars.map { $0 == "\r" ? "\n" : $0 }))
            outputs.append(
                .event(
                    ServerSentEvent(
                        validatedType: sent.type,
                        data: data,
                        id: lastEventID.isEmpty ? nil : lastEventID,
                        retry: sent.retry
                    )
                )
            )
        }
        return outputs
    }

    @Test func parsingAnEncodedEventGivesItBack() throws {
        var generator = SplitMix64(seed: 3)
        for _ in 0..<2_000 {
            let sent = try Self.randomEvent(using: &generator)
            var bytes: [UInt8] = []
            sent.encode(into: &bytes)
            let result = parse(bytes)
            #expect(result.outputs == Self.expectedOutputs([sent]), "event \(sent)")
            if !sent.data.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\r\n" }), sent.id != "" {
                #expect(result.outputs.last == .event(sent), "exactly the same event")
            }
        }
    }

    @Test func parsingAnEncodedStreamGivesItBackInAnyChunking() throws {
        var generator = SplitMix64(seed: 4)
        for _ in 0..<300 {
            let events = try (0..<Int(generator.next() % 6)).map { _ in try Self.randomEvent(using: &generator) }
            var bytes: [UInt8] = []
            for event in events {
                if generator.next() % 2 == 0 { bytes += ServerSentEvent.encodedComment("ping") }
                event.encode(into: &bytes)
            }
            let expected = ParseResult(outputs: Self.expectedOutputs(events))
            #expect(parse(bytes) == expected)
            #expect(parse(bytes, cuts: randomCuts(bytes.count, using: &generator)) == expected)
        }
    }
}
