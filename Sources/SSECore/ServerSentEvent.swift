//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

/// One server-sent event: what an `EventSource` dispatches, and what a server sends.
///
/// Every value of this type can be written to a `text/event-stream` and read back: the
/// initialisers refuse a type or an ID that the wire format cannot carry, so the encoder never
/// produces an invalid stream.
///
/// ```swift
/// let tick = ServerSentEvent(data: "hello")
/// let price = try ServerSentEvent(type: "price", data: #"{"price": 142.50}"#, id: "42")
/// ```
///
/// When an event comes out of a ``ServerSentEventParser``, its fields follow the standard's
/// `MessageEvent`: ``type`` is `message` unless an `event` field named another, ``data`` has its
/// lines joined with LF, ``id`` is the stream's *last event ID* at the moment of dispatch (it
/// carries over from earlier events, and is `nil` while that ID is empty), and ``retry`` is the
/// last valid `retry` field of the event's own block.
public struct ServerSentEvent: Sendable, Hashable {
    /// The event type: `message` for an unnamed event. A browser delivers `message` events to
    /// `onmessage` and any other type to `addEventListener(type)` only.
    public let type: String

    /// The event's payload. Line breaks (CR, LF or CRLF) are sent as separate `data` lines and
    /// always come back as LF.
    public let data: String

    /// The event ID. When sending, `nil` sends no `id` field (the client keeps the ID it has) and
    /// the empty string resets the client's last event ID. When parsed, the stream's last event ID.
    public let id: String?

    /// The reconnection time to ask the client for, sent as a `retry` field in whole milliseconds.
    public let retry: Duration?

    /// Creates an unnamed event that carries only data. It cannot fail: data may hold any text.
    public init(data: String) {
        self.type = "message"
        self.data = data
        self.id = nil
        self.retry = nil
    }

    /// Creates an event, refusing the fields that a `text/event-stream` cannot carry.
    ///
    /// - Parameters:
    ///   - type: The event type. An empty type means `message`, as on the wire.
    ///   - data: The payload; any text.
    ///   - id: The event ID, or `nil` to send none.
    ///   - retry: The reconnection time, rounded down to whole milliseconds.
    /// - Throws: ``ServerSentEventError`` when `type` or `id` holds a CR or LF, when `id` holds
    ///   U+0000, or when `retry` is negative or longer than `UInt64.max` milliseconds.
    public init(type: String = "message", data: String, id: String? = nil, retry: Duration? = nil)
        throws(ServerSentEventError)
    {
        if type.utf8.contains(where: { $0 == .lineFeed || $0 == .carriageReturn }) {
            throw .invalidEventType
        }
        if let id, id.utf8.contains(where: { $0 == .lineFeed || $0 == .carriageReturn || $0 == 0 }) {
            throw .invalidID
        }
        var milliseconds: UInt64?
        if let retry {
            guard let value = retry.wholeMilliseconds else { throw .invalidRetry }
            milliseconds = value
        }
        self.init(
            validatedType: type.isEmpty ? "message" : type,
            data: data,
            id: id,
            retry: milliseconds.map(Duration.milliseconds(exactly:))
        )
    }

    /// Creates an event whose fields are known to be valid (for example because they were parsed).
    init(validatedType type: String, data: String, id: String?, retry: Duration?) {
        self.type = type
        self.data = data
        self.id = id
        self.retry = retry
    }
}

extension Duration {
    /// This duration in whole milliseconds (rounded down), or `nil` when it is negative or does
    /// not fit in a `UInt64`, the range a `retry` field carries.
    package var wholeMilliseconds: UInt64? {
        let (seconds, attoseconds) = self.components
        guard seconds >= 0, attoseconds >= 0 else { return nil }
        let (scaled, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1000)
        guard !overflow else { return nil }
        let (total, overflow2) = scaled.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000_000_000))
        return overflow2 ? nil : total
    }

    /// This duration, or a century when it is longer: a clock traps on an instant past its range
    /// (some 292 years on), and a century is for ever to a connection. For the timeouts and waits
    /// of a configuration or a `retry` field, which may be as long as a user likes.
    package var cappedAtACentury: Duration {
        min(self, .seconds(100 * 365 * 86_400))
    }

    /// A duration of `value` milliseconds; every `UInt64` value is representable.
    static func milliseconds(exactly value: UInt64) -> Duration {
        Duration(
            secondsComponent: Int64(value / 1000),
            attosecondsComponent: Int64(value % 1000) * 1_000_000_000_000_000
        )
    }
}

extension UInt8 {
    static let lineFeed: UInt8 = 0x0A
    static let carriageReturn: UInt8 = 0x0D
    static let colon: UInt8 = 0x3A
    static let space: UInt8 = 0x20
}
