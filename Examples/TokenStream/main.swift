// Token stream: the current time every 2 s, ten times, then a `done` event after which the page
// closes its EventSource; a reconnection after `done` gets 204, which stops any EventSource for
// good. The shape of AI chat token streaming. `swift run TokenStream`, open http://127.0.0.1:8080.
import Foundation
import Hummingbird
import HummingbirdSSE

let tick = Duration.milliseconds(ProcessInfo.processInfo.environment["TICK_MS"].flatMap(Int.init) ?? 2000)

/// Tokens 1 to 10 (after `lastEventID`), then `done`.
struct Tokens: AsyncSequence, Sendable {
    let start: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        var next: Int

        mutating func next() async throws -> ServerSentEvent? {
            guard self.next <= 11 else { return nil }
            defer { self.next += 1 }
            try await Task.sleep(for: tick)
            if self.next == 11 { return try ServerSentEvent(type: "done", data: "that is all", id: "done") }
            return try ServerSentEvent(data: Date.now.formatted(.iso8601), id: String(self.next))
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(next: self.start + 1) }
}

let router = Router()
router.add(middleware: FileMiddleware("Examples/TokenStream/Public", searchForIndexHtml: true))
router.get("tokens") { request, context -> Response in
    if request.lastEventID == "done" {
        return Response(status: .noContent)  // finished: an EventSource never comes back after 204
    }
    return try EventStream(Tokens(start: request.lastEventID.flatMap(Int.init) ?? 0)).response(from: request, context: context)
}
let port = ProcessInfo.processInfo.environment["PORT"].flatMap(Int.init) ?? 8080
try await Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port))).runService()
