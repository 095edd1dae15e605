//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import Hummingbird
public import NIOCore

/// The request context for a router that serves a hub: `Router(context: HubRequestContext.self)`.
///
/// It keeps the request's channel, so that the hub writes each subscriber's events straight to
/// it on its event loop, many events a flush, with no task or thread hop per event. Any other
/// context works too, more slowly. Serve the router with
/// ``Hub/http1Server(configuration:requestTimeout:)``, or over TLS with
/// ``Hub/http2Server(tlsConfiguration:configuration:requestTimeout:)``, for the smallest idle
/// subscribers; or with the hub's own server,
/// ``Hub/server(_:host:port:tlsConfiguration:requestTimeout:serverName:onServerRunning:logger:)``,
/// which also opens their connections with the least CPU.
public struct HubRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The channel of the request (of its HTTP/2 stream, over HTTP/2).
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}

/// Runs a task's jobs on an event loop.
@available(macOS 15, iOS 18, tvOS 18, watchOS 11, visionOS 2, *)
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.loop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}

/// Runs `body` on `loop` when there is one (and the platform has task executors), else as it is.
func onEventLoop<T>(_ loop: (any EventLoop)?, _ body: () async throws -> T) async throws -> T {
    if let loop, #available(macOS 15, iOS 18, tvOS 18, watchOS 11, visionOS 2, *) {
        return try await withTaskExecutorPreference(EventLoopTaskExecutor(loop)) {
            try await body()
        }
    }
    return try await body()
}
