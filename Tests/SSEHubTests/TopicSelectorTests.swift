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
        Case(
            selector: "https://example.com/users/foo/{?topic}",
            topic: "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1",
            matches: true
        ),
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

    /// The automaton agrees with the regular expression the hub used before it, on random
    /// templates of every operator, with literals around and between their expressions, and
    /// topics made of their literals with values that fit an expression or not (some with a byte
    /// changed), small enough for the regular expression to answer at once.
    @Test func templatesMatchAsTheirRegularExpressionsDid() throws {
        var generator = SystemRandomNumberGenerator()
        let expressions = [
            "{x}", "{x,y}", "{+x}", "{#x}", "{.x}", "{/x}", "{;x}", "{;x,y}", "{?x}", "{?x,y}", "{&x}", "{x*}", "{x:3}",
        ]
        let literals = ["", "a", "/", ".", "-", "?", "=", "é"]
        let values = [
            "", "a", "ab", "a,b", "/a", "/a/b", ".a", ".a.b", ";x", ";x=1", "?x=1", "?x=1&y=2", "&y=2", "#a", "#a/b",
            "%2F",
            "%2", "a b", "é", ":", "a/b",
        ]
        let bytes = ["a", "/", ".", ",", ";", "=", "?", "&", "#", "%", " "]
        var (matched, unmatched) = (0, 0)
        for _ in 0..<300 {
            var parts = [literals.randomElement(using: &generator)!]
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                parts += [expressions.randomElement(using: &generator)!, literals.randomElement(using: &generator)!]
            }
            let template = parts.joined()
            let selector = TopicSelector(template)
            let regex = try Regex(try #require(TemplateRegex.pattern(forTemplate: template)))
            for _ in 0..<40 {
                var topic = parts.enumerated().map {
                    $0.offset % 2 == 0 ? $0.element : values.randomElement(using: &generator)!
                }
                .joined()
                if !topic.isEmpty, Bool.random(using: &generator) {
                    var characters = Array(topic)
                    characters[Int.random(in: 0..<characters.count, using: &generator)] = Character(
                        bytes.randomElement(using: &generator)!
                    )
                    topic = String(characters)
                }
                let expected = try topic == template || regex.wholeMatch(in: topic) != nil
                #expect(selector.matches(topic) == expected, "\(template) \(expected ? "~" : "!~") \(topic)")
                if expected { matched += 1 } else { unmatched += 1 }
            }
        }
        #expect(matched > 500 && unmatched > 5_000, "enough of both: \(matched) and \(unmatched)")
    }

    /// Expressions in a row cost a match in proportion to their number, not exponentially: a
    /// backtracking regular expression took minutes over a topic of 60 bytes with 12 of them.
    @Test(.timeLimit(.minutes(1)))
    func manyExpressionsInARowMatchInTime() throws {
        let template = String(repeating: "{+x}", count: 12) + "!"
        let selector = TopicSelector(template)
        let topic = "https://example.com/" + String(repeating: "a", count: 40)
        #expect(!selector.matches(topic))
        #expect(selector.matches(topic + "!"))
        #expect(TopicSelector(String(repeating: "{/x}", count: 50)).matches(String(repeating: "/a", count: 500)))
        // Small to keep, too: six states of twelve bytes an expression (and one a literal byte).
        let long = try #require(TemplateAutomaton(template: "/a" + String(repeating: "{+x}", count: 2_000)))
        #expect(long.stateCount == 1 + 2 + 6 * 2_000)
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

/// The regular expression the hub matched templates with before its automaton, for expansions:
/// the automaton must agree with it wherever it finishes (on small templates and topics).
enum TemplateRegex {
    private static let unreserved = "A-Za-z0-9\\-._~"
    private static let reserved = ":/?#\\[\\]@!$&'()*+,;="
    private static let percentEncoded = "%[0-9A-Fa-f]{2}"

    /// A regular expression for the expansions of `template`, or `nil` when it has no expression
    /// or is not a valid template (unbalanced braces, an empty or invalid expression).
    static func pattern(forTemplate template: String) -> String? {
        var pattern = ""
        var literal = ""
        var sawExpression = false
        var index = template.startIndex
        while index < template.endIndex {
            let character = template[index]
            if character == "}" { return nil }
            guard character == "{" else {
                literal.append(character)
                index = template.index(after: index)
                continue
            }
            guard let close = template[index...].firstIndex(of: "}") else { return nil }
            let expression = template[template.index(after: index)..<close]
            guard let fragment = self.pattern(forExpression: expression) else { return nil }
            pattern += Self.escaped(literal) + fragment
            literal = ""
            sawExpression = true
            index = template.index(after: close)
        }
        guard sawExpression else { return nil }
        return pattern + Self.escaped(literal)
    }

    private static func pattern(forExpression expression: Substring) -> String? {
        var variables = expression
        var operatorCharacter: Character?
        if let first = expression.first, "+#./;?&".contains(first) {
            operatorCharacter = first
            variables = expression.dropFirst()
        }
        // varname *( "," varname ), each with an optional ":N" prefix or "*" explode modifier.
        let names = variables.split(separator: ",", omittingEmptySubsequences: false)
        guard !names.isEmpty else { return nil }
        for name in names {
            var name = name
            if name.hasSuffix("*") {
                name = name.dropLast()
            } else if let colon = name.firstIndex(of: ":") {
                let length = name[name.index(after: colon)...]
                guard !length.isEmpty, length.count <= 4, length.allSatisfy(\.isReferenceDigit) else { return nil }
                name = name[..<colon]
            }
            guard !name.isEmpty,
                name.allSatisfy({ $0.isReferenceDigit || $0.isReferenceLetter || $0 == "_" || $0 == "." || $0 == "%" })
            else { return nil }
        }
        let value = "(?:[\(unreserved)]|\(percentEncoded))*"
        let listValue = "(?:[\(unreserved),]|\(percentEncoded))*"
        let reservedValue = "(?:[\(unreserved)\(reserved)]|\(percentEncoded))*"
        let name = "[A-Za-z0-9_.%]+"
        switch operatorCharacter {
        case nil: return listValue
        case "+": return reservedValue
        case "#": return "(?:#\(reservedValue))?"
        case ".": return "(?:\\.\(listValue))*"
        case "/": return "(?:/\(listValue))*"
        case ";": return "(?:;\(name)(?:=\(listValue))?)*"
        case "?": return "(?:\\?\(name)=\(listValue)(?:&\(name)=\(listValue))*)?"
        case "&": return "(?:&\(name)=\(listValue))*"
        default: return value
        }
    }

    private static func escaped(_ literal: String) -> String {
        var escaped = ""
        for character in literal {
            if "\\^$.|?*+()[]{}/-".contains(character) { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }
}

extension Character {
    fileprivate var isReferenceDigit: Bool { self >= "0" && self <= "9" }
    fileprivate var isReferenceLetter: Bool { (self >= "a" && self <= "z") || (self >= "A" && self <= "Z") }
}
