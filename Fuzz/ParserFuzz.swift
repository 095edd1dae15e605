//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

// libFuzzer target for the parser, compiled into one module with SSECore's sources by
// `scripts/fuzz.sh`. Two oracles, beyond "no crash" under AddressSanitizer:
// 1. bounded memory: the parser never holds more than its limit allows;
// 2. chunking invariance: the whole input, the input one byte at a time, and the input cut where
//    the first byte of the fuzz input says, all give the same outputs and the same error.

struct FuzzResult: Equatable {
    var outputs: [ServerSentEventParser.Output] = []
    var error: ServerSentEventError?
}

let fuzzConfiguration = ServerSentEventParser.Configuration(maximumEventSize: 48)

func parseInChunks(_ input: ArraySlice<UInt8>, chunkSize: (Int) -> Int) -> FuzzResult {
    var parser = ServerSentEventParser(configuration: fuzzConfiguration, lastEventID: "start")
    var result = FuzzResult()
    var start = input.startIndex
    var chunkNumber = 0
    do {
        while start < input.endIndex {
            let end = start + min(chunkSize(chunkNumber), input.endIndex - start)
            try parser.parse(input[start..<end]) { result.outputs.append($0) }
            precondition(
                parser.bufferedByteCount <= 2 * (fuzzConfiguration.maximumEventSize + 1),
                "the parser holds \(parser.bufferedByteCount) bytes"
            )
            start = end
            chunkNumber += 1
        }
        parser.finish()
        precondition(parser.bufferedByteCount == 0)
    } catch {
        result.error = (error as! ServerSentEventError)
    }
    return result
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let pattern = bytes[0]
    let input = bytes[1...]

    let whole = parseInChunks(input) { _ in Int.max }
    let oneByte = parseInChunks(input) { _ in 1 }
    // Chunk sizes 1 to 8, varying from chunk to chunk, chosen by the first byte.
    let patterned = parseInChunks(input) { number in
        1 + Int(((UInt(pattern) &* 2_654_435_761 &+ UInt(number) &* 40_503) >> 5) % 8)
    }

    precondition(whole == oneByte, "one byte at a time differs: \(whole) vs \(oneByte)")
    precondition(whole == patterned, "chunking \(pattern) differs: \(whole) vs \(patterned)")
    return 0
}
