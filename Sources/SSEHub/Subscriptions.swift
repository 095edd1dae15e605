//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Hummingbird

/// A subscriber as the subscriptions API and the subscription events show it.
struct TrackedSubscriber: Sendable {
    /// A unique `urn:uuid:`, made by the hub for each connection.
    let id: String
    /// Its topic selectors, as given.
    let topics: [String]
    /// Its token's `mercure.payload`.
    let payload: JSONValue?

    /// The JSON-LD document of its subscription to `topic`.
    func document(topic: String, active: Bool, lastEventID: String? = nil) -> SubscriptionDocument {
        SubscriptionDocument(
            id: Self.path(topic: topic, subscriber: self.id),
            topic: topic,
            subscriber: self.id,
            active: active,
            payload: self.payload,
            lastEventID: lastEventID
        )
    }

    /// `/.well-known/mercure/subscriptions/{topic}/{subscriber}`, each part percent-encoded.
    static func path(topic: String, subscriber: String? = nil) -> String {
        var path = "/.well-known/mercure/subscriptions/" + Self.percentEncoded(topic)
        if let subscriber { path += "/" + Self.percentEncoded(subscriber) }
        return path
    }

    /// Everything but RFC 3986's unreserved characters is encoded, as RFC 6570 expands a variable.
    private static func percentEncoded(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? value
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}

/// Where the subscriptions of every node of a cluster are listed, when its nodes share a store
/// (the PostgreSQL history is one). A hub tracking its subscriptions lists each before announcing
/// it and unlists it before announcing its end, so the list read after taking the last event ID
/// misses no change that the events up to that ID announced.
protocol SubscriptionDirectory: Sendable {
    func insert(_ subscriber: TrackedSubscriber) async throws
    func remove(_ subscriber: TrackedSubscriber) async throws
    /// Every node's subscribers.
    func subscribers() async throws -> [TrackedSubscriber]
}

/// The JSON-LD document of one subscription (`"type": "Subscription"`).
struct SubscriptionDocument: Encodable, Sendable {
    var context: String? = nil
    let id: String
    var type = "Subscription"
    let topic: String
    let subscriber: String
    let active: Bool
    let payload: JSONValue?
    var lastEventID: String?

    enum CodingKeys: String, CodingKey {
        case context = "@context"
        case id, type, topic, subscriber, active, payload, lastEventID
    }

    /// The document on its own, with its `@context`.
    func json() -> String {
        var document = self
        document.context = mercureContext
        return encodeJSON(document)
    }
}

/// The JSON-LD document of a list of subscriptions (`"type": "Subscriptions"`).
struct SubscriptionsDocument: Encodable, Sendable {
    var context = mercureContext
    let id: String
    var type = "Subscriptions"
    let lastEventID: String
    let subscriptions: [SubscriptionDocument]

    enum CodingKeys: String, CodingKey {
        case context = "@context"
        case id, type, lastEventID, subscriptions
    }
}

private let mercureContext = "https://mercure.rocks/"

private func encodeJSON(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Strings, Booleans and finite numbers (JSON has no others) always encode.
    return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "{}"
}

extension Hub {
    /// Adds `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`: the active
    /// subscriptions as JSON-LD, to bearers of a token whose `mercure.subscribe` selectors match
    /// the requested path.
    func addSubscriptionsRoutes<Context: RequestContext>(to router: Router<Context>, authorizer: Authorizer) {
        let base = "/.well-known/mercure/subscriptions"
        router.get(RouterPath(base)) { request, _ in
            try await self.subscriptionsResponse(request, authorizer: authorizer, topic: nil, subscriber: nil)
        }
        router.get(RouterPath(base + "/:topic")) { request, context in
            let topic = try Self.decodedParameter("topic", of: context)
            return try await self.subscriptionsResponse(request, authorizer: authorizer, topic: topic, subscriber: nil)
        }
        router.get(RouterPath(base + "/:topic/:subscriber")) { request, context in
            let topic = try Self.decodedParameter("topic", of: context)
            let subscriber = try Self.decodedParameter("subscriber", of: context)
            return try await self.subscriptionsResponse(request, authorizer: authorizer, topic: topic, subscriber: subscriber)
        }
    }

    private static func decodedParameter(_ name: String, of context: some RequestContext) throws -> String {
        guard let decoded = try context.parameters.require(name).removingPercentEncoding else {
            throw HubRefusal(.badRequest, reason: "the \(name) in the path is not valid percent-encoding")
        }
        return decoded
    }

    private func subscriptionsResponse(
        _ request: Request,
        authorizer: Authorizer,
        topic: String?,
        subscriber: String?
    ) async throws -> Response {
        guard let claims = try await authorizer.subscriber(request, query: request.uri.queryParameters) else {
            throw HubRefusal(.unauthorized, reason: "the subscriptions API needs a subscriber JWT")
        }
        let path = request.uri.path
        guard claims.subscribe?.contains(where: { $0.matches(path) }) == true else {
            throw HubRefusal(.forbidden, reason: "the token's mercure.subscribe claim does not allow '\(path)'")
        }
        let (lastEventID, subscribers): (String, [TrackedSubscriber])
        do {
            (lastEventID, subscribers) = try await self.activeSubscriptions()
        } catch {
            throw self.historyUnavailable(error, doing: "list the subscriptions")
        }
        var documents: [SubscriptionDocument] = []
        for tracked in subscribers {
            for selector in tracked.topics where topic == nil || topic == selector {
                documents.append(tracked.document(topic: selector, active: true))
            }
        }
        let body: String
        if let subscriber {
            guard var document = documents.first(where: { $0.subscriber == subscriber }) else {
                throw HubRefusal(.notFound, reason: "no active subscription of '\(subscriber)' to '\(topic ?? "")'")
            }
            document.lastEventID = lastEventID
            body = document.json()
        } else {
            documents.sort { ($0.topic, $0.subscriber) < ($1.topic, $1.subscriber) }
            body = encodeJSON(SubscriptionsDocument(id: path, lastEventID: lastEventID, subscriptions: documents))
        }
        return Response(
            status: .ok,
            headers: [.contentType: "application/ld+json", .cacheControl: "must-revalidate"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body))
        )
    }
}
