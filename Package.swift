// swift-tools-version:6.1
//
// Herald: Server-Sent Events for Swift, from the wire format up to a pub/sub hub.
// The targets are layered bottom-up; a target never depends on one above it:
//
//   SSECore     (wire format, no dependencies)
//   SSEClient      (EventSource on AsyncHTTPClient)
//   SSENIO         (event streams as NIO ByteBuffers, with keep-alive: shared by the server helpers)
//   HummingbirdSSE (server helpers for Hummingbird)
//   VaporSSE       (the same helpers for Vapor)
//   SSEHub         (the Mercure-compatible hub)
//   herald         (command line)
//   Examples/      (the classic SSE examples, each an executable with its page)
//
// Benchmarks that compare Herald with its peers live in `Benchmarks/`, a package of their own that
// library users never resolve; `HistoryBenchmark` (the hub's history alone) is here, built with the hub.

import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "herald",
    platforms: [.macOS(.v14), .iOS(.v17), .tvOS(.v17), .watchOS(.v10), .visionOS(.v1)],
    products: [
        .library(name: "SSECore", targets: ["SSECore"]),
        .library(name: "SSEClient", targets: ["SSEClient"]),
        .library(name: "SSENIO", targets: ["SSENIO"]),
        .library(name: "HummingbirdSSE", targets: ["HummingbirdSSE"]),
        .library(name: "VaporSSE", targets: ["VaporSSE"]),
        .library(name: "SSEHub", targets: ["SSEHub"]),
        .executable(name: "herald", targets: ["herald"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.1.4"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // Layer 1: the wire format. No dependencies at all, not even Foundation.
        .target(
            name: "SSECore",
            swiftSettings: swiftSettings
        ),
        // Layer 2: the client.
        .target(
            name: "SSEClient",
            dependencies: [
                "SSECore",
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPCompression", package: "swift-nio-extras"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        // Layer 3: server helpers.
        .target(
            name: "SSENIO",
            dependencies: [
                "SSECore",
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "HummingbirdSSE",
            dependencies: [
                "SSENIO",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "VaporSSE",
            dependencies: [
                "SSENIO",
                .product(name: "Vapor", package: "vapor"),
            ],
            swiftSettings: swiftSettings
        ),
        // Layer 4: the hub.
        .target(
            name: "SSEHub",
            dependencies: [
                "SSECore",
                "SSENIO",
                "HummingbirdSSE",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Layer 5: the command line.
        .executableTarget(
            name: "herald",
            dependencies: [
                "SSECore",
                "SSEClient",
                "SSEHub",
                "SSENIO",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "HistoryBenchmark",
            dependencies: ["SSEHub"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SSECoreTests",
            dependencies: ["SSECore"],
            swiftSettings: swiftSettings
        ),
        // The classic SSE examples (Examples/README.md), each with its page in Public/.
        .executableTarget(
            name: "Ticker",
            dependencies: [
                "HummingbirdSSE",
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            path: "Examples/Ticker",
            exclude: ["Public"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "TokenStream",
            dependencies: [
                "HummingbirdSSE",
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            path: "Examples/TokenStream",
            exclude: ["Public"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "SignupFeed",
            dependencies: [
                "HummingbirdSSE",
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            path: "Examples/SignupFeed",
            exclude: ["Public"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "BuildLog",
            dependencies: [
                "HummingbirdSSE",
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            path: "Examples/BuildLog",
            exclude: ["Public"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "Notifications",
            dependencies: [
                "VaporSSE",
                .product(name: "Vapor", package: "vapor"),
            ],
            path: "Examples/Notifications",
            exclude: ["Public"],
            swiftSettings: swiftSettings
        ),
        // A real HTTP server on 127.0.0.1 and a manual clock, for the tests only.
        .target(
            name: "HeraldTestSupport",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPCompression", package: "swift-nio-extras"),
            ],
            path: "Tests/HeraldTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SSEClientTests",
            dependencies: [
                "SSEClient",
                "HeraldTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SSENIOTests",
            dependencies: ["SSENIO", "HeraldTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HummingbirdSSETests",
            dependencies: [
                "HummingbirdSSE",
                "HeraldTestSupport",
                "SSEClient",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VaporSSETests",
            dependencies: [
                "VaporSSE",
                "HeraldTestSupport",
                "SSEClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "VaporTesting", package: "vapor"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SSEHubTests",
            dependencies: [
                "HeraldTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                "SSEHub",
                "SSEClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HeraldCLITests",
            dependencies: [
                "herald",
                "SSECore",
                "HeraldTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
