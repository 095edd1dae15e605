//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Hummingbird
import Logging
import SSEHub
import SSENIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the hub: Mercure's publish and subscribe endpoints at /.well-known/mercure.",
        discussion: """
            This version keeps its history in memory and does not check authorization yet: \
            anyone who can reach it may publish, and private updates go to no one. It listens on \
            127.0.0.1 unless told otherwise; do not expose it.
            """
    )

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on.")
    var port = 8080

    @Option(help: "Seconds of silence before a heartbeat comment goes to a subscriber; 0 for none.")
    var heartbeat: Double = 15

    @Option(help: "How many updates the history keeps for subscribers that resume.")
    var history = 10_000

    @Option(help: "Updates that may wait for one subscriber before it is cut as too slow.")
    var subscriberQueue = 1_000

    func validate() throws {
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be between 0 and 65535.") }
        guard self.heartbeat >= 0 else { throw ValidationError("--heartbeat must not be negative.") }
        guard self.history > 0 else { throw ValidationError("--history must be at least 1.") }
        guard self.subscriberQueue > 0 else { throw ValidationError("--subscriber-queue must be at least 1.") }
    }

    func run() async throws {
        var logger = Logger(label: "herald")
        logger.logLevel = .info
        var hubConfiguration = Hub.Configuration()
        hubConfiguration.subscriberQueueLimit = self.subscriberQueue
        let hub = try await Hub(store: InMemoryEventStore(capacity: self.history), configuration: hubConfiguration, logger: logger)
        var http = Hub.HTTPConfiguration()
        http.heartbeat = self.heartbeat > 0 ? KeepAlive(interval: .seconds(self.heartbeat)) : nil

        let router = Router()
        hub.addRoutes(to: router, configuration: http)
        let history = self.history
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(self.host, port: self.port), serverName: "herald"),
            onServerRunning: { channel in
                let address = channel.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                try? writeAll(
                    Array(
                        """
                        herald: hub listening on http://\(address)/.well-known/mercure (history in memory, \(history) updates)
                        herald: WARNING: authorization is not implemented yet: anyone who can reach this port can publish,
                        herald:          and private updates are delivered to no one. Do not expose it beyond this machine.

                        """.utf8
                    ),
                    to: STDERR_FILENO
                )
            },
            logger: logger
        )
        try await app.runService()
    }
}
