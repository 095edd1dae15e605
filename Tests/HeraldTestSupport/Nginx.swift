//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// nginx as a load balancer in front of hub nodes, with the settings docs/DEPLOYMENT.md gives.
package struct Nginx {
    package static let binary: String? = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }

    private let process: Process
    package let port: Int
    private let folder: URL

    /// Starts nginx on a free port of 127.0.0.1, balancing across the nodes on `ports`; it closes
    /// a client's connection after `keepaliveRequests` requests (nginx's default: 1 000).
    package static func start(balancing ports: [Int], keepaliveRequests: Int = 1_000) async throws -> Nginx {
        guard let binary else { throw NginxFailure(description: "nginx is not installed") }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("herald-nginx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("temp"), withIntermediateDirectories: true)
        let port = try ThrowawayPostgres.freePort()
        let temp = folder.appendingPathComponent("temp").path
        let configuration = """
            worker_processes 1;
            daemon off;
            pid \(folder.path)/nginx.pid;
            error_log \(folder.path)/error.log;
            events { worker_connections 1024; }
            http {
                access_log off;
                client_body_temp_path \(temp)/body;
                proxy_temp_path \(temp)/proxy;
                fastcgi_temp_path \(temp)/fastcgi;
                uwsgi_temp_path \(temp)/uwsgi;
                scgi_temp_path \(temp)/scgi;
                upstream herald {
            \(ports.map { "        server 127.0.0.1:\($0) max_fails=1 fail_timeout=10s;" }.joined(separator: "\n"))
                }
                server {
                    listen 127.0.0.1:\(port);
                    keepalive_requests \(keepaliveRequests);
                    location / {
                        proxy_pass http://herald;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_buffering off;
                        proxy_cache off;
                        proxy_read_timeout 1h;
                        proxy_connect_timeout 2s;
                    }
                }
            }
            """
        let file = folder.appendingPathComponent("nginx.conf")
        try configuration.write(to: file, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-p", folder.path, "-e", folder.appendingPathComponent("error.log").path, "-c", file.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let nginx = Nginx(process: process, port: port, folder: folder)
        for _ in 0..<200 {
            if ThrowawayPostgres.accepts(port: port) { return nginx }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        nginx.stop()
        let log = (try? String(contentsOf: folder.appendingPathComponent("error.log"), encoding: .utf8)) ?? ""
        throw NginxFailure(description: "nginx did not start: \(log)")
    }

    package func stop() {
        self.process.interrupt()
        while self.process.isRunning { usleep(10_000) }
        try? FileManager.default.removeItem(at: self.folder)
    }

    struct NginxFailure: Error, CustomStringConvertible {
        let description: String
    }
}
