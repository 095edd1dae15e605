//===----------------------------------------------------------------------===//
//
// This source file is part of the Herald open source project
// Licensed under Apache License v2.0; see LICENSE for details.
// SPDX-License-Identifier: Apache-2.0
//
//===----------------------------------------------------------------------===//

import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The first handler of a connection: it reads publish and subscribe requests of one plain shape
/// from the bytes themselves, with no HTTP decoder or encoder in the pipeline. It stores the
/// updates of publishes and answers them, one after another (the decoder and encoder were a tenth
/// of the server's CPU a publish on 1 000 topics), and gives a subscribe request to the door as
/// NIO's decoder would, for the door to open the subscription (adding the decoder and encoder to
/// remove them again was about a fifth of the server's CPU a subscriber's connection); see
/// docs/PERFORMANCE.md. At the first bytes of any other request it adds NIO's decoder and encoder
/// and leaves the pipeline, and the decoder and the door read the connection from then on, from
/// those bytes.
///
/// The shape, which any HTTP/1.1 parser frames the same way:
///
/// - exactly `POST /.well-known/mercure HTTP/1.1` as the request line; or `GET`, the hub's URL
///   with a query of visible ASCII characters or none, and `HTTP/1.1`;
/// - header lines of a token, a colon and a value of visible characters, spaces and tabs, each
///   ended by CR LF (no folded lines, no bare LF or CR);
/// - for a publish, exactly one `Content-Length` of digits only (no tab after them), within the
///   configuration's publish size; for a subscription, none or one of `0`;
/// - exactly one `Host`;
/// - no `Transfer-Encoding`, `Expect` or `Upgrade`, no `Origin` on a publish (a browser's: CORS is
///   the route's), and `Connection` only as `keep-alive`;
/// - within the limits of NIO's decoder on the head's fields (their number, their size).
///
/// A publish whose checks fail goes on to the decoder too, with the door told to hand it to the
/// route, which answers with the reason; a subscription that fails its checks the door hands on
/// itself, and the reader then passes what came after it to the decoder.
final class RequestReader: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A publish request's head, checked for the shape above: where its fields of note are.
    struct Head {
        /// The length of the head, with its last empty line.
        var length = 0
        var contentLength = 0
        /// The value of the `Authorization` field if there is one, and the number of them.
        var authorization: Range<Int>?
        var authorizations = 0
        var contentType: Range<Int>?
        var contentTypes = 0

        /// A subscribe request's head, as NIO's decoder would give it; `nil` for a publish.
        var subscribe: HTTPRequestHead?

        static let requestLine = Array("POST /.well-known/mercure HTTP/1.1\r\n".utf8)
        /// How a subscribe request's line begins: its target, up to its query if it has one.
        static let subscribeLine = Array("GET /.well-known/mercure".utf8)
        static let version = Array(" HTTP/1.1\r\n".utf8)

        /// The head of `bytes`, which end with the head's empty line, if it has the shape of
        /// publish or subscribe requests the reader takes, within `limits` (those of NIO's
        /// decoder); else `nil`.
        static func parse(_ bytes: UnsafeRawBufferPointer, maximumBody: Int, limits: NIOHTTPDecoderLimitConfiguration) -> Head? {
            var head = Head()
            var position: Int
            if bytes.starts(with: Self.requestLine) {
                position = Self.requestLine.count
            } else if bytes.starts(with: Self.subscribeLine) {
                // The target: the hub's URL, and a query of visible characters (no fragment).
                position = Self.subscribeLine.count
                guard position < bytes.count, bytes[position] == UInt8(ascii: " ") || bytes[position] == UInt8(ascii: "?") else {
                    return nil
                }
                while position < bytes.count, bytes[position] > 0x20, bytes[position] < 0x7F, bytes[position] != UInt8(ascii: "#") {
                    position += 1
                }
                let target = UnsafeRawBufferPointer(rebasing: bytes[4..<position])
                guard UnsafeRawBufferPointer(rebasing: bytes[position...]).starts(with: Self.version) else { return nil }
                position += Self.version.count
                head.subscribe = HTTPRequestHead(version: .http1_1, method: .GET, uri: String(decoding: target, as: UTF8.self))
            } else {
                return nil
            }
            var contentLengths = 0
            var hosts = 0
            var fields = 0
            while true {
                guard position + 1 < bytes.count else { return nil }
                if bytes[position] == UInt8(ascii: "\r") {  // the empty line
                    guard bytes[position + 1] == UInt8(ascii: "\n"), position + 2 == bytes.count else { return nil }
                    head.length = position + 2
                    break
                }
                let nameStart = position
                while position < bytes.count, Self.isTokenCharacter(bytes[position]) { position += 1 }
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":"), position > nameStart else { return nil }
                let name = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<position])
                position += 1
                while position < bytes.count, bytes[position] == UInt8(ascii: " ") || bytes[position] == UInt8(ascii: "\t") {
                    position += 1
                }
                let valueStart = position
                var valueEnd = position
                while position < bytes.count, bytes[position] != UInt8(ascii: "\r") {
                    let byte = bytes[position]
                    position += 1
                    if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { continue }
                    guard byte > 0x20, byte != 0x7F else { return nil }  // a control character (bytes past ASCII are allowed)
                    valueEnd = position
                }
                guard position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "\n") else { return nil }
                position += 2
                let value = valueStart..<valueEnd
                fields += 1
                guard fields <= limits.maxHeaderFieldCount, name.count + value.count <= limits.maxHeaderFieldSize else { return nil }
                head.subscribe?.headers.add(
                    name: String(decoding: name, as: UTF8.self),
                    value: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[value]), as: UTF8.self)
                )
                if Self.equal(name, "content-length") {
                    contentLengths += 1
                    // (NIO's decoder refuses a tab after the digits, so the reader leaves it the request.)
                    guard value.count >= 1, value.count <= 9, !bytes[valueEnd..<(position - 2)].contains(UInt8(ascii: "\t")) else {
                        return nil
                    }
                    var length = 0
                    for byte in bytes[value] {
                        guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                        length = length * 10 + Int(byte - UInt8(ascii: "0"))
                    }
                    head.contentLength = length
                } else if Self.equal(name, "host") {
                    hosts += 1
                } else if Self.equal(name, "authorization") {
                    head.authorization = value
                    head.authorizations += 1
                } else if Self.equal(name, "content-type") {
                    head.contentType = value
                    head.contentTypes += 1
                } else if Self.equal(name, "connection") {
                    guard Self.equal(UnsafeRawBufferPointer(rebasing: bytes[value]), "keep-alive") else { return nil }
                } else if Self.equal(name, "transfer-encoding") || Self.equal(name, "expect") || Self.equal(name, "upgrade")
                    || (head.subscribe == nil && Self.equal(name, "origin"))
                {
                    return nil
                }
            }
            // One `Host` (else the door refuses the request); a subscribe request has no body, a
            // publish exactly one length.
            guard hosts == 1, head.subscribe == nil ? contentLengths == 1 : contentLengths <= 1 && head.contentLength == 0,
                head.contentLength <= maximumBody
            else {
                return nil
            }
            return head
        }

        /// Whether `bytes` are `lowercase`, ASCII letters in any case.
        private static func equal(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
            guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
            let expected = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
            for index in 0..<bytes.count {
                let byte = bytes[index]
                let lowered = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                guard lowered == expected[index] else { return false }
            }
            return true
        }

        /// Whether `byte` may be in a field's name (RFC 9110's `tchar`).
        private static func isTokenCharacter(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                true
            default:
                "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
        }
    }

    private enum State {
        /// Reading a request (in `buffered`).
        case reading
        /// A publish being checked and stored: the request's bytes (for the route, if it fails).
        case publishing(ByteBuffer)
        /// A subscribe request given to the door, which checks it: the request's bytes (for the
        /// route, if it fails). When the door opens the subscription, it removes the reader, and
        /// what the reader read since is dropped (an event stream's client has nothing more to say).
        case subscribing(ByteBuffer)
        /// The connection closed, or the reader left.
        case done
    }

    private var state = State.reading
    /// Bytes read and not taken yet: the request being read, and any after it.
    private var buffered = ByteBuffer()
    /// How far `buffered` was searched for the end of a head, so that a head is searched once.
    private var searched = 0
    /// The head of the request being read, once it has come whole.
    private var head: Head?
    /// Whether a read was held back while a publish was stored or a subscription checked (the next
    /// request had begun).
    private(set) var readHeld = false
    /// Whether the server stops: the publish under way is the last answered, then the connection
    /// closes.
    private var quiescing = false
    /// Whether the client closed its side: the publishes it sent whole are answered, then the
    /// connection closes.
    private var inputClosed = false
    private let door: HubDoor
    /// NIO's decoder's limits on a head, which the reader keeps too.
    private let limits: NIOHTTPDecoderLimitConfiguration

    init(door: HubDoor, limits: NIOHTTPDecoderLimitConfiguration) {
        self.door = door
        self.limits = limits
    }

    /// Whether part of a request has come and not the whole.
    var holdsPartialRequest: Bool {
        if case .reading = self.state { return self.buffered.readableBytes > 0 }
        return false
    }

    /// Whether a publish is being checked and stored.
    var isPublishing: Bool {
        if case .publishing = self.state { return true }
        return false
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        switch self.state {
        case .reading, .publishing, .subscribing:
            if self.buffered.readableBytes == 0 {
                self.buffered = bytes
            } else {
                self.buffered.writeBuffer(&bytes)
            }
            if case .reading = self.state { self.readRequests(context) }
        case .done:
            context.fireChannelRead(data)
        }
    }

    /// Takes the requests read whole, one at a time, until one is not.
    private func readRequests(_ context: ChannelHandlerContext) {
        while case .reading = self.state, self.buffered.readableBytes > 0 {
            guard let authorizer = self.door.hub.mercureRoute.withLockedValue({ $0 }) else { return self.leave(context) }
            if self.head == nil {
                switch self.findHead(maximumBody: authorizer.configuration.maximumPublishSize) {
                case .some(.some(let head)): self.head = head
                case .some(.none): return self.leave(context)  // not a request the reader takes
                case .none: return  // not whole yet
                }
            }
            guard let head = self.head, self.buffered.readableBytes >= head.length + head.contentLength else { return }
            let request = self.buffered.readSlice(length: head.length + head.contentLength)!
            if self.buffered.readableBytes == 0 { self.buffered = ByteBuffer() }  // (no read kept while idle)
            self.head = nil
            self.searched = 0
            if let subscribe = head.subscribe {
                // To the door, as NIO's decoder would give it: the door opens the subscription.
                self.state = .subscribing(request)
                context.fireChannelRead(NIOAny(HTTPServerRequestPart.head(subscribe)))
                context.fireChannelRead(NIOAny(HTTPServerRequestPart.end(nil)))
                return
            }
            self.publish(request, head: head, authorizer: authorizer, context: context)
        }
    }

    /// The head of the request at the start of `buffered`: `nil` while it has not come whole,
    /// `.some(nil)` when it is not one the reader takes.
    private func findHead(maximumBody: Int) -> Head?? {
        self.buffered.withUnsafeReadableBytes { bytes -> Head?? in
            let line = bytes.first == UInt8(ascii: "G") ? Head.subscribeLine : Head.requestLine
            guard bytes.prefix(line.count).elementsEqual(line.prefix(bytes.count)) else { return .some(nil) }
            let (cr, lf) = (UInt8(ascii: "\r"), UInt8(ascii: "\n"))
            var index = max(self.searched - 3, line.count - 2)
            while index + 4 <= bytes.count {
                if bytes[index + 3] == lf, bytes[index + 2] == cr, bytes[index + 1] == lf, bytes[index] == cr {
                    let head = UnsafeRawBufferPointer(rebasing: bytes[..<(index + 4)])
                    return .some(Head.parse(head, maximumBody: maximumBody, limits: self.limits))
                }
                index += 1
            }
            self.searched = bytes.count
            // A head this large goes to the decoder, which answers it by its limits.
            return bytes.count > self.limits.maxHeaderListSize ? .some(nil) : .none
        }
    }

    /// Checks and stores the update of publish `request`, read whole, and answers it.
    private func publish(_ request: ByteBuffer, head: Head, authorizer: Authorizer, context: ChannelHandlerContext) {
        self.state = .publishing(request)
        self.door.answersAtOnce(context)
        let (authorization, contentType, form) = request.withUnsafeReadableBytes { bytes in
            (
                head.authorizations == 1 ? head.authorization.map { String(decoding: bytes[$0], as: UTF8.self) } : nil,
                head.contentTypes == 1 ? head.contentType.map { String(decoding: bytes[$0], as: UTF8.self) } : nil,
                request.getSlice(at: request.readerIndex + head.length, length: head.contentLength)!
            )
        }
        let reader = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.door.hub.publish(
            form: form,
            authorization: authorization,
            contentType: contentType,
            authorizer: authorizer,
            request: { try Self.request(request, head: head) }
        ) { id in
            reader.eventLoop.execute {
                let (reader, context) = reader.value
                reader.published(id, context: context)
            }
        }
    }

    /// Answers the publish under way with its update's ID, or hands it on (see the type's note).
    private func published(_ id: String?, context: ChannelHandlerContext) {
        guard case .publishing(let request) = self.state else { return }  // the connection closed meanwhile
        guard let id else {
            var bytes = request
            bytes.writeBuffer(&self.buffered)
            self.buffered = bytes
            self.door.handsOnNextRequest = true
            return self.leave(context)
        }
        self.state = .reading
        var answer = context.channel.allocator.buffer(capacity: 192)
        HubDoor.writeTextAnswer("200 OK", body: id, closes: self.quiescing, serverName: self.door.serverName, into: &answer)
        guard !self.quiescing, !self.inputClosed else {
            let written = context.writeAndFlush(Self.wrapOutboundOut(answer)).assumeIsolated()
            if !self.quiescing { self.readRequests(context) }  // the client's last publishes
            if case .reading = self.state {  // (else a publish under way, or the decoder's now)
                self.state = .done
                written.whenComplete { _ in context.close(promise: nil) }
            }
            return
        }
        context.writeAndFlush(Self.wrapOutboundOut(answer), promise: nil)
        self.door.requestAnswered(context.eventLoop.now)
        self.readRequests(context)
        if self.readHeld, !self.holdsReads {
            self.readHeld = false
            context.read()
        }
    }

    /// Whether the reader gave the door a subscribe request, which the door is checking.
    var isSubscribing: Bool {
        if case .subscribing = self.state { return true }
        return false
    }

    /// Passes the subscribe request it gave the door, which failed its checks, on to NIO's decoder,
    /// with what came after it, and leaves: the door hands it to the route, which answers with the
    /// reason. (Its bytes, rather than its parts as the door has them: the decoder tells NIO's
    /// encoder each request's method, for the answer to a `HEAD` pipelined behind it.)
    func subscriptionFailed(_ context: ChannelHandlerContext) {
        guard case .subscribing(var bytes) = self.state else { return }
        bytes.writeBuffer(&self.buffered)
        self.buffered = bytes
        self.door.handsOnNextRequest = true
        self.leave(context)
    }

    /// Passes what was read on to NIO's decoder, which it adds, with the events held back, and
    /// leaves the pipeline.
    private func leave(_ context: ChannelHandlerContext) {
        self.state = .done
        do {
            try self.door.addHTTPCodec(to: context.pipeline.syncOperations)
        } catch {
            context.close(promise: nil)  // (never: the door is in the pipeline)
            return
        }
        if self.buffered.readableBytes > 0 {
            context.fireChannelRead(Self.wrapInboundOut(self.buffered))
            context.fireChannelReadComplete()
        }
        self.buffered = ByteBuffer()
        if self.inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        if self.quiescing { context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        if self.readHeld { context.read() }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Whether reads wait: while a publish is stored or a subscription checked, and the next
    /// request has begun to come.
    private var holdsReads: Bool {
        switch self.state {
        case .publishing, .subscribing: self.buffered.readableBytes > 0
        case .reading, .done: false
        }
    }

    func read(context: ChannelHandlerContext) {
        if self.holdsReads {
            self.readHeld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .publishing = self.state else { return context.fireUserInboundEventTriggered(event) }
        // Answer the publish under way first.
        if event is ChannelShouldQuiesceEvent {
            self.quiescing = true
        } else if event as? ChannelEvent == .inputClosed {
            self.inputClosed = true
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .done = self.state { context.fireChannelReadComplete() }  // (else nothing went on)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.state = .done
        context.fireChannelInactive()
    }

    /// Publish `request` as HTTP types, as the door would have it from NIO's decoder, for the
    /// checks of a token not accepted before.
    static func request(_ request: ByteBuffer, head: Head) throws -> HTTPRequest {
        var headers = HTTPHeaders()
        let text = String(decoding: request.readableBytesView.prefix(head.length - 4), as: UTF8.self)
        for line in text.split(separator: "\r\n").dropFirst() {
            let colon = line.firstIndex(of: ":")!  // (the head was checked)
            var value = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
            while value.last == " " || value.last == "\t" { value = value.dropLast() }
            headers.add(name: String(line[..<colon]), value: String(value))
        }
        return try HubHTTP1Codec.request(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/.well-known/mercure", headers: headers))
    }
}
