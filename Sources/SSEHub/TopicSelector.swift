//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import NIOConcurrencyHelpers

/// A Mercure topic selector: `*`, an exact topic, or an RFC 6570 URI template.
///
/// A topic matches when the selector is `*`, when the two strings are equal (so a template also
/// matches itself, which authorization relies on), or when the selector is a valid URI template
/// and the topic is one of its expansions. As in the reference hub, every expression of a
/// template is optional and may expand to nothing: `https://example.com/books/{id}` matches
/// `https://example.com/books/1` and `https://example.com/books/`, but not
/// `https://example.com/books/1/reviews` (a simple expression never spans a `/`; `{+path}` does).
///
/// A template is compiled once, and cached for the selectors made from the same string later.
public struct TopicSelector: Hashable, Sendable, CustomStringConvertible {
    /// The selector as given.
    public let description: String
    private let matcher: Matcher

    private enum Matcher: @unchecked Sendable {
        case all
        case exact
        case template(Regex<AnyRegexOutput>)
    }

    /// Compiles `selector`. A string that is not a valid URI template is still a selector: it
    /// matches only itself.
    public init(_ selector: String) {
        self.description = selector
        if let matcher = Self.compiled.withLockedValue({ $0[selector] }) {
            self.matcher = matcher
            return
        }
        if selector == "*" {
            self.matcher = .all
        } else if let pattern = Self.pattern(forTemplate: selector), let regex = try? Regex(pattern) {
            self.matcher = .template(regex)
        } else {
            self.matcher = .exact
        }
        Self.compiled.withLockedValue { compiled in
            if compiled.count >= Self.cacheLimit { compiled.removeAll(keepingCapacity: true) }
            compiled[selector] = self.matcher
        }
    }

    /// Selectors compiled so far: subscribers and tokens repeat the same few, so each is compiled
    /// once. Bounded: when full it starts again.
    private static let compiled = NIOLockedValueBox<[String: Matcher]>([:])
    static let cacheLimit = 10_000

    /// Whether `selector` is compiled and cached (for the tests).
    static func isCached(_ selector: String) -> Bool {
        Self.compiled.withLockedValue { $0[selector] != nil }
    }

    /// How the hub indexes a subscriber with this selector.
    enum Kind {
        /// `*`: every topic.
        case everything
        /// Only the topic equal to the selector.
        case exact
        /// A URI template: its expansions, and itself.
        case template
    }

    var kind: Kind {
        switch self.matcher {
        case .all: .everything
        case .exact: .exact
        case .template: .template
        }
    }

    /// Whether `topic` matches this selector.
    public func matches(_ topic: String) -> Bool {
        switch self.matcher {
        case .all:
            return true
        case .exact:
            return topic == self.description
        case .template(let regex):
            return topic == self.description || (try? regex.wholeMatch(in: topic)) != nil
        }
    }

    /// Whether any of `topics` matches this selector.
    public func matchesAny(of topics: [String]) -> Bool {
        topics.contains(where: self.matches)
    }

    public static func == (lhs: TopicSelector, rhs: TopicSelector) -> Bool {
        lhs.description == rhs.description
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.description)
    }

    // MARK: Compiling URI templates

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
                guard !length.isEmpty, length.count <= 4, length.allSatisfy(\.isASCIIDigit) else { return nil }
                name = name[..<colon]
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isASCIIDigit || $0.isASCIILetter || $0 == "_" || $0 == "." || $0 == "%" })
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
    fileprivate var isASCIIDigit: Bool { self >= "0" && self <= "9" }
    fileprivate var isASCIILetter: Bool { (self >= "a" && self <= "z") || (self >= "A" && self <= "Z") }
}
