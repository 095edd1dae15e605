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
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a connection failed, in the words someone reading a terminal or a log expects
/// ("connection refused", "cannot resolve example.invalid: Name or service not known", "the
/// server's certificate is not trusted"), where NIO's own descriptions name its internals
/// ("connection reset (error set): Connection refused) (errno: 111)", BoringSSL's error queue).
/// Errors it does not know keep their own description.
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
    case let error as HTTPClientError where error == .connectTimeout || error == .deadlineExceeded || error == .readTimeout:
        return "no answer within the time allowed"
    case NIOSSLError.handshakeFailed(.sslError(let errors)):
        if errors.contains(.eofDuringHandshake) {
            return "the server closed the connection during the TLS handshake (is it an https server?)"
        }
        if isUntrustedCertificate(error) {
            return "the server's certificate is not trusted"
        }
        // BoringSSL's reasons, as in `error:1000007d:SSL routines:OPENSSL_internal:REASON at FILE:LINE`.
        let reasons = errors.map { entry in
            let parts = entry.description.split(separator: ":")
            guard let library = parts.firstIndex(of: "OPENSSL_internal"), library + 1 < parts.endIndex else {
                return entry.description
            }
            return String(parts[library + 1].prefix { $0 != " " })
        }
        return "the TLS handshake failed: " + reasons.joined(separator: ", ")
    case let error as NIOSSLExtraError where error == .failedToValidateHostname:
        return "the server's certificate is not for the host of the URL"
    default:
        return "\(error)"
    }
}

/// Whether `error` is a TLS handshake that failed because the server's certificate is not trusted
/// (BoringSSL's `CERTIFICATE_VERIFY_FAILED`: self-signed, from an unknown authority, expired).
package func isUntrustedCertificate(_ error: any Error) -> Bool {
    guard case NIOSSLError.handshakeFailed(.sslError(let errors)) = error else { return false }
    return errors.contains { $0.description.contains(":CERTIFICATE_VERIFY_FAILED") }
}
