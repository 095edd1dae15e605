//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

/// Who listens to what: finds the subscribers of an update's topics without looking at the
/// others, so a publish costs in proportion to the subscribers it reaches.
///
/// Exact topics are keys of a dictionary; `*` subscribers are a set; subscribers with URI
/// templates are grouped by template, and which templates match a topic is remembered for the
/// topics seen recently (forgotten when a new template arrives, since it may match them too).
struct SubscriberIndex {
    private var exact: [String: Set<Int>] = [:]
    private var everything: Set<Int> = []
    private var templates: [String: (selector: TopicSelector, subscribers: Set<Int>)] = [:]
    private var templatesByTopic: [String: [String]] = [:]
    static let cachedTopicsLimit = 10_000

    mutating func insert(_ subscriber: Int, selectors: [TopicSelector]) {
        for selector in selectors {
            switch selector.kind {
            case .everything:
                self.everything.insert(subscriber)
            case .exact:
                self.exact[selector.description, default: []].insert(subscriber)
            case .template:
                if self.templates[selector.description] == nil {
                    self.templates[selector.description] = (selector, [])
                    self.templatesByTopic.removeAll(keepingCapacity: true)
                }
                self.templates[selector.description]!.subscribers.insert(subscriber)
            }
        }
    }

    mutating func remove(_ subscriber: Int, selectors: [TopicSelector]) {
        for selector in selectors {
            switch selector.kind {
            case .everything:
                self.everything.remove(subscriber)
            case .exact:
                self.exact[selector.description]?.remove(subscriber)
                if self.exact[selector.description]?.isEmpty == true { self.exact[selector.description] = nil }
            case .template:
                self.templates[selector.description]?.subscribers.remove(subscriber)
                if self.templates[selector.description]?.subscribers.isEmpty == true { self.templates[selector.description] = nil }
            }
        }
    }

    /// Calls `body` once for every subscriber with a selector matching one of `topics`.
    mutating func forEachSubscriber(of topics: [String], _ body: (Int) -> Void) {
        var sources: [Set<Int>] = []
        if !self.everything.isEmpty { sources.append(self.everything) }
        for topic in topics {
            if let subscribers = self.exact[topic] { sources.append(subscribers) }
            if !self.templates.isEmpty {
                for template in self.templates(matching: topic) {
                    if let subscribers = self.templates[template]?.subscribers { sources.append(subscribers) }
                }
            }
        }
        if sources.count == 1 {
            sources[0].forEach(body)  // the usual case: no subscriber can be there twice
        } else if sources.count > 1 {
            var seen = Set<Int>(minimumCapacity: sources.reduce(0) { $0 + $1.count })
            for source in sources {
                for subscriber in source where seen.insert(subscriber).inserted { body(subscriber) }
            }
        }
    }

    /// The templates that match `topic`, computed once per topic while the templates stay the same.
    private mutating func templates(matching topic: String) -> [String] {
        if let known = self.templatesByTopic[topic] { return known }
        let matching = self.templates.values.filter { $0.selector.matches(topic) }.map(\.selector.description)
        if self.templatesByTopic.count >= Self.cachedTopicsLimit { self.templatesByTopic.removeAll(keepingCapacity: true) }
        self.templatesByTopic[topic] = matching
        return matching
    }
}
