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
