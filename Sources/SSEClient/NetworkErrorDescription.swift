//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a connection failed, in the words someone reading a terminal or a log expects
/// ("connection refused", "cannot resolve example.invalid: Name or service not known"), where
/// NIO's own descriptions name its internals ("connection reset (error set): Connection refused)
/// (errno: 111)"). Errors it does not know keep their own description.
package func describe(networkError error: any Error) -> String {
    switch error {
    case let error as IOError:
        return String(cString: strerror(error.errnoCode)).lowercased()
    case let error as SocketAddressError.UnknownHost:
        return "cannot resolve \(error.host): \(error.errorDescription)"
    case let error as NIOConnectionError:
        if let dnsError = error.dnsAError ?? error.dnsAAAAError {
            return describe(networkError: dnsError)
        }
        let failures = error.connectionErrors.map { failure in
            let target = failure.target
            let address = target.ipAddress.map { target.protocol == .inet6 ? "[\($0)]" : $0 } ?? "\(target)"
            return "\(address):\(target.port ?? error.port): \(describe(networkError: failure.error))"
        }
        return failures.isEmpty ? "cannot connect to \(error.host):\(error.port)" : failures.joined(separator: "; ")
    case let error as HTTPClientError where error == .remoteConnectionClosed:
        return "the server closed the connection"
    case let error as HTTPClientError where error == .connectTimeout || error == .deadlineExceeded:
        return "no answer within the time allowed"
    default:
        return "\(error)"
    }
}
