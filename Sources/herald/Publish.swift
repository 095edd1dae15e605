//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SSEClient
import SSEHub

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish an update to a Mercure hub (Herald's, or any other).",
        discussion: """
            Prints the event ID the hub gave the update. A refusal (401, 403, 400 …) is reported \
            on standard error with the hub's reason, and exit status 1.
            """
    )

    @Option(help: "The hub's URL, for example http://127.0.0.1:8080/.well-known/mercure.")
    var hub: String

    @Option(help: "A topic of the update; the first is canonical. Repeatable.")
    var topic: [String] = []

    @Option(help: "The content.")
    var data = ""

    @Flag(help: "Deliver only to subscribers authorized for one of the topics.")
    var `private` = false

    @Option(help: "The event ID (the hub makes one when left out).")
    var id: String?

    @Option(help: "The SSE event type.")
    var type: String?

    @Option(help: "The reconnection time to send, in milliseconds.")
    var retry: Int?

    @Option(help: "A publisher JWT.")
    var token: String?

    @Option(help: "The hub's HS256 publisher key: signs a token for these topics.")
    var key: String?

    @Option(help: "Seconds to wait for the hub's answer, and then for each part of it.")
    var timeout: Double = 30

    @OptionGroup var trust: Trust

    func validate() throws {
        guard !self.topic.isEmpty else { throw ValidationError("give at least one --topic.") }
        guard (self.token == nil) != (self.key == nil) else { throw ValidationError("give either --token or --key.") }
        guard Self.isHTTPURL(self.hub) else { throw ValidationError("--hub must be an http:// or https:// URL.") }
        if let retry, retry < 0 { throw ValidationError("--retry must not be negative.") }
        try checkSeconds(self.timeout, of: "--timeout")
    }

    func run() async throws {
        var token = self.token ?? ""
        if let key = self.key {
            token = try await Hub.developmentToken(publish: self.topic, subscribe: nil, key: key)
        }
        var fields = self.topic.map { ("topic", $0) }
        fields.append(("data", self.data))
        if self.private { fields.append(("private", "on")) }
        if let id { fields.append(("id", id)) }
        if let type { fields.append(("type", type)) }
        if let retry { fields.append(("retry", String(retry))) }

        var request = HTTPClientRequest(url: self.hub)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        var form = ByteBuffer()
        for (index, (name, value)) in fields.enumerated() {
            if index > 0 { form.writeStaticString("&") }
            Self.formEncode(name, into: &form)
            form.writeStaticString("=")
            Self.formEncode(value, into: &form)
        }
        request.body = .bytes(form)
        var configuration = HTTPClient.Configuration.singletonConfiguration  // as `HTTPClient.shared`'s
        // A hub that is not there is said at once, not after the connection is retried to the timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.tlsConfiguration = try self.trust.tlsConfiguration()
        // The execute's timeout ends at the answer's head; a hub that stops in the middle of its
        // body would hold the command without this one.
        let timeout = TimeAmount.nanoseconds(Int64(self.timeout * 1e9))
        configuration.timeout.read = timeout
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        let response: HTTPClientResponse
        let body: String
        do {
            response = try await client.execute(request, timeout: timeout)
            // Its start, which is all of a hub's answer (an ID, or a refusal's reason): a longer
            // body (a page from a proxy, say) is not an error of its own.
            var start = ByteBuffer()
            for try await chunk in response.body {
                start.writeImmutableBuffer(chunk)
                if start.readableBytes >= 1 << 16 { break }
            }
            body = String(buffer: start)
        } catch let error as HTTPClientError where error == .readTimeout || error == .deadlineExceeded {
            try? await client.shutdown()
            throw CommandFailure("the hub at \(self.hub) did not answer within \(self.timeout.formatted(.number)) s (--timeout)")
        } catch {
            try? await client.shutdown()
            throw CommandFailure("cannot reach the hub at \(self.hub): \(describe(networkError: error))" + Trust.hint(for: error))
        }
        try? await client.shutdown()
        guard response.status == .ok else {
            // The reason as `herald listen` and the bench give it: from a text or JSON body only
            // (not a page of HTML), its start, on one line.
            let reason = EventSourceError.reason(fromBody: body.utf8, contentType: response.headers.first(name: "Content-Type"))
            throw CommandFailure("the hub answered \(response.status.code) \(response.status.reasonPhrase)" + (reason.map { ": \($0)" } ?? ""))
        }
        try writeAll(Array((body + "\n").utf8))
    }

    /// Whether `text` is an `http` or `https` URL with a host.
    static func isHTTPURL(_ text: String) -> Bool {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased() else { return false }
        return (scheme == "http" || scheme == "https") && url.host?.isEmpty == false
    }

    /// Writes `value` form-encoded: unreserved characters as they are, every other byte of its
    /// UTF-8 percent-encoded. Byte by byte into the buffer: `herald bench` encodes each publish.
    static func formEncode(_ value: String, into buffer: inout ByteBuffer) {
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                buffer.writeInteger(byte)
            default:
                buffer.writeInteger(UInt8(ascii: "%"))
                buffer.writeInteger(Self.hexDigit(byte >> 4))
                buffer.writeInteger(Self.hexDigit(byte & 0x0F))
            }
        }
    }

    /// The upper-case hexadecimal digit of `value` (0 to 15).
    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "A") + value - 10
    }
}
