// TCP keepalive for client and backend connections, the same on both
// transports: after `idle_s` without a segment from the peer (and nothing of
// ours unacknowledged), a probe every `interval_s`; after `probes` unanswered
// ones the connection is dropped. A vanished client or backend then frees
// its connection well before the listener's idle timeout, and firewalls
// between us and the backends keep their state.
#pragma once

namespace portcullis::dataplane {

struct KeepaliveSettings {
    int idle_s = 60;  // 0 = no keepalive
    int interval_s = 10;
    int probes = 6;  // a dead peer is noticed after idle + probes * interval: 2 min
};

}  // namespace portcullis::dataplane
