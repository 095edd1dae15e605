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
        /// Whether the server could not listen because its port was taken meanwhile.
        var portTaken = false
    }

    /// Runs `body` with the URL of a new, empty server (`postgres://herald@127.0.0.1:PORT/postgres`).
    package static func with(_ body: (String) async throws -> Void) async throws {
        try await self.withServer { try await body($0.url) }
    }

    /// Runs `body` with a new, empty server, which it may stop and start again (on the same port
    /// and data).
    package static func withServer(_ body: (Server) async throws -> Void) async throws {
        guard let binaries else { throw Failure(description: skipReason ?? "") }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("herald-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        // PostgreSQL refuses to run as root: then it runs as the postgres user, in a folder of its own.
        if geteuid() == 0 { try FileManager.default.setAttributes([.ownerAccountName: "postgres"], ofItemAtPath: folder.path) }
        let server = Server(binaries: binaries, folder: folder, port: try Self.freePort())
        let initdb = try server.launch("initdb", ["-D", server.data, "-U", "herald", "--auth=trust", "-E", "UTF8", "--no-sync"])
        try await Server.wait(for: initdb, "initdb") { !initdb.isRunning }
        guard initdb.terminationStatus == 0 else { throw Failure(description: "initdb exited with \(initdb.terminationStatus)") }
        // The port was free when picked; the tests' own connections may take it before the server
        // listens (initdb takes a while): then another one.
        for attempt in 1... {
            do {
                try await server.start()
                break
            } catch let failure as Failure where failure.portTaken && attempt < 5 {
                server.port = try Self.freePort()
            }
        }
        defer { server.stop() }
        try await body(server)
    }

    /// A throwaway server.
    package final class Server {
        /// Where it listens: `postgres://herald@127.0.0.1:PORT/postgres`.
        package var url: String { "postgres://herald@127.0.0.1:\(self.port)/postgres" }
        let binaries: URL
        let folder: URL
        fileprivate(set) var port: Int
        var data: String { self.folder.appendingPathComponent("data").path }
        private var process: Process?

        init(binaries: URL, folder: URL, port: Int) {
            self.binaries = binaries
            self.folder = folder
            self.port = port
        }

        /// Starts the server; returns once it accepts connections.
        package func start() async throws {
            let log = self.folder.appendingPathComponent("postgres.log")
            let server = try self.launch(
                "postgres",
                ["-D", self.data, "-p", "\(self.port)", "-k", self.folder.path, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                log: log
            )
            self.process = server
            try await Self.wait(for: server, "PostgreSQL listening on \(self.port)") {
                // Or it exited (below says why).
                !server.isRunning || ThrowawayPostgres.accepts(port: self.port)
            }
            // Listening is not answering yet ("the database system is starting up"), and a pool
            // refused at that point backs off, for longer each time: wait for an answer.
            let deadline = ContinuousClock.now + .seconds(60)
            while true {
                let answered = (try? await self.execute("SELECT 1")) == "1"
                guard server.isRunning else {
                    // What listened, and answered if it did, was another server on the port.
                    let said = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(5)
                    throw Failure(
                        description: "PostgreSQL on \(self.port) exited with \(server.terminationStatus) before it answered a query; "
                            + "the end of its log: \(said.joined(separator: " | "))",
                        portTaken: said.contains { $0.contains("Address already in use") }
                    )
                }
                if answered { break }
                guard ContinuousClock.now < deadline else {
                    throw Failure(description: "PostgreSQL on \(self.port) did not answer a query within a minute")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        /// Stops the server (a fast shutdown: connections are closed) and waits until it has.
        package func stop() {
            guard let process = self.process else { return }
            process.interrupt()  // SIGINT: a fast shutdown
            while process.isRunning { usleep(10_000) }
            self.process = nil
        }

        /// Runs `sql` through `psql`; returns what it printed (unaligned, tuples only). psql gives
        /// up on a server that has not answered its connection within 5 seconds (without a limit
        /// it waits, up to the minute `wait(for:)` allows, on something else on the port that accepts
        /// and never answers).
        @discardableResult
        package func execute(_ sql: String) async throws -> String {
            let output = self.folder.appendingPathComponent("psql-\(UUID().uuidString).out")
            defer { try? FileManager.default.removeItem(at: output) }
            let psql = try self.launch(
                "psql",
                [
                    "-h", "127.0.0.1", "-p", "\(self.port)", "-U", "herald", "-d", "dbname=postgres connect_timeout=5",
                    "-tA", "-o", output.path, "-c", sql,
                ]
            )
            try await Self.wait(for: psql, "psql") { !psql.isRunning }
            guard psql.terminationStatus == 0 else { throw Failure(description: "psql exited with \(psql.terminationStatus)") }
            return ((try? String(contentsOf: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// Starts `tool` with `arguments`; what it says on its standard error goes to `log`, if given.
        func launch(_ tool: String, _ arguments: [String], log: URL? = nil) throws -> Process {
            let process = Process()
            let path = self.binaries.appendingPathComponent(tool).path
            // As root, the tool runs as the postgres user (setpriv execs, so the process started is
            // the tool itself).
            if geteuid() == 0 {
                process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
                process.arguments = ["--reuid=postgres", "--regid=postgres", "--init-groups", path] + arguments
            } else {
                process.executableURL = URL(fileURLWithPath: path)
                process.arguments = arguments
            }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            var logHandle: FileHandle?
            if let log {
                _ = FileManager.default.createFile(atPath: log.path, contents: nil)
                logHandle = try? FileHandle(forWritingTo: log)
                if let logHandle { process.standardError = logHandle }
            }
            defer { try? logHandle?.close() }  // (the process has its own)
            try process.run()
            return process
        }

        /// Polled: waitUntilExit would block one of the few threads the tests share.
        static func wait(for process: Process, _ what: String, until done: () -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            while !done(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            guard done() else {
                process.terminate()
                throw Failure(description: "\(what) did not happen within a minute")
            }
        }
    }

    static func accepts(port: Int) -> Bool {
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

    /// A port of 127.0.0.1 that was free a moment ago.
    package static func freePort() throws -> Int {
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
