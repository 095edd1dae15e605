//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import NIOSSL
import SSEClient

/// `--ca-cert`, for the commands that connect to a server: the certificates an `https://` server
/// may present.
struct Trust: ParsableArguments {
    @Option(help: "A PEM certificate to trust, besides the system's, for an https:// server (a self-signed one, say).")
    var caCert: String?

    /// A client's TLS configuration that trusts the system's certificates and `--ca-cert`.
    func tlsConfiguration() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let path = self.caCert {
            tls.additionalTrustRoots = [.certificates(try Self.certificates(at: path, named: "the certificate"))]
        }
        return tls
    }

    /// The PEM certificates in the file at `path`, or a failure that says why there are none;
    /// `name` is the file's in the message ("the certificate").
    static func certificates(at path: String, named name: String) throws -> [NIOSSLCertificate] {
        guard FileManager.default.isReadableFile(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"
            throw CommandFailure("cannot read \(name) '\(path)': \(reason)")
        }
        let certificates = (try? NIOSSLCertificate.fromPEMFile(path)) ?? []
        guard !certificates.isEmpty else { throw CommandFailure("'\(path)' holds no PEM certificate") }
        return certificates
    }

    /// What to add to the message of `error`: how to trust the server's certificate, when that is
    /// why the connection failed.
    static func hint(for error: (any Error)?) -> String {
        guard let error, isUntrustedCertificate(error) else { return "" }
        return " (--ca-cert adds a certificate to trust)"
    }
}
