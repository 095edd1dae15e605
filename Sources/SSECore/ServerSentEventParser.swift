//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

/// An incremental parser for `text/event-stream`, exact to the WHATWG HTML standard's
/// "Server-sent events" section ("Interpreting an event stream").
///
/// Feed it the bytes of a stream in chunks of any size; it calls you back with every dispatched
/// event and every valid `retry` field, in stream order. The results do not depend on where the
/// chunks are split: one byte at a time or the whole stream at once give the same outputs.
///
/// ```swift
/// var parser = ServerSentEventParser()
/// for chunk in chunks {
///     try parser.parse(chunk) { output in
///         switch output {
///         case .event(let event): print(event.type, event.data)
///         case .retry(let delay): reconnectionTime = delay
///         }
///     }
/// }
/// parser.finish()  // the stream ended: drop the unfinished event
/// ```
///
/// What it implements, exactly:
/// - The stream is UTF-8; each invalid sequence becomes U+FFFD (one per maximal invalid subpart,
///   also when a sequence is split across chunks). One byte order mark is stripped at the start
///   of the stream, and only there.
/// - Lines end at CRLF, LF or CR, also when a CR ends one chunk and its LF starts the next.
///   Nothing else ends a line.
/// - A line starting with `:` is a comment. A line without a colon is a field name with an empty
///   value. One space after the colon is removed from the value.
/// - `data` appends its value and an LF to the data buffer; an empty line dispatches the event
///   with that last LF removed. With an empty data buffer nothing is dispatched, but the event
///   type is still reset.
/// - `event` sets the type (`message` when empty). `id` sets the last event ID unless the value
///   contains U+0000; an empty value resets it. The last event ID carries over to later events.
/// - `retry` is used only when its value is one or more ASCII digits that fit in a `UInt64`.
/// - Other fields are ignored. At the end of the stream an unfinished event and an unterminated
///   last line are discarded (see ``finish()``).
///
/// Work is linear in the input: each byte is scanned once for a line end, whatever the chunking,
/// and lines that arrive whole are not copied. Memory is bounded by
/// ``Configuration/maximumEventSize``.
public struct ServerSentEventParser: Sendable {
    /// Limits of the parser.
    public struct Configuration: Sendable, Hashable {
        /// The largest line, and the largest data of one event, in bytes, that the parser
        /// accepts. A longer one throws ``ServerSentEventError/eventTooLarge``. Default 8 MiB.
        public var maximumEventSize: Int

        /// Creates a configuration.
        public init(maximumEventSize: Int = 8 * 1024 * 1024) {
            self.maximumEventSize = maximumEventSize
        }
    }

    /// What the parser reports, in the order the stream carries it.
    public enum Output: Sendable, Hashable {
        /// An event was dispatched.
        case event(ServerSentEvent)
        /// A valid `retry` field set the reconnection time. It is reported when its line is
        /// read, before the event of the same block, and also when no event follows.
        case retry(Duration)
    }

    /// The limits this parser enforces.
    public let configuration: Configuration

    /// The stream's last event ID as of the last dispatch (an empty line): what a client sends
    /// as `Last-Event-ID` when it reconnects. An `id` field of an unfinished event does not
    /// count yet.
    public private(set) var lastEventID: String

    private var lastEventIDBuffer: String
    private var eventType = ""
    private var dataBuffer: [UInt8] = []
    private var blockRetry: Duration?
    /// The start of a line whose end has not arrived yet.
    private var partialLine: [UInt8] = []
    /// The last chunk ended with CR: an LF at the start of the next one belongs to it.
    private var skipLineFeed = false
    /// Bytes of a byte order mark seen at the start of the stream, or `nil` once decided.
    private var byteOrderMarkMatched: Int? = 0
    private var failed = false

    /// Creates a parser for a new stream.
    ///
    /// - Parameters:
    ///   - configuration: The limits.
    ///   - lastEventID: The last event ID to start from, as when an `EventSource` reconnects.
    public init(configuration: Configuration = .init(), lastEventID: String = "") {
        self.configuration = configuration
        self.lastEventID = lastEventID
        self.lastEventIDBuffer = lastEventID
    }

    /// Parses the next chunk of the stream, calling `body` for every output it completes.
    ///
    /// - Throws: ``ServerSentEventError/eventTooLarge`` when a line or an event's data exceeds
    ///   the configured maximum (the parser then throws on every later call), or what `body`
    ///   throws (the rest of that chunk is then left unparsed: call ``finish()`` before reusing
    ///   the parser).
    public mutating func parse<Bytes: Sequence<UInt8>>(
        _ bytes: Bytes,
        _ body: (Output) throws -> Void
    ) throws {
        let done: Void? = try bytes.withContiguousStorageIfAvailable { buffer in
            try self.parse(buffer, body)
        }
        if done == nil {
            let copy = Array(bytes)
            try copy.withUnsafeBufferPointer { buffer in
                try self.parse(buffer, body)
            }
        }
    }

    /// Ends the stream: the unfinished event and any unterminated line are discarded, as the
    /// standard requires, and the parser is ready for a new stream (for example after a
    /// reconnection), starting from ``lastEventID``.
    public mutating func finish() {
        self = ServerSentEventParser(configuration: self.configuration, lastEventID: self.lastEventID)
    }

    private mutating func parse(_ chunk: UnsafeBufferPointer<UInt8>, _ body: (Output) throws -> Void) throws {
        guard !self.failed else { throw ServerSentEventError.eventTooLarge }
        var start = 0
        let end = chunk.count

        if let matched = self.byteOrderMarkMatched {
            var matched = matched
            while matched < 3, start < end, chunk[start] == Self.byteOrderMark[matched] {
                matched += 1
                start += 1
            }
            if matched == 3 {
                self.byteOrderMarkMatched = nil
            } else if start < end {
                // Not a byte order mark after all: what looked like one starts the first line.
                self.byteOrderMarkMatched = nil
                self.partialLine.append(contentsOf: Self.byteOrderMark[0..<matched])
            } else {
                self.byteOrderMarkMatched = matched
                return
            }
        }
        if self.skipLineFeed, start < end {
            self.skipLineFeed = false
            if chunk[start] == .lineFeed { start += 1 }
        }

        // Each kind of line end is searched for once per chunk region, so a chunk full of CR-only
        // (or LF-only) lines is still scanned in linear time.
        var nextLineFeed = -1
        var nextCarriageReturn = -1
        while start < end {
            if nextLineFeed < start { nextLineFeed = chunk.firstIndex(of: .lineFeed, from: start, to: end) }
            if nextCarriageReturn < start {
                nextCarriageReturn = chunk.firstIndex(of: .carriageReturn, from: start, to: end)
            }
            let lineEnd = min(nextLineFeed, nextCarriageReturn)
            if lineEnd == end {
                try self.appendToPartialLine(UnsafeBufferPointer(rebasing: chunk[start..<end]))
                return
            }
            let piece = UnsafeBufferPointer(rebasing: chunk[start..<lineEnd])
            if self.partialLine.isEmpty {
                try self.processLine(piece, body)
            } else {
                try self.appendToPartialLine(piece)
                var line: [UInt8] = []
                swap(&line, &self.partialLine)
                try line.withUnsafeBufferPointer { try self.processLine($0, body) }
                Self.clear(&line)
                swap(&line, &self.partialLine)
            }
            start = lineEnd + 1
            if chunk[lineEnd] == .carriageReturn {
                if start == end {
                    self.skipLineFeed = true
                } else if chunk[start] == .lineFeed {
                    start += 1
                }
            }
        }
    }

    /// The bytes the parser holds for an unfinished line and event: never more than twice
    /// ``Configuration/maximumEventSize`` (plus the line break of each data line).
    var bufferedByteCount: Int {
        self.partialLine.count + self.dataBuffer.count
    }

    private mutating func appendToPartialLine(_ bytes: UnsafeBufferPointer<UInt8>) throws {
        guard self.partialLine.count + bytes.count <= self.configuration.maximumEventSize else {
            throw self.fail()
        }
        self.partialLine.append(contentsOf: bytes)
    }

    private mutating func processLine(_ line: UnsafeBufferPointer<UInt8>, _ body: (Output) throws -> Void) throws {
        let count = line.count
        guard count > 0 else {
            try self.dispatch(body)
            return
        }
        guard count <= self.configuration.maximumEventSize else { throw self.fail() }
        if line[0] == .colon { return }

        let nameEnd = line.firstIndex(of: .colon, from: 0, to: count)
        var valueStart = nameEnd < count ? nameEnd + 1 : count
        if valueStart < count, line[valueStart] == .space { valueStart += 1 }
        let value = UnsafeBufferPointer(rebasing: line[valueStart..<count])

        switch nameEnd {
        case 4 where line[0] == 0x64 && line[1] == 0x61 && line[2] == 0x74 && line[3] == 0x61:  // data
            guard self.dataBuffer.count + value.count <= self.configuration.maximumEventSize else {
                throw self.fail()
            }
            self.dataBuffer.append(contentsOf: value)
            self.dataBuffer.append(.lineFeed)
        case 2 where line[0] == 0x69 && line[1] == 0x64:  // id
            if value.firstIndex(of: 0, from: 0, to: value.count) == value.count {
                self.lastEventIDBuffer = String(decoding: value, as: UTF8.self)
            }
        case 5 where line[0] == 0x65 && line[1] == 0x76 && line[2] == 0x65 && line[3] == 0x6E && line[4] == 0x74:
            // event
            self.eventType = String(decoding: value, as: UTF8.self)
        case 5 where line[0] == 0x72 && line[1] == 0x65 && line[2] == 0x74 && line[3] == 0x72 && line[4] == 0x79:
            // retry
            if let milliseconds = Self.decimalValue(value) {
                let retry = Duration.milliseconds(exactly: milliseconds)
                self.blockRetry = retry
                try body(.retry(retry))
            }
        default:
            break
        }
    }

    private mutating func dispatch(_ body: (Output) throws -> Void) throws {
        self.lastEventID = self.lastEventIDBuffer
        let retry = self.blockRetry
        self.blockRetry = nil
        guard !self.dataBuffer.isEmpty else {
            self.eventType = ""
            return
        }
        let data = self.dataBuffer.withUnsafeBufferPointer {
            String(decoding: UnsafeBufferPointer(rebasing: $0.dropLast()), as: UTF8.self)
        }
        Self.clear(&self.dataBuffer)
        let event = ServerSentEvent(
            validatedType: self.eventType.isEmpty ? "message" : self.eventType,
            data: data,
            id: self.lastEventID.isEmpty ? nil : self.lastEventID,
            retry: retry
        )
        self.eventType = ""
        try body(.event(event))
    }

    private mutating func fail() -> ServerSentEventError {
        self.failed = true
        self.partialLine = []
        self.dataBuffer = []
        return .eventTooLarge
    }

    /// Empties a buffer, keeping its storage unless it grew large for one outsized event.
    private static func clear(_ buffer: inout [UInt8]) {
        if buffer.capacity > 1 << 20 {
            buffer = []
        } else {
            buffer.removeAll(keepingCapacity: true)
        }
    }

    /// The value of one or more ASCII digits, or `nil` for anything else or a value past `UInt64.max`.
    private static func decimalValue(_ digits: UnsafeBufferPointer<UInt8>) -> UInt64? {
        guard !digits.isEmpty else { return nil }
        var value: UInt64 = 0
        for byte in digits {
            guard byte >= 0x30, byte <= 0x39 else { return nil }
            let (scaled, overflow) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = scaled.addingReportingOverflow(UInt64(byte &- 0x30))
            guard !overflow, !overflow2 else { return nil }
            value = sum
        }
        return value
    }

    private static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]
}
