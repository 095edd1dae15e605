//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import AsyncHTTPClient
import NIOCore
import NIOHTTP1
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

    func validate() throws {
        guard !self.topic.isEmpty else { throw ValidationError("give at least one --topic.") }
        guard (self.token == nil) != (self.key == nil) else { throw ValidationError("give either --token or --key.") }
        if let retry, retry < 0 { throw ValidationError("--retry must not be negative.") }
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
        request.body = .bytes(ByteBuffer(string: fields.map { "\(Self.encode($0))=\(Self.encode($1))" }.joined(separator: "&")))
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        } catch {
            throw CommandFailure("cannot reach the hub at \(self.hub): \(error)")
        }
        let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
        guard response.status == .ok else {
            throw CommandFailure("the hub answered \(response.status.code) \(response.status.reasonPhrase): \(body)")
        }
        try writeAll(Array((body + "\n").utf8))
    }

    /// Form encoding: unreserved characters as they are, everything else percent-encoded.
    static func encode(_ value: String) -> String {
        var encoded = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                encoded.append(Character(Unicode.Scalar(byte)))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                encoded += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return encoded
    }
}
