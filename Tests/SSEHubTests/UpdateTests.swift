//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import SSEHub

@Suite("Publish requests")
struct UpdateTests {
    func parse(_ body: String) throws(PublishError) -> Update {
        try Update(form: Array(body.utf8), makeID: { "urn:uuid:made" })
    }

    @Test func everyField() throws {
        let update = try self.parse("topic=https%3A%2F%2Fexample.com%2F1&topic=%2Falt&data=a+b%0Ac&private=on&id=urn%3A1&type=book&retry=2500&other=x")
        #expect(update.topics == ["https://example.com/1", "/alt"])
        #expect(update.data == "a b\nc")
        #expect(update.isPrivate)
        #expect(update.id == "urn:1")
        #expect(update.type == "book")
        #expect(update.retry == .milliseconds(2500))
    }

    @Test func defaults() throws {
        let update = try self.parse("topic=t")
        #expect(update == Update(id: "urn:uuid:made", topics: ["t"], data: ""))
        #expect(try self.parse("topic=t&private").isPrivate, "presence alone makes it private")
        #expect(try self.parse("topic=t&private=").isPrivate)
    }

    @Test(arguments: [
        ("", "missing 'topic'"),
        ("data=x", "missing 'topic'"),
        ("topic=", "'topic' must not be empty"),
        ("topic=t&id=%23frag", "must not start with '#'"),
        ("topic=t&id=a%0Ab", "'id' must not contain CR, LF or NUL"),
        ("topic=t&id=a%00b", "'id' must not contain CR, LF or NUL"),
        ("topic=t&type=a%0Db", "'type' must not contain CR or LF"),
        ("topic=t&retry=-1", "'retry' must be a whole number"),
        ("topic=t&retry=1.5", "'retry' must be a whole number"),
        ("topic=t&retry=", "'retry' must be a whole number"),
        ("topic=t&data=a&data=b", "'data' may be given once"),
        ("topic=t&data=%zz", "not valid form encoding"),
        ("topic=t&data=%4", "not valid form encoding"),
        ("topic=t&data=%FF", "not valid UTF-8"),
    ])
    func badRequestsSayWhatIsWrong(_ body: String, _ reason: String) {
        #expect {
            _ = try self.parse(body)
        } throws: { error in
            (error as? PublishError)?.description.contains(reason) == true
        }
    }

    @Test func madeIDsAreTimeOrderedUUIDs() {
        let first = Hub.makeID()
        let second = Hub.makeID()
        #expect(first.hasPrefix("urn:uuid:") && first.count == 45)
        #expect(first != second)
        let version = first[first.index(first.startIndex, offsetBy: 23)]
        #expect(version == "7")
    }
}

@Suite("In-memory event store")
struct InMemoryEventStoreTests {
    func updates(_ ids: ClosedRange<Int>) -> [Update] {
        ids.map { Update(id: "e\($0)", topics: ["t"], data: "\($0)") }
    }

    @Test func sequencesAndRanges() async throws {
        let store = InMemoryEventStore(capacity: 100)
        let stored = try await store.append(self.updates(1...5))
        #expect(stored.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(try await store.lastSequence() == 5)
        #expect(try await store.updates(after: "e2", through: 4)?.map(\.update.id) == ["e3", "e4"])
        #expect(try await store.updates(after: "e5", through: 5)?.isEmpty == true)
        #expect(try await store.updates(after: "nope", through: 5) == nil)
        #expect(try await store.updates(through: 3).map(\.update.id) == ["e1", "e2", "e3"])
    }

    @Test func retentionForgetsTheOldest() async throws {
        let store = InMemoryEventStore(capacity: 3)
        for n in 1...10 { _ = try await store.append(self.updates(n...n)) }
        #expect(try await store.updates(through: 10).map(\.update.id) == ["e8", "e9", "e10"])
        #expect(try await store.updates(after: "e7", through: 10) == nil, "a forgotten id is unknown")
        #expect(try await store.updates(after: "e8", through: 10)?.map(\.update.id) == ["e9", "e10"])
    }

    @Test func duplicateIDsAreRefused() async throws {
        let store = InMemoryEventStore()
        _ = try await store.append(self.updates(1...2))
        await #expect(throws: EventStoreError.duplicateID) { try await store.append(self.updates(2...3)) }
        await #expect(throws: EventStoreError.duplicateID) {
            try await store.append([Update(id: "x", topics: ["t"], data: ""), Update(id: "x", topics: ["t"], data: "")])
        }
        #expect(try await store.lastSequence() == 2, "nothing of a refused batch is kept")
    }
}
