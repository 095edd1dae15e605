//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import SSEHub

@Suite("Topic selectors")
struct TopicSelectorTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let selector: String
        let topic: String
        let matches: Bool
        var testDescription: String { "\(self.selector) \(self.matches ? "~" : "!~") \(self.topic)" }
    }

    static let cases: [Case] = [
        Case(selector: "*", topic: "https://example.com/anything", matches: true),
        Case(selector: "*", topic: "", matches: true),
        Case(selector: "https://example.com/foo", topic: "https://example.com/foo", matches: true),
        Case(selector: "https://example.com/foo", topic: "https://example.com/foo/", matches: false),
        Case(selector: "https://example.com/books/{id}", topic: "https://example.com/books/1", matches: true),
        Case(selector: "https://example.com/books/{id}", topic: "https://example.com/books/", matches: true),
        Case(selector: "https://example.com/books/{id}", topic: "https://example.com/books/a%20b", matches: true),
        Case(selector: "https://example.com/books/{id}", topic: "https://example.com/books/1/reviews", matches: false),
        Case(selector: "https://example.com/books/{id}", topic: "https://example.com/books", matches: false),
        Case(selector: "https://example.com/books/{id}", topic: "https://example.com/books/{id}", matches: true),
        Case(selector: "https://example.com/{+path}", topic: "https://example.com/a/b/c?d=e", matches: true),
        Case(selector: "https://example.com/users{/id}", topic: "https://example.com/users/42", matches: true),
        Case(selector: "https://example.com/users{/id}", topic: "https://example.com/users", matches: true),
        Case(selector: "https://example.com/users{/id}", topic: "https://example.com/users42", matches: false),
        Case(selector: "https://example.com/search{?q}", topic: "https://example.com/search?q=swift", matches: true),
        Case(selector: "https://example.com/search{?q}", topic: "https://example.com/search", matches: true),
        Case(selector: "https://example.com/search{?q}", topic: "https://example.com/search?x", matches: false),
        Case(selector: "https://example.com/users/foo/{?topic}", topic: "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1", matches: true),
        Case(selector: "/items/{id}.json", topic: "/items/7.json", matches: true),
        Case(selector: "/items/{id}.json", topic: "/items/7Xjson", matches: false),
        Case(selector: "/a{#frag}", topic: "/a#b/c", matches: true),
        Case(selector: "/a{.ext}", topic: "/a.json", matches: true),
        Case(selector: "/m{;x,y}", topic: "/m;x=1;y=2", matches: true),
        Case(selector: "/m{?x}{&y}", topic: "/m?x=1&y=2", matches: true),
        // Not templates: only themselves.
        Case(selector: "/broken/{id", topic: "/broken/1", matches: false),
        Case(selector: "/broken/{id", topic: "/broken/{id", matches: true),
        Case(selector: "/empty/{}", topic: "/empty/", matches: false),
        Case(selector: "/bad/{a b}", topic: "/bad/1", matches: false),
        Case(selector: "a.b", topic: "aXb", matches: false),
    ]

    @Test(arguments: cases)
    func matching(_ testCase: Case) {
        #expect(TopicSelector(testCase.selector).matches(testCase.topic) == testCase.matches)
    }

    @Test func anyOfSeveralTopics() {
        let selector = TopicSelector("https://example.com/users/foo/{?topic}")
        #expect(selector.matchesAny(of: ["https://example.com/books/1", "https://example.com/users/foo/?topic=x"]))
        #expect(!selector.matchesAny(of: ["https://example.com/books/1"]))
    }

    @Test func aSelectorIsCompiledOnceThenTakenFromTheCache() {
        let template = "https://example.com/cached/\(UInt64.random(in: 0...UInt64.max))/{id}"
        #expect(!TopicSelector.isCached(template))
        let first = TopicSelector(template)
        #expect(TopicSelector.isCached(template))
        let second = TopicSelector(template)
        // The cached one matches as the first did.
        for topic in ["\(template.dropLast(4))42", "\(template.dropLast(4))4/2"] {
            #expect(first.matches(topic) == second.matches(topic))
        }
        #expect(second.matches("\(template.dropLast(4))42"))
    }
}
