#include "hsm/signing_service.hpp"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "hsm/pkcs11_module.hpp"

namespace portcullis::hsm {

struct SigningService::Token {
    std::string label;
    CK_SLOT_ID slot = 0;
    bool present = false;
    std::mutex control_mutex;  // guards `control` (key lookups)
    CK_SESSION_HANDLE control = CK_INVALID_HANDLE;
    std::vector<CK_SESSION_HANDLE> sessions;  // one per session thread
    std::atomic<bool> healthy{true};
    std::atomic<std::int64_t> retry_at_ns{0};
};

struct KeyEntry {
    Pkcs11Uri uri;
    std::size_t index = 0;  // stats slot
    KeyInfo info;
    std::array<std::atomic<CK_OBJECT_HANDLE>, 2> handles{};  // per token; 0 = find again
    std::atomic<int> in_flight{0};
};

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_ns() {
    return Clock::now().time_since_epoch().count();
}

// Errors after which the session (or login) is gone: reopen and log in again.
bool session_lost(CK_RV rv) {
    return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
           rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_OBJECT_HANDLE_INVALID ||
           rv == CKR_KEY_HANDLE_INVALID;
}

// Errors that make the whole token unhealthy: fail over until it answers again.
bool token_lost(CK_RV rv) {
    return rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_ERROR ||
           rv == CKR_SLOT_ID_INVALID || rv == CKR_TOKEN_NOT_RECOGNIZED;
}

std::string read_pin(const HsmSettings& settings) {
    if (!settings.pin_file.empty()) {
        std::ifstream in(settings.pin_file);
        if (!in) throw HsmError("PIN file " + settings.pin_file + ": cannot read");
        std::string pin;
        std::getline(in, pin);
        while (!pin.empty() && (pin.back() == '\r' || pin.back() == ' ')) pin.pop_back();
        if (pin.empty()) throw HsmError("PIN file " + settings.pin_file + ": empty");
        return pin;
    }
    if (!settings.pin_env.empty()) {
        const char* pin = std::getenv(settings.pin_env.c_str());
        if (pin == nullptr || *pin == '\0')
            throw HsmError("environment variable " + settings.pin_env +
                           " (the HSM PIN) is not set");
        return pin;
    }
    throw HsmError("[hsm] needs pin_file or pin_env");
}

CK_RV login(const Pkcs11Module& module, CK_SESSION_HANDLE session, const std::string& pin) {
    const CK_RV rv =
        module->C_Login(session, CKU_USER,
                        reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(pin.data())), pin.size());
    return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

KeyInfo read_key_info(const Pkcs11Module& module, CK_SESSION_HANDLE session,
                      CK_OBJECT_HANDLE private_key, const Pkcs11Uri& uri) {
    KeyInfo info;
    const auto type = read_attribute(module, session, private_key, CKA_KEY_TYPE);
    CK_KEY_TYPE key_type = CKK_VENDOR_DEFINED;
    if (type.size() == sizeof key_type)
        std::copy(type.begin(), type.end(), reinterpret_cast<unsigned char*>(&key_type));
    if (key_type == CKK_RSA) {
        info.type = EVP_PKEY_RSA;
        info.rsa_modulus = read_attribute(module, session, private_key, CKA_MODULUS);
        info.rsa_exponent = read_attribute(module, session, private_key, CKA_PUBLIC_EXPONENT);
        if (info.rsa_modulus.empty() || info.rsa_exponent.empty())
            throw HsmError("key " + uri.to_string() + ": RSA modulus or exponent not readable");
    } else if (key_type == CKK_EC) {
        info.type = EVP_PKEY_EC;
        info.ec_params = read_attribute(module, session, private_key, CKA_EC_PARAMS);
        // The point is on the public key object with the same id (or label).
        auto id = read_attribute(module, session, private_key, CKA_ID);
        auto publics = find_objects(module, session, CKO_PUBLIC_KEY, id.empty() ? uri.object : "",
                                    std::vector<std::uint8_t>(id.begin(), id.end()));
        if (publics.empty())
            publics = find_objects(module, session, CKO_PUBLIC_KEY, uri.object, uri.id);
        if (!publics.empty())
            info.ec_point = read_attribute(module, session, publics.front(), CKA_EC_POINT);
        if (info.ec_params.empty() || info.ec_point.empty())
            throw HsmError("key " + uri.to_string() +
                           ": EC public key not found (a CKO_PUBLIC_KEY object with the same "
                           "CKA_ID must exist)");
    } else {
        throw HsmError("key " + uri.to_string() + ": only RSA and EC keys are supported");
    }
    return info;
}

CK_MECHANISM_TYPE mechanism_type(Mechanism m) {
    switch (m) {
        case Mechanism::rsa_pkcs1:
            return CKM_RSA_PKCS;
        case Mechanism::rsa_raw:
            return CKM_RSA_X_509;
        case Mechanism::ecdsa:
            return CKM_ECDSA;
    }
    return CKM_ECDSA;
}

}  // namespace

std::string ckr_name(unsigned long rv) {
    switch (rv) {
        case CKR_OK:
            return "CKR_OK";
        case CKR_GENERAL_ERROR:
            return "CKR_GENERAL_ERROR";
        case CKR_SLOT_ID_INVALID:
            return "CKR_SLOT_ID_INVALID";
        case CKR_DEVICE_ERROR:
            return "CKR_DEVICE_ERROR";
        case CKR_DEVICE_MEMORY:
            return "CKR_DEVICE_MEMORY";
        case CKR_DEVICE_REMOVED:
            return "CKR_DEVICE_REMOVED";
        case CKR_SESSION_CLOSED:
            return "CKR_SESSION_CLOSED";
        case CKR_SESSION_HANDLE_INVALID:
            return "CKR_SESSION_HANDLE_INVALID";
        case CKR_TOKEN_NOT_PRESENT:
            return "CKR_TOKEN_NOT_PRESENT";
        case CKR_USER_NOT_LOGGED_IN:
            return "CKR_USER_NOT_LOGGED_IN";
        case CKR_PIN_INCORRECT:
            return "CKR_PIN_INCORRECT";
        case CKR_PIN_LOCKED:
            return "CKR_PIN_LOCKED";
        case CKR_OBJECT_HANDLE_INVALID:
            return "CKR_OBJECT_HANDLE_INVALID";
        case CKR_KEY_HANDLE_INVALID:
            return "CKR_KEY_HANDLE_INVALID";
        case CKR_MECHANISM_INVALID:
            return "CKR_MECHANISM_INVALID";
        case CKR_FUNCTION_FAILED:
            return "CKR_FUNCTION_FAILED";
        case CKR_CRYPTOKI_NOT_INITIALIZED:
            return "CKR_CRYPTOKI_NOT_INITIALIZED";
        default: {
            char text[32];
            std::snprintf(text, sizeof text, "CKR_0x%08lX", rv);
            return text;
        }
    }
}

namespace {

// SoftHSM2 shows a token as absent when another process (a sibling worker
// starting at the same moment) held its store's lock while this module read
// the token directory, which it does when it initialises: look again, with
// the module initialised afresh every half second, for up to three seconds
// before calling a token missing. Nothing is open on the module yet.
std::shared_ptr<Pkcs11Module> open_module_seeing(const HsmSettings& settings) {
    auto module = std::make_shared<Pkcs11Module>(settings.module);
    const auto all_seen = [&] {
        for (const auto& label : {settings.token, settings.failover_token})
            if (!label.empty() && !module->find_token(label)) return false;
        return true;
    };
    for (int attempt = 1; !all_seen() && attempt <= 30; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (attempt % 5 == 0) {
            module.reset();  // C_Finalize before the next C_Initialize
            module = std::make_shared<Pkcs11Module>(settings.module);
        }
    }
    return module;
}

}  // namespace

SigningService::SigningService(const HsmSettings& settings, HsmStats* stats)
    : settings_(settings), stats_(stats), pin_(read_pin(settings)) {
    module_ = open_module_seeing(settings);
    for (const auto& label : {settings.token, settings.failover_token}) {
        if (label.empty()) continue;
        auto token = std::make_unique<Token>();
        token->label = label;
        const auto slot = module_->find_token(label);
        if (!slot) {
            std::string known;
            for (const auto& l : module_->token_labels()) known += (known.empty() ? "" : ", ") + l;
            throw HsmError("PKCS#11 module " + settings.module + ": no token labelled \"" + label +
                           "\" (tokens present: " + (known.empty() ? "none" : known) + ")");
        }
        token->slot = *slot;
        CK_RV rv = (*module_)->C_OpenSession(token->slot, CKF_SERIAL_SESSION, nullptr, nullptr,
                                             &token->control);
        if (rv == CKR_OK) rv = login(*module_, token->control, pin_);
        // The same race seen from C_Login: while a sibling holds the store's
        // lock, SoftHSM2 reports the user PIN as not initialised.
        for (int attempt = 0; rv == CKR_USER_PIN_NOT_INITIALIZED && attempt < 20; ++attempt) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            rv = login(*module_, token->control, pin_);
        }
        if (rv != CKR_OK)
            throw HsmError("token \"" + label + "\": login failed: " + ckr_name(rv) +
                           (rv == CKR_PIN_INCORRECT ? " (wrong PIN)" : ""));
        CK_TOKEN_INFO info{};
        if ((*module_)->C_GetTokenInfo(token->slot, &info) == CKR_OK &&
            info.ulMaxSessionCount != CK_EFFECTIVELY_INFINITE &&
            info.ulMaxSessionCount != CK_UNAVAILABLE_INFORMATION &&
            static_cast<CK_ULONG>(settings.sessions) + 1 > info.ulMaxSessionCount) {
            throw HsmError("token \"" + label + "\" allows " +
                           std::to_string(info.ulMaxSessionCount) +
                           " sessions; [hsm] sessions = " + std::to_string(settings.sessions) +
                           " (+1 for key lookups) per worker is too many");
        }
        token->present = true;
        token->sessions.assign(static_cast<std::size_t>(settings.sessions), CK_INVALID_HANDLE);
        tokens_.push_back(std::move(token));
    }
    if (tokens_.empty()) throw HsmError("[hsm] token is not set");
    if (stats_) stats_->primary_healthy.set(1);
    for (int i = 0; i < settings.sessions; ++i)
        threads_.emplace_back([this, i] { run_session_thread(static_cast<std::size_t>(i)); });
}

SigningService::~SigningService() {
    {
        std::lock_guard lock(queue_mutex_);
        stopping_ = true;
    }
    queue_ready_.notify_all();
    for (auto& t : threads_) t.join();
    for (auto& token : tokens_) {
        for (auto s : token->sessions)
            if (s != CK_INVALID_HANDLE) (*module_)->C_CloseSession(s);
        if (token->control != CK_INVALID_HANDLE) (*module_)->C_CloseSession(token->control);
    }
}

KeyEntry& SigningService::key(const Pkcs11Uri& requested) {
    std::lock_guard lock(keys_mutex_);
    Pkcs11Uri uri = requested;
    if (uri.token.empty()) uri.token = tokens_.front()->label;
    if (uri.token != tokens_.front()->label)
        throw HsmError("key " + requested.to_string() + ": token \"" + uri.token +
                       "\" is not the configured [hsm] token \"" + tokens_.front()->label + "\"");
    for (auto& k : keys_)
        if (k->uri.to_string() == uri.to_string()) return *k;
    if (keys_.size() >= max_hsm_keys)
        throw HsmError("at most " + std::to_string(max_hsm_keys) + " HSM keys");
    auto entry = std::make_unique<KeyEntry>();
    entry->uri = uri;
    entry->index = keys_.size();
    for (std::size_t t = 0; t < tokens_.size(); ++t) {
        auto& token = *tokens_[t];
        std::lock_guard control(token.control_mutex);
        const auto found =
            find_objects(*module_, token.control, CKO_PRIVATE_KEY, uri.object, uri.id);
        if (found.empty()) {
            throw HsmError("key " + uri.to_string() + ": no private key with that " +
                           (uri.object.empty() ? "id" : "label") + " on token \"" + token.label +
                           "\"");
        }
        if (found.size() > 1)
            throw HsmError("key " + uri.to_string() + ": " + std::to_string(found.size()) +
                           " private keys match on token \"" + token.label + "\"; add id=");
        entry->handles[t] = found.front();
        if (t == 0) entry->info = read_key_info(*module_, token.control, found.front(), uri);
    }
    if (stats_) {
        const auto name = uri.to_string();
        auto& slot = stats_->key_names[entry->index];
        const auto n = std::min(name.size(), slot.size() - 1);
        std::copy_n(name.begin(), n, slot.begin());
        slot[n] = '\0';
        stats_->key_count.publish(entry->index + 1);
    }
    keys_.push_back(std::move(entry));
    return *keys_.back();
}

const KeyInfo& SigningService::info(const KeyEntry& key) const {
    return key.info;
}
std::string SigningService::name(const KeyEntry& key) const {
    return key.uri.to_string();
}

bool SigningService::submit(const std::shared_ptr<SignOperation>& op) {
    auto& key = *op->key;
    if (key.in_flight.fetch_add(1) >= settings_.max_in_flight) {
        key.in_flight.fetch_sub(1);
        if (stats_)
            stats_->keys[key.index].signs[static_cast<std::size_t>(SignResult::queue_full)].add();
        return false;
    }
    op->service = this;
    op->started = Clock::now();
    op->deadline_at = op->started + std::chrono::milliseconds(settings_.operation_timeout_ms);
    if (stats_) {
        stats_->keys[key.index].in_flight.add();
        stats_->queued.add();
    }
    {
        std::lock_guard lock(queue_mutex_);
        queue_.push_back(op);
    }
    queue_ready_.notify_one();
    return true;
}

void SignOperation::abandon(crypto::KeyAbandonReason why) {
    const bool timeout = why == crypto::KeyAbandonReason::timeout;
    int expected = pending;
    if (!state.compare_exchange_strong(expected, timeout ? abandoned_timeout : abandoned_cancelled,
                                       std::memory_order_acq_rel))
        return;
    if (service != nullptr)
        service->count_abandoned(*this, timeout ? SignResult::timeout : SignResult::cancelled);
}

std::string SignOperation::why_failed() const {
    const int now = state.load(std::memory_order_acquire);
    if (now == pending) return "";
    if (now == done) return rv == CKR_OK ? "" : failure;
    return service != nullptr ? service->abandoned_reason(now) : "key operation abandoned";
}

void SigningService::count_abandoned(const SignOperation& op, SignResult why) {
    if (stats_) stats_->keys[op.key->index].signs[static_cast<std::size_t>(why)].add();
}

std::string SigningService::abandoned_reason(int state) const {
    return state == SignOperation::abandoned_timeout
               ? "HSM did not answer within " + std::to_string(settings_.operation_timeout_ms) +
                     " ms"
               : "the connection closed while its signature was pending";
}

void SigningService::account(const SignOperation& op) {
    if (!stats_ || op.state.load(std::memory_order_acquire) != SignOperation::done) return;
    auto& k = stats_->keys[op.key->index];
    k.signs[static_cast<std::size_t>(op.rv == CKR_OK ? SignResult::ok : SignResult::error)].add();
}

void SigningService::note_error(unsigned long rv) {
    if (!stats_) return;
    const auto it = std::find(tracked_ckr_codes.begin(), tracked_ckr_codes.end(), rv);
    stats_->errors[static_cast<std::size_t>(it - tracked_ckr_codes.begin())].add();
}

// A token is usable when healthy, or when its retry time has come and a fresh
// session on it logs in (then it is healthy again).
bool SigningService::token_usable(Token& token) {
    if (token.healthy.load()) return true;
    auto retry_at = token.retry_at_ns.load();
    if (now_ns() < retry_at) return false;
    if (!token.retry_at_ns.compare_exchange_strong(
            retry_at, now_ns() + std::int64_t{settings_.retry_interval_ms} * 1'000'000))
        return false;  // another thread is probing
    {
        // Released before keys_mutex_ is taken: key() takes them in the
        // other order.
        std::lock_guard control(token.control_mutex);
        if (token.control != CK_INVALID_HANDLE) (*module_)->C_CloseSession(token.control);
        token.control = CK_INVALID_HANDLE;
        const auto slot = module_->find_token(token.label);
        if (!slot) return false;
        token.slot = *slot;
        CK_RV rv = (*module_)->C_OpenSession(token.slot, CKF_SERIAL_SESSION, nullptr, nullptr,
                                             &token.control);
        if (rv == CKR_OK) rv = login(*module_, token.control, pin_);
        if (rv != CKR_OK) {
            spdlog::warn("hsm token \"{}\" still unavailable: {}", token.label, ckr_name(rv));
            return false;
        }
    }
    {
        std::lock_guard keys(keys_mutex_);
        const std::size_t t = &token == tokens_[0].get() ? 0 : 1;
        for (auto& k : keys_) k->handles[t] = 0;  // object handles may differ after reinsertion
    }
    token.healthy = true;
    if (&token == tokens_[0].get()) {
        primary_healthy_ = true;
        if (stats_) {
            stats_->primary_healthy.set(1);
            if (tokens_.size() > 1) stats_->failbacks.add();
        }
        spdlog::info("hsm token \"{}\" is back{}", token.label,
                     tokens_.size() > 1 ? "; signing returns to it" : "");
    }
    return true;
}

void SigningService::run_session_thread(std::size_t index) {
    while (true) {
        std::shared_ptr<SignOperation> op;
        {
            std::unique_lock lock(queue_mutex_);
            queue_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            op = std::move(queue_.front());
            queue_.pop_front();
        }
        if (stats_) stats_->queued.sub();
        if (op->state.load(std::memory_order_relaxed) == SignOperation::pending)
            execute(*op, index);
        op->key->in_flight.fetch_sub(1);
        if (stats_) {
            auto& k = stats_->keys[op->key->index];
            k.in_flight.sub();
            const auto elapsed = Clock::now() - op->started;
            const double seconds = std::chrono::duration<double>(elapsed).count();
            std::size_t bucket = 0;
            while (bucket < sign_duration_buckets.size() && seconds > sign_duration_buckets[bucket])
                ++bucket;
            k.duration_counts[bucket].add();
            k.duration_sum_ns.add(static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()));
        }
        // Publishes the result fields; losing to abandon() drops them.
        int expected = SignOperation::pending;
        if (!op->state.compare_exchange_strong(expected, SignOperation::done,
                                               std::memory_order_release,
                                               std::memory_order_relaxed))
            continue;
        if (op->sink != nullptr) {
            op->sink->completed(std::move(op));
        } else {
            op->state.notify_all();
        }
    }
}

void SigningService::execute(SignOperation& op, std::size_t thread_index) {
    std::size_t t = 0;
    if (!token_usable(*tokens_[0])) {
        if (tokens_.size() < 2 || !token_usable(*tokens_[1])) {
            op.rv = CKR_TOKEN_NOT_PRESENT;
            op.failure = "no healthy HSM token";
            return;
        }
        t = 1;
    }
    Token& token = *tokens_[t];
    auto& session = token.sessions[thread_index];
    if (session == CK_INVALID_HANDLE) {
        CK_RV rv =
            (*module_)->C_OpenSession(token.slot, CKF_SERIAL_SESSION, nullptr, nullptr, &session);
        if (rv == CKR_OK) {
            if (stats_) stats_->sessions_open.add();
            rv = login(*module_, session, pin_);  // no-op while the application is logged in
        }
        if (rv != CKR_OK) {
            op.rv = rv;
        }
    }
    CK_OBJECT_HANDLE handle = op.key->handles[t].load();
    if (op.rv == CKR_OK && handle == 0) {
        std::lock_guard control(token.control_mutex);
        const auto found =
            find_objects(*module_, session, CKO_PRIVATE_KEY, op.key->uri.object, op.key->uri.id);
        if (found.empty()) {
            op.rv = CKR_KEY_HANDLE_INVALID;
        } else {
            handle = found.front();
            op.key->handles[t] = handle;
        }
    }
    if (op.rv == CKR_OK) {
        CK_MECHANISM mechanism{mechanism_type(op.mechanism), nullptr, 0};
        op.rv = (*module_)->C_SignInit(session, &mechanism, handle);
        if (op.rv == CKR_OK) {
            op.output.resize(1024);
            CK_ULONG length = op.output.size();
            op.rv = (*module_)->C_Sign(session, op.input.data(), op.input.size(), op.output.data(),
                                       &length);
            op.output.resize(op.rv == CKR_OK ? length : 0);
        }
    }
    if (op.rv == CKR_OK) return;
    op.failure = "C_Sign on token \"" + token.label + "\": " + ckr_name(op.rv);
    note_error(op.rv);
    if (session_lost(op.rv) || token_lost(op.rv)) {
        // The session is gone or suspect: the next operation opens a new one
        // and logs in again.
        if (session != CK_INVALID_HANDLE) {
            (*module_)->C_CloseSession(session);
            if (stats_) stats_->sessions_open.sub();
        }
        session = CK_INVALID_HANDLE;
        if (stats_) stats_->relogins.add();
        if (op.rv == CKR_OBJECT_HANDLE_INVALID || op.rv == CKR_KEY_HANDLE_INVALID)
            op.key->handles[t] = 0;
    }
    if (token_lost(op.rv) && token.healthy.exchange(false)) {
        token.retry_at_ns = now_ns() + std::int64_t{settings_.retry_interval_ms} * 1'000'000;
        if (t == 0) {
            primary_healthy_ = false;
            if (stats_) {
                stats_->primary_healthy.set(0);
                if (tokens_.size() > 1) stats_->failovers.add();
            }
        }
        spdlog::error("hsm token \"{}\" unhealthy after {}{}", token.label, ckr_name(op.rv),
                      t == 0 && tokens_.size() > 1
                          ? "; signing fails over to \"" + tokens_[1]->label + "\""
                          : "");
    }
}

}  // namespace portcullis::hsm
