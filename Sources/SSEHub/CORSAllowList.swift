//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import HTTPTypes
public import Hummingbird


/// CORS for the hub: an origin on the allow-list gets its own origin back with
/// `Access-Control-Allow-Credentials: true` (so that browsers send the `mercureAuthorization`
/// cookie); any other origin gets nothing, so the browser refuses. Never `*` with credentials.
public struct CORSAllowList<Context: RequestContext>: RouterMiddleware {
    /// The allowed origins, as `Origin` headers say them (`https://app.example.com`).
    public let origins: Set<String>

    /// A middleware that allows `origins`.
    public init(origins: some Sequence<String>) {
        self.origins = Set(origins)
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin], self.origins.contains(origin) else {
            return try await next(request, context)
        }
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            // A preflight (for a publish with an Authorization header, say): answer it here.
            var response = Response(status: .noContent)
            self.allow(origin, in: &response.headers)
            response.headers[.accessControlAllowMethods] = "GET, POST, OPTIONS"
            response.headers[.accessControlAllowHeaders] = "Authorization, Content-Type, Last-Event-ID, Cache-Control"
            response.headers[.accessControlMaxAge] = "600"
            return response
        }
        do {
            var response = try await next(request, context)
            self.allow(origin, in: &response.headers)
            return response
        } catch let error as any HTTPResponseError {
            // Errors say why too, and the page must be allowed to read the reason.
            var response = try error.response(from: request, context: context)
            self.allow(origin, in: &response.headers)
            return response
        }
    }

    private func allow(_ origin: String, in headers: inout HTTPFields) {
        headers[.accessControlAllowOrigin] = origin
        headers[.accessControlAllowCredentials] = "true"
        headers[.accessControlExposeHeaders] = "Last-Event-ID"
        headers.append(HTTPField(name: .vary, value: "Origin"))
    }
}
