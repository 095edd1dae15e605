// Notifications, on Vapor: a `ping` event every 2 s with a JSON timestamp, served cross-origin
// with credentials to the page's origin only, and cleanup logged when a client disconnects.
// The page is served on PAGE_PORT (8081) and reads the stream from PORT (8080): another origin
// of the same site, so the session cookie goes along. `swift run Notifications`, then open
// http://127.0.0.1:8080/login (the session) and http://127.0.0.1:8081 (the page).
import Foundation
import Vapor
import VaporSSE

let port = Environment.get("PORT").flatMap(Int.init) ?? 8080
let tick = Duration.milliseconds(Environment.get("TICK_MS").flatMap(Int.init) ?? 2000)
let pagePort = Environment.get("PAGE_PORT").flatMap(Int.init) ?? 8081
let pageOrigin = "http://127.0.0.1:\(pagePort)"

/// The page's own origin: a second server that serves only the page and where the stream is.
func startPageServer() async throws -> Application {
    let page = try await Application.make(Environment(name: "development", arguments: ["page"]))
    page.middleware.use(FileMiddleware(publicDirectory: "Examples/Notifications/Public/", defaultFile: "index.html"))
    page.get("config.js") { _ in "const streamURL = \"http://127.0.0.1:\(port)/notifications\";\n" }
    try await page.server.start(address: .hostname("127.0.0.1", port: pagePort))
    return page
}
let page = try await startPageServer()

let app = try await Application.make(Environment(name: "development", arguments: ["notifications"]))
app.http.server.configuration.hostname = "127.0.0.1"
app.http.server.configuration.port = port
// Only the page's origin may read the stream, with credentials: never `*` with credentials.
let cors = CORSMiddleware(
    configuration: .init(
        allowedOrigin: .any([pageOrigin]),
        allowedMethods: [.GET],
        allowedHeaders: [.accept, .cacheControl, .init("Last-Event-ID")],
        allowCredentials: true
    )
)
app.middleware.use(cors, at: .beginning)

/// Sets the session cookie that the cross-origin stream is then sent with.
app.get("login") { request -> Response in
    let response = Response(status: .ok, body: .init(string: "logged in"))
    response.cookies["session"] = HTTPCookies.Value(
        string: request.query[String.self, at: "user"] ?? "ada",
        isHTTPOnly: true,
        sameSite: .lax
    )
    return response
}

app.get("notifications") { request -> EventStream<AsyncStream<ServerSentEvent>> in
    let user = request.cookies["session"]?.string ?? "anonymous"
    let client = UUID().uuidString.prefix(8)
    request.logger.info("client \(client) connected as \(user)")
    let logger = request.logger
    let (events, continuation) = AsyncStream.makeStream(of: ServerSentEvent.self)
    continuation.yield(ServerSentEvent(data: "welcome, \(user)"))
    let pinger = Task {
        while (try? await Task.sleep(for: tick)) != nil {
            let now = Date.now.timeIntervalSince1970
            if let ping = try? ServerSentEvent(type: "ping", data: #"{"time": \#(now), "user": "\#(user)"}"#) {
                continuation.yield(ping)
            }
        }
    }
    continuation.onTermination = { _ in
        pinger.cancel()
        logger.info("client \(client) disconnected: cleaned up")
    }
    return EventStream(events)
}

try await app.execute()
try await app.asyncShutdown()
try await page.asyncShutdown()
