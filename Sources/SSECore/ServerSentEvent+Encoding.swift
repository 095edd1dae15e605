//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

extension ServerSentEvent {
    /// The number of bytes ``encode(into:)-(UnsafeMutableRawBufferPointer)`` writes for this event.
    public var encodedByteCount: Int {
        var counter = ByteCounter()
        self.write(to: &counter)
        return counter.count
    }

    /// Writes this event in `text/event-stream` form to the start of `buffer`, which must hold at
    /// least ``encodedByteCount`` bytes, and returns the number of bytes written.
    ///
    /// This is the primitive for writing straight into another buffer type (a NIO `ByteBuffer`'s
    /// writable bytes, say) without an intermediate copy.
    ///
    /// The form: `id: ID`, `event: TYPE` (left out for `message`), `retry: MILLISECONDS`, then one
    /// `data: LINE` per line of ``data`` (split at CR, LF and CRLF), then an empty line. Every
    /// value follows a colon and one space, so a value that starts with a space keeps it.
    @discardableResult
    public func encode(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var writer = ByteWriter(buffer: buffer)
        self.write(to: &writer)
        return writer.count
    }

    /// Appends this event in `text/event-stream` form to `bytes`.
    public func encode(into bytes: inout [UInt8]) {
        let size = self.encodedByteCount
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: size))
        bytes.withUnsafeMutableBytes { all in
            _ = self.encode(into: UnsafeMutableRawBufferPointer(rebasing: all[start...]))
        }
    }

    /// Comment lines (`: text`), which every client ignores: the keep-alive of an idle stream.
    /// Each line of `text` becomes a line of its own; no event is dispatched.
    public static func encodedComment(_ text: String = "") -> [UInt8] {
        var bytes: [UInt8] = []
        var text = text
        text.withUTF8 { utf8 in
            forEachLine(of: utf8) { line in
                bytes.append(.colon)
                if !line.isEmpty {
                    bytes.append(.space)
                    bytes.append(contentsOf: line)
                }
                bytes.append(.lineFeed)
            }
        }
        return bytes
    }

    private func write(to sink: inout some ByteSink) {
        if let id = self.id {
            Self.writeField("id", id, to: &sink)
        }
        if self.type != "message" {
            Self.writeField("event", self.type, to: &sink)
        }
        if let milliseconds = self.retry?.wholeMilliseconds {
            Self.writeField("retry", String(milliseconds), to: &sink)
        }
        var data = self.data
        data.withUTF8 { utf8 in
            Self.forEachLine(of: utf8) { line in
                sink.write(StaticString("data: "))
                sink.write(line)
                sink.write(.lineFeed)
            }
        }
        sink.write(.lineFeed)
    }

    private static func writeField(_ name: StaticString, _ value: String, to sink: inout some ByteSink) {
        var value = value
        sink.write(name)
        sink.write(StaticString(": "))
        value.withUTF8 { sink.write($0) }
        sink.write(.lineFeed)
    }

    /// Calls `body` with each line of `text`, split at CR, LF and CRLF; there is always at least one.
    private static func forEachLine(of text: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        var start = 0
        var nextLineFeed = -1
        var nextCarriageReturn = -1
        let end = text.count
        while true {
            if nextLineFeed < start { nextLineFeed = text.firstIndex(of: .lineFeed, from: start, to: end) }
            if nextCarriageReturn < start {
                nextCarriageReturn = text.firstIndex(of: .carriageReturn, from: start, to: end)
            }
            let lineEnd = min(nextLineFeed, nextCarriageReturn)
            body(UnsafeBufferPointer(rebasing: text[start..<lineEnd]))
            if lineEnd == end { return }
            start = lineEnd + 1
            if text[lineEnd] == .carriageReturn, start < end, text[start] == .lineFeed { start += 1 }
        }
    }
}

/// Where the encoder writes: counted first, then written, so an event needs one allocation.
private protocol ByteSink {
    mutating func write(_ bytes: UnsafeBufferPointer<UInt8>)
    mutating func write(_ byte: UInt8)
}

extension ByteSink {
    mutating func write(_ string: StaticString) {
        self.write(UnsafeBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
    }
}

private struct ByteCounter: ByteSink {
    var count = 0

    mutating func write(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.count += bytes.count
    }

    mutating func write(_ byte: UInt8) {
        self.count += 1
    }
}

private struct ByteWriter: ByteSink {
    let buffer: UnsafeMutableRawBufferPointer
    var count = 0

    mutating func write(_ bytes: UnsafeBufferPointer<UInt8>) {
        precondition(self.count + bytes.count <= self.buffer.count, "buffer smaller than encodedByteCount")
        UnsafeMutableRawBufferPointer(rebasing: self.buffer[self.count...]).copyMemory(
            from: UnsafeRawBufferPointer(bytes)
        )
        self.count += bytes.count
    }

    mutating func write(_ byte: UInt8) {
        precondition(self.count < self.buffer.count, "buffer smaller than encodedByteCount")
        self.buffer[self.count] = byte
        self.count += 1
    }
}
