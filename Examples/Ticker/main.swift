// Ticker: an `update` event every second, and a variant with named, numbered price events that
// a reconnecting page resumes without gaps. `swift run Ticker`, then open http://127.0.0.1:8080.
import AsyncAlgorithms
import Foundation
import Hummingbird
import HummingbirdSSE

let router = Router()
router.add(middleware: FileMiddleware("Examples/Ticker/Public", searchForIndexHtml: true))
router.get("events") { _, _ in
    EventStream(AsyncTimerSequence.repeating(every: .seconds(1)).map { _ in
        try ServerSentEvent(type: "update", data: Date.now.formatted(.iso8601))
    })
}
router.get("prices") { request, _ in EventStream(Prices.events(after: request.lastEventID)) }
let port = ProcessInfo.processInfo.environment["PORT"].flatMap(Int.init) ?? 8080
try await Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port))).runService()
