//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import SSECore
import NIOCore

/// A published update: what a publisher POSTs and subscribers of its topics receive.
public struct Update: Sendable, Hashable {
    /// The event ID, unique in the hub.
    public var id: String
    /// The topics: the first is canonical, the others are alternates. Never empty.
    public var topics: [String]
    /// The content.
    public var data: String
    /// A private update goes only to subscribers authorized for one of its topics.
    public var isPrivate: Bool
    /// The SSE event type, if any.
    public var type: String?
    /// The reconnection time to send, if any.
    public var retry: Duration?

    /// Creates an update.
    public init(id: String, topics: [String], data: String, isPrivate: Bool = false, type: String? = nil, retry: Duration? = nil) {
        self.id = id
        self.topics = topics
        self.data = data
        self.isPrivate = isPrivate
        self.type = type
        self.retry = retry
    }

    /// `retry` in whole milliseconds, as the stores keep it: in a signed 64-bit integer, which
    /// holds any a publish gives; a longer one is kept as the longest it holds, a negative one
    /// (which no event can carry) as 0. Counted exactly: through a `Double`, the longest would
    /// round up past what the integer holds, and trap.
    var retryMilliseconds: Int64? {
        self.retry.map { Int64(clamping: $0.wholeMilliseconds ?? 0) }
    }

    /// The update as a server-sent event: `id`, `event` from the type, `retry`, and one `data`
    /// line per line of the content.
    public func event() throws(ServerSentEventError) -> ServerSentEvent {
        try ServerSentEvent(type: self.type ?? "message", data: self.data, id: self.id, retry: self.retry)
    }
}

/// Why a publish request was refused, said so that the publisher can fix it.
public struct PublishError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

extension Update {
    /// Parses a Mercure publish request body (`application/x-www-form-urlencoded`): `topic`
    /// (repeatable; the first is canonical), `data`, `private` (its presence alone makes the
    /// update private), `id`, `type` and `retry`.
    ///
    /// - Parameter makeID: Makes the ID when the publisher gave none.
    /// - Throws: ``PublishError`` for a missing topic, an `id` or `type` with CR, LF or NUL, an
    ///   `id` starting with `#` (reserved for IDs the hub makes), a `retry` that is not digits,
    ///   a repeated single-valued field, or a body that is not valid form encoding.
    public init(form body: [UInt8], makeID: () -> String) throws(PublishError) {
        self = try body.withUnsafeBufferPointer { (body) throws(PublishError) in try Update(formBytes: body, makeID: makeID) }
    }

    /// As ``init(form:makeID:)``, from the readable bytes of `body` as they are.
    init(form body: ByteBuffer, makeID: () -> String) throws(PublishError) {
        self = try body.withUnsafeReadableBytes { (body) throws(PublishError) in
            try Update(formBytes: body.bindMemory(to: UInt8.self), makeID: makeID)
        }
    }

    private init(formBytes body: UnsafeBufferPointer<UInt8>, makeID: () -> String) throws(PublishError) {
        var topics: [String] = []
        var data, givenID, givenType, givenRetry, givenPrivate: String?
        try FormDecoding.forEachPair(body) { (name, value) throws(PublishError) in
            func once(_ field: inout String?) throws(PublishError) {
                guard field == nil else { throw PublishError("'\(name)' may be given once") }
                field = value
            }
            switch name {
            case "topic": topics.append(value)
            case "data": try once(&data)
            case "id": try once(&givenID)
            case "type": try once(&givenType)
            case "retry": try once(&givenRetry)
            case "private": try once(&givenPrivate)
            default: break  // unknown fields are ignored, as the reference hub does
            }
        }
        guard !topics.isEmpty else { throw PublishError("missing 'topic': an update needs at least one topic") }
        if topics.contains(where: \.isEmpty) { throw PublishError("'topic' must not be empty") }

        let id: String
        if let given = givenID, !given.isEmpty {
            guard !given.hasPrefix("#") else { throw PublishError("'id' must not start with '#'") }
            guard !given.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D || $0 == 0 }) else {
                throw PublishError("'id' must not contain CR, LF or NUL")
            }
            id = given
        } else {
            id = makeID()
        }
        var type: String?
        if let given = givenType, !given.isEmpty {
            guard !given.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) else {
                throw PublishError("'type' must not contain CR or LF")
            }
            type = given
        }
        var retry: Duration?
        if let given = givenRetry {
            guard !given.isEmpty, given.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let milliseconds = Int64(given) else {
                throw PublishError("'retry' must be a whole number of milliseconds (digits only)")
            }
            retry = .milliseconds(milliseconds)
        }
        self.init(
            id: id,
            topics: topics,
            data: data ?? "",
            isPrivate: givenPrivate != nil,
            type: type,
            retry: retry
        )
    }
}

/// `application/x-www-form-urlencoded`, as browsers and HTTP clients send it.
enum FormDecoding {
    /// Calls `pair` with each name and value of `body`, decoded, in order.
    static func forEachPair(
        _ body: UnsafeBufferPointer<UInt8>,
        _ pair: (String, String) throws(PublishError) -> Void
    ) throws(PublishError) {
        var start = 0
        while start < body.count {
            let end = body[start...].firstIndex(of: UInt8(ascii: "&")) ?? body.count
            if end > start {  // (empty parts are skipped)
                let nameEnd = body[start..<end].firstIndex(of: UInt8(ascii: "=")) ?? end
                let name = try self.decode(UnsafeBufferPointer(rebasing: body[start..<nameEnd]))
                let value = nameEnd < end ? try self.decode(UnsafeBufferPointer(rebasing: body[(nameEnd + 1)..<end])) : ""
                try pair(name, value)
            }
            start = end + 1
        }
    }

    static func decode(_ bytes: UnsafeBufferPointer<UInt8>) throws(PublishError) -> String {
        if !bytes.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "%") }) {
            // Nothing to decode (a topic or data without spaces or reserved characters, say).
            return try self.string(validating: bytes)
        }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                decoded.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%") {
                guard index + 2 < bytes.count, let high = hexValue(bytes[index + 1]),
                    let low = hexValue(bytes[index + 2])
                else { throw PublishError("the body is not valid form encoding (a '%' not followed by two hex digits)") }
                decoded.append(high << 4 | low)
                index += 2
            } else {
                decoded.append(byte)
            }
            index += 1
        }
        return try decoded.withUnsafeBufferPointer { (decoded) throws(PublishError) in try self.string(validating: decoded) }
    }

    /// `bytes` as a string, if they are valid UTF-8. Decoding with repair changes bytes that are
    /// not (each goes as U+FFFD), and is the standard library's fast path for contiguous bytes,
    /// where `String(validating:as:)` is generic and slow.
    private static func string(validating bytes: UnsafeBufferPointer<UInt8>) throws(PublishError) -> String {
        var string = String(decoding: bytes, as: UTF8.self)
        guard string.withUTF8({ $0.elementsEqual(bytes) }) else {
            throw PublishError("the body is not valid UTF-8 once decoded")
        }
        return string
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
