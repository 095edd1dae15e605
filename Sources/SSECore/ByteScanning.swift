//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

// The platform's C library is the only thing SSECore imports: its `memchr` is vectorised, and
// finding line ends is most of the parser's work.
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Android)
import Android
#endif

extension UnsafeBufferPointer<UInt8> {
    /// The index of the first `byte` in `start..<end`, or `end` when there is none.
    @inline(__always)
    func firstIndex(of byte: UInt8, from start: Int, to end: Int) -> Int {
        #if canImport(Darwin) || canImport(Glibc) || canImport(Musl) || canImport(Android)
        guard start < end, let base = self.baseAddress else { return end }
        guard let found = memchr(base + start, Int32(byte), end - start) else { return end }
        return UnsafeRawPointer(found) - UnsafeRawPointer(base)
        #else
        var index = start
        while index < end, self[index] != byte { index += 1 }
        return index
        #endif
    }
}
