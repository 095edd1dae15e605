//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import NIOCore
public import SSECore

extension ByteBuffer {
    /// Writes `event` in `text/event-stream` form at the writer index, straight into the buffer's
    /// storage (one size computation, one pass, no intermediate copy), and moves the writer index.
    ///
    /// - Returns: The number of bytes written.
    @discardableResult
    public mutating func writeServerSentEvent(_ event: ServerSentEvent) -> Int {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: event.encodedByteCount) { bytes in
            event.encode(into: bytes)
        }
    }
}

extension ByteBufferAllocator {
    /// A buffer holding exactly `event` in `text/event-stream` form: sized once, written once.
    /// Encode an event this way once and hand the same buffer to every client.
    public func buffer(encoding event: ServerSentEvent) -> ByteBuffer {
        let size = event.encodedByteCount
        var buffer = self.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { bytes in
            event.encode(into: bytes)
        }
        return buffer
    }
}
