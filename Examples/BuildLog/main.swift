// Build log: a long job whose `log` lines and `progress` stream to a page with a progress bar.
// Line N is a pure function of N, so a page that reconnects resumes at the right line with
// Last-Event-ID, even after the server restarts; after the last line a `done` event ends it and
// a reconnection gets 204. `swift run BuildLog`, open http://127.0.0.1:8080.
import Foundation
import Hummingbird
import HummingbirdSSE

let steps = 60
let tick = Duration.milliseconds(ProcessInfo.processInfo.environment["TICK_MS"].flatMap(Int.init) ?? 250)

/// The job's events after line `start`: for each step a `log` line (with its id) and `progress`.
struct Job: AsyncSequence, Sendable {
    let start: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        var step: Int
        var pending: [ServerSentEvent] = []

        mutating func next() async throws -> ServerSentEvent? {
            if !self.pending.isEmpty { return self.pending.removeFirst() }
            guard self.step <= steps else { return nil }
            defer { self.step += 1 }
            try await Task.sleep(for: tick)
            if self.step == steps {
                return try ServerSentEvent(type: "done", data: "build succeeded", id: "done", retry: .milliseconds(500))
            }
            let line = "[\(self.step + 1)/\(steps)] compiling Module\(self.step + 1).swift"
            self.pending = [try ServerSentEvent(type: "progress", data: String((self.step + 1) * 100 / steps))]
            return try ServerSentEvent(type: "log", data: line, id: String(self.step + 1), retry: .milliseconds(500))
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(step: self.start) }
}

let router = Router()
router.add(middleware: FileMiddleware("Examples/BuildLog/Public", searchForIndexHtml: true))
router.get("build") { request, context -> Response in
    if request.lastEventID == "done" { return Response(status: .noContent) }
    let start = request.lastEventID.flatMap(Int.init) ?? 0
    FileHandle.standardOutput.write(Data("build: streaming from line \(start + 1)\n".utf8))
    return try EventStream(Job(start: start)).response(from: request, context: context)
}
let port = ProcessInfo.processInfo.environment["PORT"].flatMap(Int.init) ?? 8080
try await Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port))).runService()
