#include "dataplane/connection.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>

#include "dataplane/upstream/proxy_v2.hpp"

namespace portcullis::dataplane {
namespace {

using Status = ByteStream::Status;

// Log text is one line of key=value pairs; quotes inside values are escaped.
std::string log_quoted(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    out.push_back('"');
    for (const char c : text) {
        if (c == '"' || c == '\\') out.push_back('\\');
        out.push_back(c == '\n' || c == '\r' ? ' ' : c);
    }
    out.push_back('"');
    return out;
}

}  // namespace

Connection::Connection(WorkerRuntime& worker, ListenerRuntime& listener,
                       std::unique_ptr<ByteStream> client, SocketAddress peer)
    : worker_(worker),
      listener_(listener),
      client_(std::move(client)),
      peer_(peer),
      tls_context_(listener.tls),
      backends_(listener.backends),
      stats_(*listener.stats),
      tls_(*tls_context_, *worker.buffers),
      // Decrypted from what the client sent; read from the backend.
      to_upstream_(*worker.buffers, base::BufferPool::Use::transform,
                   listener.settings.buffer_bytes),
      to_client_(*worker.buffers, base::BufferPool::Use::ingress, listener.settings.buffer_bytes),
      accepted_at_(worker.now),
      last_activity_(worker.now) {
    stats_.connections_active.add(1);
}

Connection::~Connection() {
    worker_.starved.remove(*this);
    cancel_key_operation();
    uncount_upstream();
    stats_.connections_active.sub();
}

void Connection::forget_key_operation() {
    if (!key_operation_) return;
    worker_.awaiting_key.erase(key_operation_.get());
    key_operation_.reset();
}

// A paused async job must run to its end before the SSL is freed: mark the
// signature abandoned and resume the handshake once, which then fails.
void Connection::cancel_key_operation() {
    if (!key_operation_) return;
    key_operation_->abandon(crypto::KeyAbandonReason::cancelled);
    forget_key_operation();
    if (!tls_.established()) tls_.handshake();
}

void Connection::on_key_operation_done() {
    forget_key_operation();
    pump();
}

// The transport reports a finished connect as activity on the stream.
void Connection::check_upstream_connect() {
    if (upstream_state_ != Upstream::connecting) return;
    const int result = upstream_->connect_result();
    if (result != EINPROGRESS) on_upstream_connect_result(result);
}

Clock::time_point Connection::on_tick() {
    constexpr auto every_tick = Clock::time_point::min();
    if (finished_) return every_tick;
    using std::chrono::milliseconds;
    const auto& s = listener_.settings;
    if (key_operation_ && crypto::PendingKeyOperation::Clock::now() >= key_operation_->deadline()) {
        key_operation_->abandon(crypto::KeyAbandonReason::timeout);
        on_key_operation_done();  // the handshake resumes and fails with the reason
        return every_tick;
    }
    if (!tls_.established()) {
        if (worker_.now - accepted_at_ >= milliseconds(s.handshake_timeout_ms)) {
            stats_.handshakes_rejected[static_cast<int>(crypto::RejectReason::timeout)].add();
            if (worker_.log_limiter.allow(worker_.now)) {
                spdlog::info(
                    "client rejected listener={} client={} reason=timeout detail={} subject=\"\"",
                    s.name, peer_.to_string(),
                    log_quoted("handshake not finished within " +
                               std::to_string(s.handshake_timeout_ms) + " ms"));
            }
            finish("handshake timeout");
        }
        return every_tick;
    }
    const auto idle_deadline = last_activity_ + milliseconds(s.idle_timeout_ms);
    if (upstream_state_ == Upstream::connecting) {
        // Both deadlines run: a backend that swallows SYNs must not keep a
        // connection past its idle timeout.
        if (worker_.now - connect_started_ >=
            milliseconds(backends_->settings().connect_timeout_ms)) {
            on_upstream_connect_result(ETIMEDOUT);
        } else if (worker_.now >= idle_deadline) {
            finish("idle timeout");
        }
        return every_tick;
    }
    if (worker_.now >= idle_deadline) {
        finish("idle timeout");
        return every_tick;
    }
    return idle_deadline;
}

// Moves bytes until no direction can make progress, then checks for the end.
void Connection::pump() {
    if (finished_) return;
    const auto denials = worker_.buffers->denials();
    check_upstream_connect();
    bool progress = true;
    while (progress && !finished_) {
        progress = false;
        progress |= move_client_to_tls();
        if (!tls_.established()) {
            progress |= advance_handshake();
        } else {
            progress |= move_tls_to_upstream();
            progress |= move_upstream_to_tls();
        }
        progress |= flush_tls_to_client();
    }
    if (finished_) return;
    maybe_finish();
    // Blocks taken for reads that found nothing go back: an idle connection
    // holds none.
    tls_.release_unused_buffers();
    to_upstream_.release_unused();
    to_client_.release_unused();
    if (worker_.buffers->denials() != denials && !finished_) worker_.starved.push_back(*this);
}

bool Connection::move_client_to_tls() {
    if (finished_) return false;
    bool moved = false;
    while (!client_eof_) {
        const auto space = tls_.inbound_space();
        if (space.empty()) break;  // TLS core is full: backpressure on the client
        const auto r = client_->read(space);
        if (r.status == Status::ok) {
            if (ciphertext_received_ == 0) first_byte_at_ = worker_.now;
            tls_.commit_inbound(r.bytes);
            ciphertext_received_ += r.bytes;
            moved = true;
            touch();
        } else if (r.status == Status::eof) {
            client_eof_ = true;
            moved = true;
        } else if (r.status == Status::would_block) {
            break;
        } else if (!tls_.established()) {
            closed_during_handshake("client read error");  // a reset, mostly
            return false;
        } else {
            finish("client read error");
            return false;
        }
    }
    return moved;
}

bool Connection::advance_handshake() {
    // Ended by this pump's read (a reset): its cancelled key operation failed
    // the handshake, which is not a rejection to count.
    if (finished_) return false;
    // Still waiting for the HSM: resuming the job now would only pause it again.
    if (key_operation_ && !key_operation_->finished()) {
        // The client cannot send its Finished before it saw the signature, so
        // after its FIN the handshake can never complete: let the key go now
        // rather than at its answer or its deadline (which would count an HSM
        // failure for a client that left).
        if (client_eof_) closed_during_handshake("closed during handshake");
        return false;
    }
    const auto step = tls_.handshake();
    if (step != crypto::TlsConnection::Step::key_operation_pending && key_operation_)
        forget_key_operation();
    switch (step) {
        case crypto::TlsConnection::Step::done:
            on_established();
            return true;
        case crypto::TlsConnection::Step::failed:
            log_rejection();
            flush_tls_to_client();  // the alert tells the client why
            finish("handshake failed");
            return false;
        case crypto::TlsConnection::Step::need_input:
            // Only now is a FIN final: buffered records (even the client's
            // Finished followed by data and FIN in one burst) were consumed first.
            if (client_eof_) closed_during_handshake("closed during handshake");
            return false;
        case crypto::TlsConnection::Step::key_operation_pending:
            if (worker_.key_completions == nullptr) return false;
            if (auto op = worker_.key_completions->take_paused()) {
                forget_key_operation();
                key_operation_ = std::move(op);
                worker_.awaiting_key[key_operation_.get()] = this;
            }
            return false;
    }
    return false;
}

// The client left before the handshake could finish (scans, impatient
// clients): counted as abandoned, not as a failure of the handshake.
void Connection::closed_during_handshake(const char* why) {
    stats_.handshakes_abandoned.add();
    if (worker_.log_limiter.allow(worker_.now)) {
        spdlog::info("connection closed before handshake listener={} client={} bytes={}",
                     listener_.settings.name, peer_.to_string(), ciphertext_received_);
    }
    finish(why);
}

void Connection::log_rejection() {
    const auto& failure = tls_.failure();
    stats_.handshakes_rejected[static_cast<int>(failure.reason)].add();
    if (!worker_.log_limiter.allow(worker_.now)) return;
    const auto suppressed = worker_.log_limiter.take_suppressed();
    spdlog::info("client rejected listener={} client={} reason={} detail={} subject={}{}",
                 listener_.settings.name, peer_.to_string(), crypto::to_string(failure.reason),
                 log_quoted(failure.detail), log_quoted(failure.peer_subject),
                 suppressed ? " suppressed_before=" + std::to_string(suppressed) : std::string());
}

void Connection::refresh_ocsp(crypto::OcspClient& ocsp) const {
    if (!finished_) tls_.refresh_ocsp(*listener_.tls, ocsp);
}

void Connection::recheck_revocation() {
    if (finished_ || !tls_.established() || !tls_.revoked_by(*listener_.tls)) return;
    end_revoked();
}

// OpenSSL has no call that sends certificate_revoked on an established
// connection: the client gets close_notify, then FIN.
void Connection::end_revoked() {
    stats_.connections_revoked.add();
    const auto& peer = tls_.peer();
    spdlog::warn("connection ended listener={} client={} reason=revoked_live subject={} sha256={}",
                 listener_.settings.name, peer_.to_string(),
                 log_quoted(peer.certificate.subject_dn()), peer.certificate.sha256_hex());
    tls_.close();
    close_notify_sent_ = true;
    flush_tls_to_client();
    if (finished_) return;  // the client's socket failed while flushing
    client_->shutdown_write();
    finish("revoked live");
}

void Connection::on_established() {
    // A reload may have swapped in new CRLs while this handshake ran on the
    // context it started with, and OCSP news may have come while it was
    // paused: they have the last word.
    if ((tls_context_ != listener_.tls || listener_.tls->policy().ocsp != crypto::OcspCheck::off) &&
        tls_.revoked_by(*listener_.tls)) {
        end_revoked();
        return;
    }
    const auto& peer = tls_.peer();
    (peer.resumed ? stats_.handshakes_resumed : stats_.handshakes_full).add();
    stats_
        .handshake_duration[static_cast<std::size_t>(peer.resumed ? HandshakeKind::resumed
                                                                  : HandshakeKind::full)]
        .observe(Clock::now() - first_byte_at_);  // includes this batch's own work
    if (backends_->settings().proxy_protocol) {
        // The header goes first on the upstream connection; the buffer is sized
        // so that it never crowds out the client's plaintext.
        std::vector<std::uint8_t> header;
        try {
            header = proxy_v2::encode(peer_, client_->local_address(), peer);
        } catch (const std::length_error& e) {
            // A verified certificate can still outgrow PROXY v2's 16-bit
            // lengths (a subject of 64 KiB): that client is turned away, and
            // the worker and its other connections go on.
            stats_.upstream_unavailable.add();
            if (worker_.log_limiter.allow(worker_.now)) {
                spdlog::warn("client refused listener={} client={} subject_bytes={}: {}",
                             listener_.settings.name, peer_.to_string(),
                             peer.certificate.subject_dn().size(), e.what());
            }
            give_up_on_upstream("proxy header too large");
            return;
        }
        to_upstream_.set_capacity(listener_.settings.buffer_bytes + header.size());
        if (to_upstream_.append(header) != header.size()) {
            // The worker's buffer budget is spent: this one client waits no
            // better than it is refused (the others keep their data).
            stats_.upstream_unavailable.add();
            give_up_on_upstream("buffer budget spent");
            return;
        }
    }
    // Guarded: the arguments allocate even when the line would be dropped.
    if (spdlog::should_log(spdlog::level::debug)) {
        spdlog::debug(
            "client accepted listener={} client={} version={} cipher={} resumed={} subject={}",
            listener_.settings.name, peer_.to_string(), peer.tls_version, peer.cipher, peer.resumed,
            log_quoted(peer.certificate.subject_dn()));
    }
    connect_upstream();
}

void Connection::give_up_on_upstream(const char* why) {
    upstream_state_ = Upstream::failed;
    // Nothing will ever reach the client: say goodbye properly.
    tls_.close();
    close_notify_sent_ = true;
    flush_tls_to_client();
    finish(why);
}

void Connection::connect_upstream() {
    auto& pool = *backends_;
    while (true) {
        const auto pick = pool.pick(worker_.now, failed_backends_);
        if (!pick) {
            stats_.upstream_unavailable.add();
            if (worker_.log_limiter.allow(worker_.now)) {
                spdlog::warn("no backend available listener={} client={} tried={}",
                             listener_.settings.name, peer_.to_string(), failed_backends_.size());
            }
            give_up_on_upstream("no backend");
            return;
        }
        backend_ = *pick;
        int error = 0;
        upstream_ = worker_.transport->connect(pool.address(backend_), *this, error);
        if (upstream_) {
            count_upstream();
            upstream_state_ = Upstream::connecting;
            connect_started_ = worker_.now;
            return;
        }
        // Immediate failure (e.g. no route): count it and try the next backend.
        stats_.upstream_connect_failures.add();
        pool.report_failure(backend_, worker_.now);
        publish_backend_state();
        failed_backends_.push_back(backend_);
    }
}

void Connection::count_upstream() {
    if (backend_ >= stats_.backend_connections.size()) return;
    stats_.backend_connections[backend_].add();
    upstream_counted_ = true;
}

void Connection::uncount_upstream() {
    if (!upstream_counted_) return;
    stats_.backend_connections[backend_].sub();
    upstream_counted_ = false;
}

void Connection::publish_backend_state() {
    if (backend_ < stats_.backend_down.size())
        stats_.backend_down[backend_].set(backends_->is_up(backend_) ? 0 : 1);
}

void Connection::on_upstream_connect_result(int error) {
    auto& pool = *backends_;
    if (error == 0) {
        upstream_state_ = Upstream::connected;
        backend_connected_ = true;
        pool.report_success(backend_);
        publish_backend_state();
        touch();
        return;
    }
    stats_.upstream_connect_failures.add();
    pool.report_failure(backend_, worker_.now);
    publish_backend_state();
    if (worker_.log_limiter.allow(worker_.now)) {
        spdlog::warn("upstream connect failed listener={} backend={} error={}{}",
                     listener_.settings.name, pool.address(backend_).to_string(),
                     std::strerror(error), pool.is_up(backend_) ? "" : " backend=down");
    }
    failed_backends_.push_back(backend_);
    uncount_upstream();
    upstream_.reset();
    upstream_state_ = Upstream::none;
    connect_upstream();
}

bool Connection::move_tls_to_upstream() {
    if (finished_) return false;
    bool moved = false;
    // Client plaintext into the buffer.
    while (!client_close_notify_) {
        auto space = to_upstream_.writable();
        if (space.empty()) break;
        const auto r = tls_.read_plaintext(space);
        if (r.status == crypto::TlsConnection::IoStatus::ok) {
            to_upstream_.commit(r.bytes);
            stats_.bytes_from_clients.add(r.bytes);
            plaintext_from_client_ += r.bytes;
            moved = true;
        } else if (r.status == crypto::TlsConnection::IoStatus::closed) {
            client_close_notify_ = true;
            moved = true;
        } else if (r.status == crypto::TlsConnection::IoStatus::failed) {
            fail_with_alert("tls read error");
            return false;
        } else {
            // need_input with the client's FIN seen: every byte it sent is out.
            client_input_drained_ =
                client_eof_ && r.status == crypto::TlsConnection::IoStatus::need_input;
            break;
        }
    }
    if (upstream_state_ != Upstream::connected) return moved;
    // Buffer to the backend.
    while (!to_upstream_.empty()) {
        const auto w = upstream_->write(to_upstream_.readable());
        if (w.status == Status::ok) {
            to_upstream_.consume(w.bytes);
            moved = true;
            touch();
        } else if (w.status == Status::would_block) {
            break;
        } else {
            finish("upstream write error");
            return false;
        }
    }
    // The client is done sending and all of it reached the backend: pass the
    // half-close on. (A FIN alone is not enough: the TLS core may still hold
    // records that have not been decrypted.)
    if ((client_close_notify_ || client_input_drained_) && to_upstream_.empty() &&
        !upstream_write_shut_) {
        upstream_->shutdown_write();
        upstream_write_shut_ = true;
        moved = true;
    }
    return moved;
}

bool Connection::move_upstream_to_tls() {
    if (finished_) return false;
    bool moved = false;
    while (upstream_state_ == Upstream::connected && !upstream_eof_) {
        auto space = to_client_.writable();
        if (space.empty()) break;
        const auto r = upstream_->read(space);
        if (r.status == Status::ok) {
            to_client_.commit(r.bytes);
            moved = true;
            touch();
        } else if (r.status == Status::eof) {
            upstream_eof_ = true;
            moved = true;
        } else if (r.status == Status::would_block) {
            break;
        } else {
            finish("upstream read error");
            return false;
        }
    }
    while (!to_client_.empty()) {
        const auto r = tls_.write_plaintext(to_client_.readable());
        if (r.status == crypto::TlsConnection::IoStatus::ok && r.bytes > 0) {
            to_client_.consume(r.bytes);
            stats_.bytes_to_clients.add(r.bytes);
            plaintext_to_client_ += r.bytes;
            moved = true;
        } else if (r.status == crypto::TlsConnection::IoStatus::failed) {
            fail_with_alert("tls write error");
            return false;
        } else {
            break;  // TLS output full: flush to the client first
        }
    }
    if (upstream_eof_ && to_client_.empty() && !close_notify_sent_) {
        tls_.close();
        close_notify_sent_ = true;
        moved = true;
    }
    return moved;
}

bool Connection::flush_tls_to_client() {
    if (finished_) return false;
    bool moved = false;
    while (true) {
        const auto data = tls_.outbound();
        if (data.empty()) break;
        const auto w = client_->write(data);
        if (w.status == Status::ok) {
            tls_.consume_outbound(w.bytes);
            moved = true;
        } else if (w.status == Status::would_block) {
            break;
        } else {
            finish("client write error");
            return false;
        }
    }
    return moved;
}

// RFC 8446 §6.2 / RFC 5246 §7.2.2: a fatal error is announced before the
// close. OpenSSL has already written the alert record into the TLS output;
// it goes out, followed by a FIN, before the connection ends.
void Connection::fail_with_alert(const char* why) {
    flush_tls_to_client();
    if (finished_) return;  // the client's socket failed while flushing
    client_->shutdown_write();
    finish(why);
}

// A connection ends when both directions are complete: everything the client
// sent reached the backend (and was followed by a FIN), and everything the
// backend sent reached the client (followed by close_notify). Anything else
// (a silent peer, a stuck reader) is ended by the idle timeout.
void Connection::maybe_finish() {
    if (!tls_.established()) return;
    const bool to_client_done = close_notify_sent_ && tls_.outbound().empty();
    const bool to_upstream_done = upstream_write_shut_ || upstream_state_ == Upstream::failed;
    if (to_client_done && to_upstream_done) {
        if (!client_eof_) client_->shutdown_write();
        finish("complete");
    }
}

// One line per connection, accepted or refused: who, with what identity and
// protocol, to which backend, how much, how long, and how it ended.
void Connection::write_access_log(const char* result) {
    if (worker_.access_log == nullptr || !worker_.access_log->enabled()) return;
    const auto wall = std::chrono::system_clock::now();
    const auto seconds = std::chrono::system_clock::to_time_t(wall);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count() %
        1000;
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    const auto& peer = tls_.peer();
    const bool established = tls_.established();
    std::string outcome(result);
    for (auto& c : outcome) c = c == ' ' ? '_' : c;
    const auto line = fmt::format(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z listener={} client={} result={} reason={} "
        "version={} "
        "cipher={} resumed={} subject={} sha256={} backend={} bytes_in={} bytes_out={} "
        "duration_ms={}\n",
        utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
        millis, listener_.settings.name, peer_.to_string(), outcome,
        crypto::to_string(tls_.failure().reason), established ? peer.tls_version : "-",
        established ? peer.cipher : "-", established && peer.resumed,
        log_quoted(established ? peer.certificate.subject_dn() : tls_.failure().peer_subject),
        established && peer.certificate_presented() ? peer.certificate.sha256_hex() : "-",
        backend_connected_ ? backends_->address(backend_).to_string() : "-", plaintext_from_client_,
        plaintext_to_client_,
        std::chrono::duration_cast<std::chrono::milliseconds>(worker_.now - accepted_at_).count());
    worker_.access_log->write(line);
}

void Connection::finish(const char* why) {
    if (finished_) return;
    finished_ = true;
    cancel_key_operation();
    write_access_log(why);
    if (spdlog::should_log(spdlog::level::debug)) {
        spdlog::debug("connection closed listener={} client={} reason=\"{}\"",
                      listener_.settings.name, peer_.to_string(), why);
    }
    // The streams close when the worker destroys this connection, after the
    // current batch of events: events later in the batch may still name them.
}

}  // namespace portcullis::dataplane
