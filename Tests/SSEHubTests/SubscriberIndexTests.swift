//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import SSEHub

@Suite("Subscriber index")
struct SubscriberIndexTests {
    static let selectors = [
        "*", "https://example.com/books/1", "https://example.com/books/{id}", "https://example.com/{+path}",
        "https://example.com/authors/7", "other", "https://example.com/books/{id}{?q}",
    ].map(TopicSelector.init)
    static let topics = [
        "https://example.com/books/1", "https://example.com/books/2", "https://example.com/authors/7",
        "https://example.com/a/b/c", "other", "nothing-matches-this", "https://example.com/books/3?q=x",
    ]

    /// What the index must answer: every subscriber with a matching selector, once.
    func bruteForce(_ subscribers: [Int: [TopicSelector]], _ topics: [String]) -> [Int] {
        subscribers.filter { $0.value.contains { $0.matchesAny(of: topics) } }.map(\.key).sorted()
    }

    @Test func findsExactlyTheMatchingSubscribersOnce() {
        var generator = SystemRandomNumberGenerator()
        var index = SubscriberIndex()
        var subscribers: [Int: [TopicSelector]] = [:]
        for round in 0..<400 {
            if round % 3 == 2, let victim = subscribers.keys.randomElement(using: &generator) {
                index.remove(victim, selectors: subscribers.removeValue(forKey: victim)!)
            } else {
                let selectors = (0..<Int.random(in: 1...3, using: &generator)).map { _ in Self.selectors.randomElement(using: &generator)! }
                subscribers[round] = selectors
                index.insert(round, selectors: selectors)
            }
            let topics = (0..<Int.random(in: 1...2, using: &generator)).map { _ in Self.topics.randomElement(using: &generator)! }
            var found: [Int] = []
            index.forEachSubscriber(of: topics) { found.append($0) }
            #expect(found.count == Set(found).count, "nobody twice")
            #expect(found.sorted() == self.bruteForce(subscribers, topics), "round \(round), topics \(topics)")
        }
    }

    @Test func aNewTemplateIsSeenForTopicsAlreadyLookedUp() {
        var index = SubscriberIndex()
        index.insert(1, selectors: [TopicSelector("https://example.com/books/{id}")])
        var found: [Int] = []
        index.forEachSubscriber(of: ["https://example.com/books/9"]) { found.append($0) }
        #expect(found == [1])
        index.insert(2, selectors: [TopicSelector("https://example.com/{+path}")])
        found = []
        index.forEachSubscriber(of: ["https://example.com/books/9"]) { found.append($0) }
        #expect(found.sorted() == [1, 2])
        index.remove(1, selectors: [TopicSelector("https://example.com/books/{id}")])
        found = []
        index.forEachSubscriber(of: ["https://example.com/books/9"]) { found.append($0) }
        #expect(found == [2])
    }
}
