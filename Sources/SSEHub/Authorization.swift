//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

public import Foundation
import JWTKit
import NIOConcurrencyHelpers

/// A key that verifies Mercure JWTs, as the hub's configuration names it.
public struct JWTKey: Sendable, Hashable {
    /// The signature algorithms Mercure's official image accepts.
    public enum Algorithm: String, Sendable, CaseIterable {
        case hs256 = "HS256", hs384 = "HS384", hs512 = "HS512"
        case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512"
        case es256 = "ES256", es384 = "ES384", es512 = "ES512"
        case eddsa = "EdDSA"
    }

    /// The algorithm.
    public let algorithm: Algorithm
    /// The shared secret (HS*) or the public key in PEM form (RS*, ES*, EdDSA).
    public let key: String

    /// A key; `algorithm` as in `MERCURE_PUBLISHER_JWT_ALG` (`HS256` and so on).
    public init(algorithm: Algorithm, key: String) {
        self.algorithm = algorithm
        self.key = key
    }
}

/// The `mercure` claim of a token, and its expiry.
public struct MercureClaims: Sendable {
    /// `mercure.publish`: the selectors of the topics the bearer may publish to.
    public var publish: [TopicSelector]?
    /// `mercure.subscribe`: the selectors of the private updates the bearer may receive.
    public var subscribe: [TopicSelector]?
    /// `exp`: when the token, and a subscription made with it, ends.
    public var expiresAt: Date?
    /// `mercure.payload`: any JSON, shown with the bearer's subscriptions in the subscriptions API
    /// and in subscription events.
    var payload: JSONValue?

    /// Claims that allow publishing to `publish` and receiving the private updates of `subscribe`.
    public init(publish: [TopicSelector]? = nil, subscribe: [TopicSelector]? = nil, expiresAt: Date? = nil) {
        self.publish = publish
        self.subscribe = subscribe
        self.expiresAt = expiresAt
    }
}

/// A JSON value kept as it was given (`mercure.payload`).
enum JSONValue: Codable, Sendable, Hashable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// Why a token was not accepted (a 401): said so that an operator can act on it, never with secrets.
public struct AuthorizationFailure: Error, Sendable, CustomStringConvertible {
    public let description: String

    static func unauthorized(_ reason: String) -> Self { Self(description: reason) }
}

/// A key that cannot be used, said so that the operator can fix the configuration.
public struct JWTKeyError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Verifies tokens with one key, and remembers the claims of the tokens it accepted: a publisher
/// usually sends the same token with every update, and decoding its claims (a long list of topics,
/// say) can cost more than the rest of the publish.
final class TokenVerifier: Sendable {
    let key: JWTKey
    private let keys: JWTKeyCollection
    /// The claims of tokens whose signature verified, by token; forgotten all at once when full.
    /// Only the key's holder can make a token that gets in.
    private let accepted = NIOLockedValueBox<[String: MercureClaims]>([:])
    static let acceptedLimit = 1_000

    init(_ key: JWTKey) async throws(JWTKeyError) {
        self.key = key
        // An HMAC key shorter than the hash is weak, and JWTKit refuses it with a crash: refuse
        // it here with a reason instead.
        let minimum = [JWTKey.Algorithm.hs256: 32, .hs384: 48, .hs512: 64][key.algorithm]
        if let minimum, key.key.utf8.count < minimum {
            throw JWTKeyError(
                description: "a \(key.algorithm.rawValue) key must be at least \(minimum) bytes long (this one has \(key.key.utf8.count))"
            )
        }
        do {
            self.keys = try await Self.collection(for: key)
        } catch {
            throw JWTKeyError(description: "the \(key.algorithm.rawValue) key is not a valid PEM public key for that algorithm")
        }
    }

    private static func collection(for key: JWTKey) async throws -> JWTKeyCollection {
        let keys = JWTKeyCollection()
        switch key.algorithm {
        case .hs256: await keys.add(hmac: HMACKey(from: key.key), digestAlgorithm: .sha256)
        case .hs384: await keys.add(hmac: HMACKey(from: key.key), digestAlgorithm: .sha384)
        case .hs512: await keys.add(hmac: HMACKey(from: key.key), digestAlgorithm: .sha512)
        case .rs256: await keys.add(rsa: try Insecure.RSA.PublicKey(pem: key.key), digestAlgorithm: .sha256)
        case .rs384: await keys.add(rsa: try Insecure.RSA.PublicKey(pem: key.key), digestAlgorithm: .sha384)
        case .rs512: await keys.add(rsa: try Insecure.RSA.PublicKey(pem: key.key), digestAlgorithm: .sha512)
        case .es256: await keys.add(ecdsa: try ES256PublicKey(pem: key.key))
        case .es384: await keys.add(ecdsa: try ES384PublicKey(pem: key.key))
        case .es512: await keys.add(ecdsa: try ES512PublicKey(pem: key.key))
        case .eddsa: await keys.add(eddsa: try EdDSA.PublicKey(pem: key.key))
        }
        return keys
    }

    /// The claims of `token`, if its signature verifies and it has not expired.
    func verify(_ token: String, role: String) async throws(AuthorizationFailure) -> MercureClaims {
        if let claims = try self.acceptedClaims(of: token, role: role) { return claims }
        let payload: MercureToken
        do {
            payload = try await self.keys.verify(token, as: MercureToken.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw .unauthorized("the \(role) token has expired")
        } catch {
            throw .unauthorized(
                "the \(role) token is not valid: it must be a JWT signed with the \(role) key (\(self.key.algorithm.rawValue))"
            )
        }
        var claims = MercureClaims(
            publish: payload.mercure?.publish?.map(TopicSelector.init),
            subscribe: payload.mercure?.subscribe?.map(TopicSelector.init),
            expiresAt: payload.exp?.value
        )
        claims.payload = payload.mercure?.payload
        self.accepted.withLockedValue { accepted in
            if accepted.count >= Self.acceptedLimit { accepted.removeAll(keepingCapacity: true) }
            accepted[token] = claims
        }
        return claims
    }

    /// The claims of `token` if it was accepted before and has not expired since; `nil` when it
    /// must be verified.
    func acceptedClaims(of token: String, role: String) throws(AuthorizationFailure) -> MercureClaims? {
        guard let claims = self.accepted.withLockedValue({ $0[token] }) else { return nil }
        if let expiresAt = claims.expiresAt, expiresAt < Date() { throw .unauthorized("the \(role) token has expired") }
        return claims
    }

    /// Signs claims with an HMAC key: for development mode's ready-made tokens.
    static func sign(publish: [String]?, subscribe: [String]?, hmacKey: String) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: hmacKey), digestAlgorithm: .sha256)
        return try await keys.sign(MercureToken(exp: nil, mercure: .init(publish: publish, subscribe: subscribe)))
    }
}

/// A Mercure JWT's payload.
struct MercureToken: JWTPayload {
    struct Mercure: Codable, Sendable {
        var publish: [String]?
        var subscribe: [String]?
        var payload: JSONValue?
    }

    var exp: ExpirationClaim?
    var mercure: Mercure?

    func verify(using algorithm: some JWTAlgorithm) throws {
        try self.exp?.verifyNotExpired()
    }
}

extension Hub {
    /// A token signed with an HS256 `key` (no expiry) with the given `mercure` claims: what a
    /// hub in development mode prints for its user.
    public static func developmentToken(publish: [String]?, subscribe: [String]?, key: String) async throws -> String {
        try await TokenVerifier.sign(publish: publish, subscribe: subscribe, hmacKey: key)
    }
}
