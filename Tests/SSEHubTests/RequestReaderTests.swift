//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import SSEHub

/// The request reader against NIO's decoder, on the same bytes: every request the reader takes,
/// the decoder reads as the same request, ending at the same byte. (Were they to frame a request
/// differently, a client could hide a request from one of them in another's body.) The requests
/// are every change of one byte, inserted, replaced or deleted, to a subscribe and a publish
/// request, and requests made of the fields that decide the shape, with values that parsers are
/// known to disagree on.
@Suite("Request reader")
struct RequestReaderTests {
    static let subscribe = Array(
        ("GET /.well-known/mercure?topic=%2Fa&topic=b HTTP/1.1\r\n"
            + "Host: x\r\nLast-Event-ID: e 1\r\nConnection: keep-alive\r\n\r\n").utf8
    )
    static let publish = Array(
        ("POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + "Authorization: Bearer t\r\nContent-Length: 12\r\n\r\n").utf8
    )
    /// Bytes that end, split or change the parts of a request line and of a field.
    static let bytes: [UInt8] = [0x00, 0x09, 0x0A, 0x0D, 0x20, 0x7F, 0x80, 0xFF] + Array("\"#%,/:?<\\{|0Aa".utf8)
    static let maximumBody = 64

    /// How the reader and NIO's decoder read `request` up to the end of its head (its first empty
    /// line), followed by a body as long as the reader says and then another request: whether the
    /// reader took it and, if it did, whether the decoder read the same request and then the next.
    static func compare(_ request: [UInt8], limits: NIOHTTPDecoderLimitConfiguration = .init()) throws -> Bool {
        guard let end = Self.endOfHead(request) else { return false }
        let bytes = Array(request[..<end])
        let described = String(decoding: bytes, as: UTF8.self).debugDescription
        guard
            let head = bytes.withUnsafeBytes({
                RequestReader.Head.parse($0, maximumBody: Self.maximumBody, limits: limits)
            })
        else { return false }
        #expect(head.length == bytes.count, "\(described)")
        let body = Array(repeating: UInt8(ascii: "b"), count: head.contentLength)
        let next = Array("GET /next HTTP/1.1\r\n\r\n".utf8)

        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(limitConfiguration: limits)))
        defer { _ = try? channel.finish() }
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes + body + next))
        } catch {
            Issue.record("the reader took \(described), NIO's decoder failed: \(error)")
            return true
        }
        var parts: [HTTPServerRequestPart] = []
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }

        guard case .head(let decoded) = parts.first else {
            Issue.record("NIO's decoder read no head from \(described): \(parts)")
            return true
        }
        parts.removeFirst()
        if let subscribe = head.subscribe {
            #expect(subscribe.method == decoded.method, "\(described)")
            #expect(subscribe.uri == decoded.uri, "\(described)")
            #expect(subscribe.version == decoded.version, "\(described)")
            #expect(Self.fields(subscribe.headers) == Self.fields(decoded.headers), "\(described)")
        } else {
            #expect(
                decoded.method == .POST && decoded.uri == "/.well-known/mercure" && decoded.version == .http1_1,
                "\(described)"
            )
            #expect(decoded.headers["authorization"].count == head.authorizations, "\(described)")
            #expect(decoded.headers["content-type"].count == head.contentTypes, "\(described)")
            let value = { (range: Range<Int>?) in range.map { String(decoding: bytes[$0], as: UTF8.self) } }
            if head.authorizations == 1 {
                #expect(
                    value(head.authorization) == decoded.headers["authorization"].first.map(Self.trimmed),
                    "\(described)"
                )
            }
            if head.contentTypes == 1 {
                #expect(
                    value(head.contentType) == decoded.headers["content-type"].first.map(Self.trimmed),
                    "\(described)"
                )
            }
            let read = Result { try RequestReader.request(ByteBuffer(bytes: bytes), head: head) }
            let expected = Result { try HubHTTP1Codec.request(decoded) }
            #expect(
                Self.same(read, expected),
                "\(described): the reader's request \(read), the decoder's \(expected)"
            )
        }
        #expect(decoded.isKeepAlive, "\(described)")
        var decodedBody: [UInt8] = []
        while case .body(let buffer) = parts.first {
            decodedBody += buffer.readableBytesView
            parts.removeFirst()
        }
        #expect(decodedBody == body, "\(described)")
        guard parts.count >= 2, case .end(nil) = parts[0], case .head(let after) = parts[1], after.uri == "/next" else {
            Issue.record("NIO's decoder ended \(described) elsewhere: \(parts)")
            return true
        }
        return true
    }

    static func endOfHead(_ bytes: [UInt8]) -> Int? {
        let end = Array("\r\n\r\n".utf8)
        guard bytes.count >= 4 else { return nil }
        return (0...(bytes.count - 4)).first { bytes[$0..<$0 + 4].elementsEqual(end) }.map { $0 + 4 }
    }

    /// The fields of `headers`, their values without the whitespace at their end, which NIO's
    /// decoder keeps and the reader does not: RFC 9110 (section 5.5) has a parser drop it, as
    /// HTTPTypes, which the routes read, does.
    static func fields(_ headers: HTTPHeaders) -> [String] {
        headers.map { "\($0.name): \(Self.trimmed($0.value))" }
    }

    static func trimmed(_ value: String) -> String {
        var value = Substring(value)
        while value.last == " " || value.last == "\t" { value = value.dropLast() }
        return String(value)
    }

    static func same(_ read: Result<HTTPRequest, any Error>, _ expected: Result<HTTPRequest, any Error>) -> Bool {
        switch (read, expected) {
        case (.success(let read), .success(let expected)): read == expected
        case (.failure, .failure): true
        default: false
        }
    }

    @Test(arguments: [Self.subscribe, Self.publish])
    func everyRequestOneByteFromAPlainOneIsFramedAsNIOsDecoderFramesIt(_ request: [UInt8]) throws {
        var (taken, refused) = (0, 0)
        for position in 0...request.count {
            var mutants: [[UInt8]] = []
            for byte in Self.bytes {
                var inserted = request
                inserted.insert(byte, at: position)
                mutants.append(inserted)
                if position < request.count, request[position] != byte {
                    var replaced = request
                    replaced[position] = byte
                    mutants.append(replaced)
                }
            }
            if position < request.count {
                var deleted = request
                deleted.remove(at: position)
                mutants.append(deleted)
            }
            for mutant in mutants {
                if try Self.compare(mutant) { taken += 1 } else { refused += 1 }
            }
        }
        // Enough of both, or the test tests little.
        #expect(taken > 1_000)
        #expect(refused > 1_000)
    }

    @Test func requestsOfTheFieldsThatDecideTheShapeAreFramedAsNIOsDecoderFramesThem() throws {
        let names = [
            "Content-Length", "content-LENGTH", "Transfer-Encoding", "Connection", "Origin", "Expect", "Upgrade",
            "Authorization", "Content-Type",
        ]
        let values = [
            "", "0", "00", "12", " 12 ", "\t12", "12\t", "1,2", "12, 12", "+1", "-1", "1e1", "0x1", "chunked",
            "99999999999999999999", "keep-alive", "Keep-Alive", "close", "keep-alive, Upgrade", "a\tb", "\u{E9}",
            "100-continue", "h2c",
        ]
        let fields = names.flatMap { name in values.map { "\(name):\($0)\r\n" } }
        let lengths = fields.filter {
            $0.lowercased().hasPrefix("content-length") || $0.hasPrefix("Transfer") || $0.hasPrefix("Connection")
        }
        var (taken, refused) = (0, 0)
        for line in ["GET /.well-known/mercure?topic=t HTTP/1.1\r\n", "POST /.well-known/mercure HTTP/1.1\r\n"] {
            var requests = fields.map { line + "Host: x\r\n" + $0 + "\r\n" }
            for first in lengths {
                for second in lengths { requests.append(line + "Host: x\r\n" + first + second + "\r\n") }
            }
            for request in requests {
                if try Self.compare(Array(request.utf8)) { taken += 1 } else { refused += 1 }
            }
        }
        #expect(taken > 100)
        #expect(refused > 1_000)
    }

    @Test func aHeadAtTheDecodersLimitsIsFramedAsNIOsDecoderFramesIt() throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldCount = 3
        limits.maxHeaderFieldSize = 20
        var (taken, refused) = (0, 0)
        for count in 0...4 {
            for size in 14...22 {
                // `count` fields of `size` bytes of name and value, with a length of 1.
                let field = "X:" + String(repeating: "v", count: size - 1) + "\r\n"
                let request =
                    "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length:1\r\n"
                    + String(repeating: field, count: count) + "\r\n"
                if try Self.compare(Array(request.utf8), limits: limits) { taken += 1 } else { refused += 1 }
            }
        }
        #expect(taken > 0)
        #expect(refused > 0)
    }
}
