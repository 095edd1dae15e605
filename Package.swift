// swift-tools-version:6.1
//
// Herald: Server-Sent Events for Swift, from the wire format up to a pub/sub hub.
// The targets are layered bottom-up; a target never depends on one above it:
//
//   SSECore  (wire format, no dependencies)
//     └─ herald  (command line)
//
// Benchmarks live in `Benchmarks/`, a package of their own that library users never resolve.

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
        .executable(name: "herald", targets: ["herald"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
    ],
    targets: [
        // Layer 1: the wire format. No dependencies at all, not even Foundation.
        .target(
            name: "SSECore",
            swiftSettings: swiftSettings
        ),
        // Layer 5: the command line.
        .executableTarget(
            name: "herald",
            dependencies: [
                "SSECore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SSECoreTests",
            dependencies: ["SSECore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HeraldCLITests",
            dependencies: ["herald", "SSECore"],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
