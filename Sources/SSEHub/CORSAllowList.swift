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
            response.headers.allowCORS(from: origin)
            response.headers[.accessControlAllowMethods] = "GET, POST, OPTIONS"
            response.headers[.accessControlAllowHeaders] = "Authorization, Content-Type, Last-Event-ID, Cache-Control"
            response.headers[.accessControlMaxAge] = "600"
            return response
        }
        do {
            var response = try await next(request, context)
            response.headers.allowCORS(from: origin)
            return response
        } catch let error as any HTTPResponseError {
            // Errors say why too, and the page must be allowed to read the reason.
            var response = try error.response(from: request, context: context)
            response.headers.allowCORS(from: origin)
            return response
        }
    }
}

extension HTTPFields {
    /// Adds the headers that let a page from `origin` (an allowed one) read the response, with
    /// credentials.
    mutating func allowCORS(from origin: String) {
        self[.accessControlAllowOrigin] = origin
        self[.accessControlAllowCredentials] = "true"
        self[.accessControlExposeHeaders] = "Last-Event-ID"
        self.append(HTTPField(name: .vary, value: "Origin"))
    }
}
