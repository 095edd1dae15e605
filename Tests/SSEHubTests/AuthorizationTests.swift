//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import AsyncHTTPClient
import Foundation
import Hummingbird
import JWTKit
import NIOCore
import NIOHTTP1
import Testing

@testable import SSEHub

/// Signs a Mercure token with the test secret, or another key.
func token(
    publish: [String]? = nil,
    subscribe: [String]? = nil,
    payload: JSONValue? = nil,
    expires: Date? = nil,
    secret: String = HubHTTPTests.secret
) async throws -> String {
    let keys = JWTKeyCollection()
    await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
    return try await keys.sign(
        MercureToken(
            exp: expires.map(ExpirationClaim.init(value:)),
            mercure: .init(publish: publish, subscribe: subscribe, payload: payload)
        )
    )
}

@Suite("Hub authorization")
struct AuthorizationTests {
    let http = HubHTTPTests()

    func bearer(_ token: String) -> HTTPHeaders { ["Authorization": "Bearer \(token)"] }

    @Test func publishingNeedsAValidTokenThatAllowsEveryTopic() async throws {
        try await self.http.withHub { base in
            let form = "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&topic=https%3A%2F%2Fexample.com%2Falt&data=x"
            let (none, noneReason) = try await self.http.publish(base, form, headers: [:])
            #expect(none == .unauthorized)
            #expect(noneReason.contains("publishing needs a JWT"))

            let wrongKey = try await token(publish: ["*"], secret: "another secret entirely, and long enough too")
            let (forged, forgedReason) = try await self.http.publish(base, form, headers: self.bearer(wrongKey))
            #expect(forged == .unauthorized)
            #expect(forgedReason.contains("not valid") && !forgedReason.contains(HubHTTPTests.secret))

            let (malformed, _) = try await self.http.publish(base, form, headers: ["Authorization": "Basic abc"])
            #expect(malformed == .unauthorized)

            let valid = try await token(publish: ["*"])
            let twice = HTTPHeaders([("Authorization", "Bearer \(valid)"), ("Authorization", "Bearer \(valid)")])
            let (several, severalReason) = try await self.http.publish(base, form, headers: twice)
            #expect(several == .unauthorized, "one token, not a choice of them")
            #expect(severalReason.contains("one Authorization header"))

            let expired = try await token(publish: ["*"], expires: Date().addingTimeInterval(-60))
            let (late, lateReason) = try await self.http.publish(base, form, headers: self.bearer(expired))
            #expect(late == .unauthorized)
            #expect(lateReason.contains("expired"))

            let noClaim = try await token(subscribe: ["*"])
            let (nothing, nothingReason) = try await self.http.publish(base, form, headers: self.bearer(noClaim))
            #expect(nothing == .forbidden)
            #expect(nothingReason.contains("allows no topic"))

            let onlyBooks = try await token(publish: ["https://example.com/books/{id}"])
            let (partly, partlyReason) = try await self.http.publish(base, form, headers: self.bearer(onlyBooks))
            #expect(partly == .forbidden, "every topic, alternates included, must be allowed")
            #expect(partlyReason == "the token's mercure.publish claim does not allow topic 'https://example.com/alt'\n")

            let both = try await token(publish: ["https://example.com/books/{id}", "https://example.com/alt"])
            #expect(try await self.http.publish(base, form, headers: self.bearer(both)).0 == .ok)
        }
    }

    @Test func aTokenVerifiedOnceStillExpiresAndOnlyItsOwnClaimsAreRemembered() async throws {
        let verifier = try await TokenVerifier(JWTKey(algorithm: .hs256, key: HubHTTPTests.secret))
        let soon = try await token(publish: ["https://example.com/a"], expires: Date().addingTimeInterval(2))
        let other = try await token(publish: ["https://example.com/b"])
        for _ in 0..<2 {
            #expect(try await verifier.verify(soon, role: "publisher").publish?.map(\.description) == ["https://example.com/a"])
            #expect(try await verifier.verify(other, role: "publisher").publish?.map(\.description) == ["https://example.com/b"])
        }
        let forged = try await token(publish: ["*"], secret: "another secret entirely, and long enough too")
        await #expect(throws: AuthorizationFailure.self) { try await verifier.verify(forged, role: "publisher") }
        try await Task.sleep(for: .seconds(3))  // `exp` counts whole seconds
        let failure = await #expect(throws: AuthorizationFailure.self) { try await verifier.verify(soon, role: "publisher") }
        #expect(failure?.description == "the publisher token has expired")
        #expect(try await verifier.verify(other, role: "publisher").publish?.map(\.description) == ["https://example.com/b"])
    }

    @Test func privateUpdatesReachOnlySubscribersAuthorizedForOneOfTheirTopics() async throws {
        try await self.http.withHub { base in
            // The draft's example: the canonical topic is matched by the subscription, an
            // alternate by the token's mercure.subscribe selector.
            let canonical = "https://example.com/books/1"
            let alternate = "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1"
            let form = "topic=\(canonical.addingPercentEncoding)&topic=\(alternate.addingPercentEncoding)&private=on&data=secret&id=p1"
            #expect(try await self.http.publish(base, form).0 == .ok)
            #expect(try await self.http.publish(base, "topic=\(canonical.addingPercentEncoding)&data=public&id=p2").0 == .ok)

            let url = base + "?topic=" + "https://example.com/books/{id}".addingPercentEncoding + "&lastEventID=earliest"
            let granted = try await token(subscribe: ["https://example.com/users/foo/{?topic}"])
            let (_, authorized) = try await self.http.subscription(url, headers: self.bearer(granted)) { $0.contains("data: public") }
            #expect(authorized.contains("data: secret") && authorized.contains("data: public"))

            let (_, anonymous) = try await self.http.subscription(url) { $0.contains("data: public") }
            #expect(!anonymous.contains("secret"))

            let other = try await token(subscribe: ["https://example.com/users/bar/{?topic}"])
            let (_, notGranted) = try await self.http.subscription(url, headers: self.bearer(other)) { $0.contains("data: public") }
            #expect(!notGranted.contains("secret"))

            // The token in the query parameter, or in the cookie, works the same.
            let (_, viaQuery) = try await self.http.subscription(url + "&authorization=\(granted)") { $0.contains("data: public") }
            #expect(viaQuery.contains("data: secret"))
            let (_, viaCookie) = try await self.http.subscription(url, headers: ["Cookie": "mercureAuthorization=\(granted)"]) {
                $0.contains("data: public")
            }
            #expect(viaCookie.contains("data: secret"))
        }
    }

    @Test func subscribersNeedATokenUnlessAnonymousIsAllowed() async throws {
        try await self.http.withHub(anonymous: false) { base in
            let url = base + "?topic=t"
            let (_, refused) = try await self.http.subscription(url) { _ in true }
            #expect(refused.contains("subscribing needs a JWT"))
            let forged = try await token(subscribe: ["*"], secret: "not the hub's key, though long enough for HS256")
            let (_, invalid) = try await self.http.subscription(url, headers: self.bearer(forged)) { _ in true }
            #expect(invalid.contains("not valid"))
            // The header wins: a bad header is not rescued by a good query parameter.
            let good = try await token(subscribe: ["*"])
            let (_, headerWins) = try await self.http.subscription(url + "&authorization=\(good)", headers: self.bearer(forged)) { _ in true }
            #expect(headerWins.contains("not valid"))
            // Verified the first time; accepted as known the second.
            for _ in 0..<2 {
                let (headers, accepted) = try await self.http.subscription(url, headers: self.bearer(good)) { $0.hasPrefix(":\n") }
                #expect(headers.first(name: "Content-Type") == "text/event-stream")
                #expect(accepted.hasPrefix(":\n"))
            }
        }
    }

    @Test func theSubscriptionEndsWhenTheTokenExpires() async throws {
        try await self.http.withHub(anonymous: false) { base in
            // Soon, but not before the request is checked while the whole suite runs.
            let soon = try await token(subscribe: ["*"], expires: Date().addingTimeInterval(5))
            var request = HTTPClientRequest(url: base + "?topic=t")
            request.headers = self.bearer(soon)
            // The token verified, then accepted as known: both subscriptions end at its expiry.
            let first = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let second = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            #expect(first.status == .ok && second.status == .ok)
            let started = ContinuousClock.now
            // The bodies end (the connections close) at the expiry, within the time limit.
            _ = try await first.body.collect(upTo: 1 << 20)
            _ = try await second.body.collect(upTo: 1 << 20)
            let elapsed = ContinuousClock.now - started
            #expect(elapsed < .seconds(11), "closed at the expiry, not later: \(elapsed)")
            // Once expired, the known token is refused with the reason.
            let (_, late) = try await self.http.subscription(base + "?topic=t", headers: self.bearer(soon)) { _ in true }
            #expect(late.contains("expired"))
        }
    }

    /// A token that expires centuries from now (year 9999 is a usual "never"; `exp` may be as large
    /// as a JSON number) opens a subscription that stays open: its expiry is past what a timer
    /// can count in nanoseconds.
    @Test(arguments: [253_402_300_799, 1e300])
    func aTokenThatExpiresInCenturiesSubscribes(exp: Double) async throws {
        try await self.http.withHub(anonymous: false) { base in
            let never = try await token(subscribe: ["*"], expires: Date(timeIntervalSince1970: exp))
            for _ in 1...2 {  // verified, then accepted as known
                let (headers, text) = try await self.http.subscription(base + "?topic=t", headers: self.bearer(never)) { $0.contains(":\n") }
                #expect(headers["Content-Type"] == ["text/event-stream"] && text.contains(":\n"), "\(text)")
            }
        }
    }

    @Test(arguments: [
        (JWTKey(algorithm: .hs256, key: "short"), "at least 32 bytes"),
        (JWTKey(algorithm: .hs512, key: String(repeating: "k", count: 63)), "at least 64 bytes"),
        (JWTKey(algorithm: .rs256, key: "not a PEM"), "not a valid PEM public key"),
        (JWTKey(algorithm: .es256, key: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"), "not a valid PEM"),
    ])
    func unusableKeysAreRefusedWithAReason(_ key: JWTKey, _ reason: String) async throws {
        let hub = try await Hub(store: InMemoryEventStore())
        var configuration = Hub.HTTPConfiguration()
        configuration.publisherKey = key
        await #expect {
            try await hub.addRoutes(to: Router(), configuration: configuration)
        } throws: { error in
            (error as? JWTKeyError)?.description.contains(reason) == true
        }
    }

    @Test func cookiePublishingOnlyFromAllowedOrigins() async throws {
        try await self.http.withHub(publishOrigins: ["https://app.example.com"]) { base in
            let publisher = try await token(publish: ["*"])
            let cookie = "mercureAuthorization=\(publisher)"
            let (foreign, reason) = try await self.http.publish(base, "topic=t&data=x", headers: ["Cookie": cookie, "Origin": "https://evil.example"])
            #expect(foreign == .forbidden)
            #expect(reason.contains("evil.example"))
            let (missing, _) = try await self.http.publish(base, "topic=t&data=x", headers: ["Cookie": cookie])
            #expect(missing == .forbidden)
            #expect(try await self.http.publish(base, "topic=t&data=x", headers: ["Cookie": cookie, "Origin": "https://app.example.com"]).0 == .ok)
            let referer = ["Cookie": cookie, "Referer": "https://app.example.com/admin/page?x=1"]
            #expect(try await self.http.publish(base, "topic=t&data=y", headers: HTTPHeaders(referer.map { ($0.key, $0.value) })).0 == .ok)
        }
    }
}
