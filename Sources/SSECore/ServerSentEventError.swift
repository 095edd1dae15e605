//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

/// An error from the wire format: input that exceeds a limit, or an event that cannot be sent.
///
/// A struct over a private code, so that new cases can be added without breaking anyone. Compare
/// with the static members: `error == .eventTooLarge`.
public struct ServerSentEventError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case eventTooLarge
        case invalidEventType
        case invalidID
        case invalidRetry
    }

    private let code: Code

    private init(_ code: Code) {
        self.code = code
    }

    /// A line, or the data of one event, grew past ``ServerSentEventParser/Configuration/maximumEventSize``.
    /// The parser cannot go on after it: the rest of the stream would be misread.
    public static let eventTooLarge = ServerSentEventError(.eventTooLarge)

    /// An event type holds a CR or an LF, which would end the `event` line early.
    public static let invalidEventType = ServerSentEventError(.invalidEventType)

    /// An event ID holds a CR or an LF (which would end the `id` line early) or U+0000 (which
    /// makes a client ignore the ID).
    public static let invalidID = ServerSentEventError(.invalidID)

    /// A reconnection time is negative or longer than `UInt64.max` milliseconds.
    public static let invalidRetry = ServerSentEventError(.invalidRetry)

    public var description: String {
        switch self.code {
        case .eventTooLarge:
            "a line or an event of the stream is larger than the configured maximum event size"
        case .invalidEventType:
            "an event type must not contain a carriage return or a line feed"
        case .invalidID:
            "an event ID must not contain a carriage return, a line feed or U+0000"
        case .invalidRetry:
            "a retry time must be between 0 and UInt64.max milliseconds"
        }
    }
}
