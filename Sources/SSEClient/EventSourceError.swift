//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

/// Why an ``EventSource`` stopped for good.
///
/// A struct with an extensible ``Code``, so that new reasons can be added without breaking anyone:
///
/// ```swift
/// catch let error as EventSourceError where error.code == .unexpectedStatus {
///     print("server answered", error.status ?? 0)
/// }
/// ```
public struct EventSourceError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case invalidURL
            case invalidHeader
            case unexpectedStatus
            case unexpectedContentType
            case attemptsExhausted
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// The URL could not be parsed or has no scheme `http` or `https`.
        public static let invalidURL = Code(.invalidURL)
        /// A header of the request cannot be sent: a name that is not a token, or a value with a
        /// line break or NUL, from ``EventSource/Configuration/headers``, the header provider, or
        /// ``EventSource/Configuration/lastEventID``. Every attempt would fail the same way, so
        /// there is none.
        public static let invalidHeader = Code(.invalidHeader)
        /// The server answered with a status other than 200 (or 204, which ends the source
        /// without an error). A browser does not reconnect after it, and neither do we.
        public static let unexpectedStatus = Code(.unexpectedStatus)
        /// The server answered 200 with a `Content-Type` other than `text/event-stream`.
        public static let unexpectedContentType = Code(.unexpectedContentType)
        /// The connection kept failing (or ending) and the configured maximum number of
        /// reconnection attempts was used up. ``EventSourceError/underlying`` holds the last
        /// network error, if the last attempt failed with one.
        public static let attemptsExhausted = Code(.attemptsExhausted)

        public var description: String {
            switch self.base {
            case .invalidURL: "invalid URL"
            case .invalidHeader: "invalid header"
            case .unexpectedStatus: "unexpected status"
            case .unexpectedContentType: "unexpected content type"
            case .attemptsExhausted: "attempts exhausted"
            }
        }
    }

    /// The kind of failure.
    public let code: Code
    /// The HTTP status of the response, for ``Code/unexpectedStatus`` and ``Code/unexpectedContentType``.
    public let status: Int?
    /// The `Content-Type` of the response, if it had one.
    public let contentType: String?
    /// For ``Code/unexpectedStatus``, the start of the response's body (at most 512 bytes, runs of
    /// whitespace made one space) when it is plain text or JSON: where most servers give their
    /// reason, such as a missing `topic` or an expired token. `nil` for other bodies.
    public let reason: String?
    /// The error underneath, for example the network error of the last attempt.
    public let underlying: (any Error)?
    /// What the error is about: the URL, or the number of attempts.
    public let detail: String

    init(
        _ code: Code,
        status: Int? = nil,
        contentType: String? = nil,
        reason: String? = nil,
        underlying: (any Error)? = nil,
        detail: String
    ) {
        self.code = code
        self.status = status
        self.contentType = contentType
        self.reason = reason
        self.underlying = underlying
        self.detail = detail
    }

    public var description: String {
        switch self.code {
        case .unexpectedStatus:
            "\(self.detail) answered with status \(self.status.map(String.init) ?? "?"), not 200: not reconnecting"
                + (self.reason.map { " (it said: \($0))" } ?? "")
        case .unexpectedContentType:
            "\(self.detail) answered with Content-Type \(self.contentType.map { "'\($0)'" } ?? "(none)"), "
                + "not text/event-stream: not reconnecting"
        case .invalidHeader:
            "cannot send the request to \(self.detail): \(self.invalidHeaders) "
                + "(a header's name must be a token, and its value must hold no line break or NUL)"
        case .attemptsExhausted:
            "gave up after \(self.detail)" + (self.underlying.map { ": \(describe(networkError: $0))" } ?? "")
        default:
            "\(self.code): \(self.detail)"
        }
    }
}

extension EventSourceError {
    /// For ``Code/invalidHeader``, the headers AsyncHTTPClient refused, as it names them
    /// (`invalidHeaderFieldValues(["…"])`, without its type's name).
    private var invalidHeaders: String {
        let description = self.underlying.map { String(describing: $0) } ?? ""
        return String(description.trimmingPrefix("HTTPClientError."))
    }

    /// The most of a refusal's body that is kept as its ``reason``.
    package static let reasonLimit = 512

    /// A refusal's body as its ``reason``: the text of a plain text or JSON body, cut to
    /// ``reasonLimit`` bytes, with each run of whitespace (line ends included) made one space;
    /// `nil` for another kind of body or one with nothing to say.
    package static func reason(fromBody body: some Collection<UInt8>, contentType: String?) -> String? {
        guard Self.isText(contentType) else { return nil }
        let text = String(decoding: body.prefix(Self.reasonLimit), as: UTF8.self)
        let reason = text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        return reason.isEmpty ? nil : reason
    }

    /// Whether a body of this `Content-Type` can be shown as a reason: `text/plain`, or JSON
    /// (`application/json` or any `+json` type, such as RFC 9457's `application/problem+json`).
    static func isText(_ contentType: String?) -> Bool {
        guard let type = contentType.map(mediaType(of:)) else { return false }
        return type == "text/plain" || type == "application/json"
            || (type.hasPrefix("application/") && type.hasSuffix("+json"))
    }
}
