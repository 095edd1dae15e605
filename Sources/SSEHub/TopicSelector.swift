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

    private enum Matcher: Sendable {
        case all
        case exact
        case template(TemplateAutomaton)
    }

    /// Compiles `selector`. A string that is not a valid URI template is still a selector: it
    /// matches only itself.
    public init(_ selector: String) {
        self.description = selector
        if let matcher = Self.compiled.withLockedValue({ $0.matchers[selector] }) {
            self.matcher = matcher
            return
        }
        if selector == "*" {
            self.matcher = .all
        } else if let automaton = TemplateAutomaton(template: selector) {
            self.matcher = .template(automaton)
        } else {
            self.matcher = .exact
        }
        let states = if case .template(let automaton) = self.matcher { automaton.stateCount } else { 0 }
        Self.compiled.withLockedValue { compiled in
            if compiled.matchers.count >= Self.cacheLimit || compiled.states + states > Self.cachedStatesLimit {
                compiled = Compiled()
            }
            compiled.matchers[selector] = self.matcher
            compiled.states += states
        }
    }

    /// Selectors compiled so far, and the states of their automatons: subscribers and tokens repeat
    /// the same few, so each is compiled once. Bounded in number and in size (a subscriber may send
    /// templates of thousands of expressions): when full it starts again.
    private struct Compiled {
        var matchers: [String: Matcher] = [:]
        var states = 0
    }
    private static let compiled = NIOLockedValueBox(Compiled())
    static let cacheLimit = 10_000
    /// About 50 MB of automatons.
    static let cachedStatesLimit = 1 << 22

    /// Whether `selector` is compiled and cached (for the tests).
    static func isCached(_ selector: String) -> Bool {
        Self.compiled.withLockedValue { $0.matchers[selector] != nil }
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
        case .template(let automaton):
            return topic == self.description || automaton.matches(topic)
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
}

/// A URI template (RFC 6570) as an automaton that reads a topic's UTF-8 bytes and tells whether
/// the topic is one of the template's expansions, each expression expanding to any value or to
/// nothing. It keeps the set of states that the bytes read so far can reach (Thompson's
/// construction), so that a match takes time in proportion to the topic's length times the
/// template's size, whatever the template. A backtracking regular expression, as the hub had,
/// took time exponential in the number of expressions in a row: a subscriber's template of ten
/// `{+x}` held the hub's lock for minutes on one publish. A template's literal text matches byte
/// for byte, as in Mercure's reference hub (not by Unicode canonical equivalence, as `==` on
/// strings, which the regular expression followed).
struct TemplateAutomaton: Sendable {
    /// A state: one that reads a byte of `sets[test]` and goes to `next`; or, when `test` is
    /// `reads`, one that goes to `next` and to `other` (unless it is -1) without reading. State 0
    /// accepts. Twelve bytes: a template of thousands of expressions stays small.
    private struct State: Sendable {
        var test: UInt16
        var next: Int32
        var other: Int32 = -1
    }

    /// The `test` of a state that reads nothing.
    private static let readsNothing = UInt16.max

    /// A set of bytes, as 256 bits.
    private struct ByteSet: Sendable, Equatable {
        var bits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

        init(_ characters: String) {
            for byte in characters.utf8 { self.insert(byte) }
        }

        init(byte: UInt8) {
            self.insert(byte)
        }

        mutating func insert(_ byte: UInt8) {
            let bit = UInt64(1) << (byte & 63)
            switch byte >> 6 {
            case 0: self.bits.0 |= bit
            case 1: self.bits.1 |= bit
            case 2: self.bits.2 |= bit
            default: self.bits.3 |= bit
            }
        }

        static func == (lhs: ByteSet, rhs: ByteSet) -> Bool {
            lhs.bits.0 == rhs.bits.0 && lhs.bits.1 == rhs.bits.1 && lhs.bits.2 == rhs.bits.2 && lhs.bits.3 == rhs.bits.3
        }

        func contains(_ byte: UInt8) -> Bool {
            let word =
                switch byte >> 6 {
                case 0: self.bits.0
                case 1: self.bits.1
                case 2: self.bits.2
                default: self.bits.3
                }
            return word & (UInt64(1) << (byte & 63)) != 0
        }
    }

    /// What a template's parts expand to.
    private indirect enum Piece: Sendable {
        case bytes(ByteSet)
        case sequence([Piece])
        case either(Piece, Piece)
        case repeated(Piece)  // any number of times, none included
        case optional(Piece)

        static func literal(_ text: String) -> Piece {
            .sequence(text.utf8.map { .bytes(ByteSet(byte: $0)) })
        }
    }

    private var states = [State(test: readsNothing, next: -1)]
    /// The sets of bytes the states read, each once.
    private var sets: [ByteSet] = []
    private var start: Int32 = 0

    /// The number of states, for the size of the cache.
    var stateCount: Int { self.states.count }

    /// The automaton of `template`, or `nil` when it has no expression or is not a valid
    /// template (unbalanced braces, an empty or invalid expression).
    init?(template: String) {
        var pieces: [Piece] = []
        var sawExpression = false
        var index = template.startIndex
        while index < template.endIndex {
            let character = template[index]
            if character == "}" { return nil }
            guard character == "{" else {
                pieces.append(.literal(String(character)))
                index = template.index(after: index)
                continue
            }
            guard let close = template[index...].firstIndex(of: "}"),
                let piece = Self.piece(forExpression: template[template.index(after: index)..<close])
            else { return nil }
            pieces.append(piece)
            sawExpression = true
            index = template.index(after: close)
        }
        guard sawExpression else { return nil }
        self.start = self.add(.sequence(pieces), then: 0)
    }

    private static let unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    private static let reserved = ":/?#[]@!$&'()*+,;="
    private static let hexDigits = Piece.bytes(ByteSet("0123456789ABCDEFabcdef"))
    private static let percentEncoded = Piece.sequence([.literal("%"), hexDigits, hexDigits])
    /// A value of a simple expression or a list: unreserved characters, percent-encoded bytes,
    /// and the commas between a list's items.
    private static let listValue = Piece.repeated(.either(.bytes(ByteSet(unreserved + ",")), percentEncoded))
    /// A value of `{+x}` and `{#x}`, reserved characters allowed.
    private static let reservedValue = Piece.repeated(.either(.bytes(ByteSet(unreserved + reserved)), percentEncoded))
    private static let nameByte = Piece.bytes(
        ByteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.%")
    )
    private static let name = Piece.sequence([nameByte, .repeated(nameByte)])

    /// What `expression` (between its braces) expands to, or `nil` when it is not valid.
    private static func piece(forExpression expression: Substring) -> Piece? {
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
            guard !name.isEmpty,
                name.allSatisfy({ $0.isASCIIDigit || $0.isASCIILetter || $0 == "_" || $0 == "." || $0 == "%" })
            else { return nil }
        }
        let pair = Piece.sequence([name, .literal("="), listValue])
        switch operatorCharacter {
        case nil: return listValue
        case "+": return reservedValue
        case "#": return .optional(.sequence([.literal("#"), reservedValue]))
        case ".": return .repeated(.sequence([.literal("."), listValue]))
        case "/": return .repeated(.sequence([.literal("/"), listValue]))
        case ";": return .repeated(.sequence([.literal(";"), name, .optional(.sequence([.literal("="), listValue]))]))
        case "?": return .optional(.sequence([.literal("?"), pair, .repeated(.sequence([.literal("&"), pair]))]))
        case "&": return .repeated(.sequence([.literal("&"), pair]))
        default: return nil  // (no other operator is taken above)
        }
    }

    /// Adds the states of `piece`, followed by state `then`; returns the first.
    private mutating func add(_ piece: Piece, then: Int32) -> Int32 {
        switch piece {
        case .bytes(let bytes):
            let test = self.sets.firstIndex(of: bytes) ?? { self.sets.append(bytes); return self.sets.count - 1 }()
            return self.append(State(test: UInt16(test), next: then))
        case .sequence(let pieces):
            return pieces.reversed().reduce(then) { next, piece in self.add(piece, then: next) }
        case .either(let one, let other):
            return self.append(State(test: Self.readsNothing, next: self.add(one, then: then), other: self.add(other, then: then)))
        case .repeated(let body):
            let loop = self.append(State(test: Self.readsNothing, next: -1, other: then))
            self.states[Int(loop)].next = self.add(body, then: loop)
            return loop
        case .optional(let body):
            return self.append(State(test: Self.readsNothing, next: self.add(body, then: then), other: then))
        }
    }

    private mutating func append(_ state: State) -> Int32 {
        self.states.append(state)
        return Int32(self.states.count - 1)
    }

    /// Whether `topic` is one of the template's expansions.
    func matches(_ topic: String) -> Bool {
        var current: [Int32] = []
        var next: [Int32] = []
        // The last step at which each state was added, so that a state is added once a step.
        var added = [Int32](repeating: -1, count: self.states.count)
        var stack: [Int32] = []
        func reach(_ state: Int32, at step: Int32, into set: inout [Int32]) {
            stack.append(state)
            while let state = stack.popLast() {
                guard added[Int(state)] != step else { continue }
                added[Int(state)] = step
                let reached = self.states[Int(state)]
                if reached.test == Self.readsNothing, state != 0 {
                    stack.append(reached.next)
                    if reached.other >= 0 { stack.append(reached.other) }
                } else {
                    set.append(state)
                }
            }
        }
        reach(self.start, at: 0, into: &current)
        var step: Int32 = 0
        for byte in topic.utf8 {
            step += 1
            next.removeAll(keepingCapacity: true)
            for state in current {
                let reading = self.states[Int(state)]
                if reading.test != Self.readsNothing, self.sets[Int(reading.test)].contains(byte) {
                    reach(reading.next, at: step, into: &next)
                }
            }
            if next.isEmpty { return false }
            swap(&current, &next)
        }
        return current.contains(0)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { self >= "0" && self <= "9" }
    fileprivate var isASCIILetter: Bool { (self >= "a" && self <= "z") || (self >= "A" && self <= "Z") }
}
