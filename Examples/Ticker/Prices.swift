import AsyncAlgorithms
import Foundation
import HummingbirdSSE

/// The price variant: event N is a pure function of N, so a server that restarts can resume any
/// client exactly where its `Last-Event-ID` says, with no store at all.
enum Prices {
    static func events(after lastEventID: String?) -> some AsyncSequence<ServerSentEvent, any Error> & Sendable {
        let start = lastEventID.flatMap(Int.init) ?? 0
        let note = lastEventID == nil ? "new client" : "resumed with Last-Event-ID"
        FileHandle.standardOutput.write(Data("prices: stream from id \(start) (\(note))\n".utf8))
        let interval = ProcessInfo.processInfo.environment["TICK_MS"].flatMap(Int.init) ?? 1000
        return AsyncTimerSequence.repeating(every: .milliseconds(interval)).reductions(start) { n, _ in n + 1 }
            .map { n in try self.event(n) }
    }

    static func event(_ n: Int) throws -> ServerSentEvent {
        // Every fifth event is a trade alert; the others are price updates.
        let price = 100 + Double((n * 37) % 50) / 4
        if n % 5 == 0 {
            return try ServerSentEvent(
                type: "trade-alert",
                data: #"{"n": \#(n), "symbol": "HRLD", "message": "large trade at \#(price)"}"#,
                id: String(n),
                retry: .milliseconds(500)
            )
        }
        return try ServerSentEvent(type: "price-update", data: #"{"n": \#(n), "symbol": "HRLD", "price": \#(price)}"#, id: String(n))
    }
}
