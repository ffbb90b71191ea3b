import ProxyHTTP2

/// The events an `HTTP2Session` produced and the connection has not handled yet.
///
/// Handling an event can submit work whose output drain appends more events; those are handled by
/// the loop already running, in order, never by a nested one. A class so the session can append
/// (`receive(_:events: &queue.events)`) while a handler runs. One event loop only.
final class HTTP2EventQueue {
    var events: [HTTP2Event] = []
    private var draining = false

    var isEmpty: Bool { events.isEmpty }

    /// Hands every queued event, including those appended meanwhile, to `handle`; returns at once
    /// when called from inside `handle`.
    func drain(_ handle: (HTTP2Event) -> Void) {
        guard !draining else { return }
        draining = true
        defer { draining = false }
        var index = 0
        while index < events.count {
            let event = events[index]
            index += 1
            handle(event)
        }
        events.removeAll(keepingCapacity: true)
    }
}
