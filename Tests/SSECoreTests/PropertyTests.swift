//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import SSECore

/// Random streams built from the pieces that matter to the grammar, so that every rule meets
/// every other and every chunk boundary.
func randomStream(using generator: inout SplitMix64) -> [UInt8] {
    let pieces: [[UInt8]] = [
        Array("data".utf8), Array("event".utf8), Array("id".utf8), Array("retry".utf8), Array("x".utf8),
        Array(":".utf8), Array(": ".utf8), Array(" ".utf8), Array("\n".utf8), Array("\r".utf8),
        Array("\r\n".utf8), Array("\n\n".utf8), Array("12".utf8), Array("0".utf8), Array("é".utf8),
        Array("😀".utf8), [0xEF, 0xBB, 0xBF], [0xEF, 0xBB], [0xF0, 0x9F], [0xFF], [0x80], [0x00],
        Array("data: ".utf8), Array("id: ".utf8), Array("retry: ".utf8), Array("event: ".utf8),
    ]
    var bytes: [UInt8] = []
    let count = Int(generator.next() % 40)
    for _ in 0..<count {
        bytes += pieces[Int(generator.next() % UInt64(pieces.count))]
    }
    return bytes
}

@Suite("Parser: properties")
struct PropertyTests {
    @Test func chunkingNeverChangesTheResult() {
        var generator = SplitMix64(seed: 2026)
        for _ in 0..<3_000 {
            let input = randomStream(using: &generator)
            let whole = parse(input)
            #expect(parse(input, cuts: everyByte(input.count)) == whole)
            let cuts = randomCuts(input.count, using: &generator)
            #expect(parse(input, cuts: cuts) == whole, "input \(input) cuts \(cuts)")
        }
    }

    @Test func theParserAgreesWithTheReferenceReading() {
        var generator = SplitMix64(seed: 1999)
        for _ in 0..<3_000 {
            let input = randomStream(using: &generator)
            #expect(parse(input).outputs == referenceParse(input), "input \(input)")
        }
    }

    @Test func chunkingNeverChangesTheResultNearTheLimit() {
        var generator = SplitMix64(seed: 11)
        let configuration = ServerSentEventParser.Configuration(maximumEventSize: 12)
        var errors = 0
        for _ in 0..<2_000 {
            let input = randomStream(using: &generator)
            let whole = parse(input, configuration: configuration)
            if whole.error != nil { errors += 1 }
            let cuts = randomCuts(input.count, using: &generator)
            #expect(parse(input, cuts: cuts, configuration: configuration) == whole, "input \(input) cuts \(cuts)")
        }
        #expect(errors > 100, "the generator must reach the limit often enough to test it")
    }
}
