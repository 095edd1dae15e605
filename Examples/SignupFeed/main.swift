// Signup feed: a static index.html, `data: hello #N` every second and an `event: signup` every
// 3 s; the page reacts to open, message, signup and error. `swift run SignupFeed`.
import Foundation
import Hummingbird
import HummingbirdSSE

let tick = Duration.milliseconds(ProcessInfo.processInfo.environment["TICK_MS"].flatMap(Int.init) ?? 1000)

func feed() -> AsyncStream<ServerSentEvent> {
    AsyncStream { continuation in
        let producer = Task {
            var n = 0
            while (try? await Task.sleep(for: tick)) != nil {
                n += 1
                continuation.yield(ServerSentEvent(data: "hello #\(n)"))
                if n % 3 == 0, let signup = try? ServerSentEvent(type: "signup", data: #"{"user": "user\#(n / 3)"}"#) {
                    continuation.yield(signup)
                }
            }
        }
        continuation.onTermination = { _ in producer.cancel() }  // the client left: stop producing
    }
}

let router = Router()
router.add(middleware: FileMiddleware("Examples/SignupFeed/Public", searchForIndexHtml: true))
router.get("feed") { _, _ in EventStream(feed()) }
let port = ProcessInfo.processInfo.environment["PORT"].flatMap(Int.init) ?? 8080
try await Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port))).runService()
