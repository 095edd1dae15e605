// swift-tools-version:6.1
//
// Herald's benchmarks: a package of their own, so that library users never resolve the peers
// they are compared with. Run from the repository root:
//
//   swift run -c release --package-path Benchmarks SSEParsingBenchmark

import PackageDescription

let package = Package(
    name: "herald-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "herald", path: ".."),
        .package(url: "https://github.com/apple/swift-openapi-runtime", from: "1.13.4"),
    ],
    targets: [
        .executableTarget(
            name: "SSEParsingBenchmark",
            dependencies: [
                .product(name: "SSECore", package: "herald"),
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        )
    ],
    swiftLanguageModes: [.v6]
)
