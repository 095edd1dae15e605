//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

package import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A PostgreSQL server of its own for one test: `initdb` into a temporary folder, listening on a
/// free port of 127.0.0.1, stopped and deleted afterwards. Needs the server's binaries (Debian's
/// `postgresql` package, which scripts/install-test-tools.sh installs).
package enum ThrowawayPostgres {
    /// The folder of `initdb` and `pg_ctl`, if PostgreSQL is installed.
    package static let binaries: URL? = {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        for version in versions.sorted(by: >) {
            let bin = root.appendingPathComponent(version).appendingPathComponent("bin")
            if FileManager.default.isExecutableFile(atPath: bin.appendingPathComponent("initdb").path) { return bin }
        }
        return nil
    }()

    /// Why the PostgreSQL tests are skipped, if they are.
    package static var skipReason: String? {
        binaries == nil ? "PostgreSQL tests skipped: no initdb under /usr/lib/postgresql (install Debian's postgresql)" : nil
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Runs `body` with the URL of a new, empty server (`postgres://herald@127.0.0.1:PORT/postgres`).
    package static func with(_ body: (String) async throws -> Void) async throws {
        guard let binaries else { throw Failure(description: skipReason ?? "") }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("herald-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        // PostgreSQL refuses to run as root: then it runs as the postgres user (setpriv execs, so
        // the process started is the tool itself).
        let asRoot = geteuid() == 0
        if asRoot { try FileManager.default.setAttributes([.ownerAccountName: "postgres"], ofItemAtPath: folder.path) }
        func start(_ tool: String, _ arguments: [String]) throws -> Process {
            let process = Process()
            let path = binaries.appendingPathComponent(tool).path
            if asRoot {
                process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
                process.arguments = ["--reuid=postgres", "--regid=postgres", "--init-groups", path] + arguments
            } else {
                process.executableURL = URL(fileURLWithPath: path)
                process.arguments = arguments
            }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        // Polled: waitUntilExit would block one of the few threads the tests share.
        func wait(for process: Process, _ what: String, until done: () -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            while !done(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            guard done() else {
                process.terminate()
                throw Failure(description: "\(what) did not happen within a minute")
            }
        }
        let data = folder.appendingPathComponent("data").path
        let initdb = try start("initdb", ["-D", data, "-U", "herald", "--auth=trust", "-E", "UTF8", "--no-sync"])
        try await wait(for: initdb, "initdb") { !initdb.isRunning }
        guard initdb.terminationStatus == 0 else { throw Failure(description: "initdb exited with \(initdb.terminationStatus)") }
        let port = try Self.freePort()
        let server = try start("postgres", [
            "-D", data, "-p", "\(port)", "-k", folder.path, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
        ])
        defer {
            server.interrupt()  // SIGINT: a fast shutdown
            while server.isRunning { usleep(10_000) }
        }
        try await wait(for: server, "PostgreSQL listening on \(port)") { server.isRunning && Self.accepts(port: port) }
        try await body("postgres://herald@127.0.0.1:\(port)/postgres")
    }

    private static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Failure(description: "no free port") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
