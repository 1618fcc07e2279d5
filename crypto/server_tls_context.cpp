#include "crypto/server_tls_context.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <strings.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>

#include "crypto/client_verifier.hpp"
#include "crypto/crl_check_cache.hpp"
#include "crypto/ocsp_response.hpp"
#include "crypto/session_cache.hpp"

namespace portcullis::crypto {

struct ServerTlsContext::SniGroup {
    std::set<std::string> names;  // lowercase; "*.example.com" matches one label
    UniqueSslCtx ctx;
    std::set<int> key_types;  // EVP_PKEY_EC, EVP_PKEY_RSA, ...
    struct Staple {
        const X509* leaf;  // owned by ctx; the certificate OpenSSL selected for a handshake
        std::vector<unsigned char> response;  // DER, checked when loaded
        std::int64_t next_update;
    };
    std::vector<Staple> staples;
};

namespace {

// ECDHE only (forward secrecy), AEAD only, ECDSA first so that a client that
// can do both gets the cheaper certificate.
constexpr const char* default_tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";
// Hybrid post-quantum first, as OpenSSL 3.5's own default does: a client that
// offers X25519MLKEM768 gets it, any other falls back to classical X25519 or
// the NIST curves without a HelloRetryRequest when it sent one of their shares.
constexpr const char* default_groups = "X25519MLKEM768:X25519:P-256:P-384";

[[noreturn]] void fail(const std::string& what) {
    throw TlsConfigError(what + " (" + drain_openssl_errors() + ")");
}

UniqueBio open_file(const std::string& path, const std::string& role) {
    UniqueBio file(BIO_new_file(path.c_str(), "rb"));
    if (!file) throw TlsConfigError(role + " " + path + ": cannot open file");
    return file;
}

std::vector<UniqueX509> read_certificates(const std::string& path) {
    auto file = open_file(path, "certificate chain");
    std::vector<UniqueX509> certs;
    while (X509* cert = PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr))
        certs.emplace_back(cert);
    ERR_clear_error();  // the loop ends on "no start line"
    if (certs.empty())
        throw TlsConfigError("certificate chain " + path + ": no PEM certificate in file");
    return certs;
}

std::string lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    return text;
}

std::set<std::string> names_of(const CertificateSpec& spec, X509* leaf) {
    std::set<std::string> names;
    for (const auto& n : spec.server_names) names.insert(lowercase(n));
    if (!names.empty()) return names;
    for (const auto& n : subject_alt_dns(leaf)) names.insert(lowercase(n));
    if (!names.empty()) return names;
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof cn) > 0) {
        names.insert(lowercase(cn));
    }
    return names;
}

bool name_matches(const std::string& pattern, const std::string& host) {
    if (pattern == host) return true;
    if (!pattern.starts_with("*.")) return false;
    const auto dot = host.find('.');
    return dot != std::string::npos && host.substr(dot) == pattern.substr(1);
}

std::string file_contents(const std::string& path) {
    std::string text;
    if (path.empty()) return text;
    auto file = open_file(path, "trust bundle");
    char chunk[4096];
    int n;
    while ((n = BIO_read(file.get(), chunk, sizeof chunk)) > 0)
        text.append(chunk, static_cast<std::size_t>(n));
    return text;
}

// Sessions resume only under the same client-verification policy and the
// same trusted CAs (by content: a reload that drops a CA ends its sessions).
// CRL changes are handled per session instead (session_still_trusted).
std::vector<unsigned char> session_context_of(const TlsPolicy& policy) {
    std::string material = "portcullis/";
    material += std::to_string(static_cast<int>(policy.client_auth)) + "/" + policy.trust_dir +
                "/" + file_contents(policy.trust_file);
    // An allow-list change ends sessions too: who may resume is who may connect.
    for (const auto& p : policy.allow.subject_patterns) material += "/s:" + p;
    for (const auto& p : policy.allow.san_uris) material += "/u:" + p;
    for (const auto& p : policy.allow.san_dns) material += "/d:" + p;
    for (const auto& p : policy.allow.sha256_fingerprints) material += "/f:" + p;
    std::vector<unsigned char> digest(SHA256_DIGEST_LENGTH);
    SHA256(reinterpret_cast<const unsigned char*>(material.data()), material.size(), digest.data());
    return digest;
}

std::vector<unsigned char> alpn_wire_format(const std::vector<std::string>& protocols) {
    std::vector<unsigned char> wire;
    for (const auto& p : protocols) {
        if (p.empty() || p.size() > 255)
            throw TlsConfigError("ALPN protocol name \"" + p + "\" must be 1..255 bytes");
        wire.push_back(static_cast<unsigned char>(p.size()));
        wire.insert(wire.end(), p.begin(), p.end());
    }
    return wire;
}

int select_alpn(SSL*, const unsigned char** out, unsigned char* out_len,
                const unsigned char* offered, unsigned int offered_len, void* arg) {
    const auto* ours = static_cast<const std::vector<unsigned char>*>(arg);
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, out_len, ours->data(),
                              static_cast<unsigned int>(ours->size()), offered,
                              offered_len) != OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;  // no common protocol: carry on without ALPN
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

}  // namespace

UniqueX509Store build_trust_store(const TlsPolicy& policy, std::vector<UniqueX509Crl>& crls) {
    UniqueX509Store store(X509_STORE_new());
    if (!policy.trust_file.empty() &&
        X509_STORE_load_file(store.get(), policy.trust_file.c_str()) != 1) {
        fail("trust bundle " + policy.trust_file + ": cannot load CA certificates");
    }
    if (!policy.trust_dir.empty() &&
        X509_STORE_load_path(store.get(), policy.trust_dir.c_str()) != 1) {
        fail("trust directory " + policy.trust_dir + ": cannot use as a hashed CA directory");
    }
    for (const auto& path : policy.crl_files) {
        auto file = open_file(path, "CRL");
        int loaded = 0;
        while (X509_CRL* raw = PEM_read_bio_X509_CRL(file.get(), nullptr, nullptr, nullptr)) {
            UniqueX509Crl crl(raw);
            if (X509_STORE_add_crl(store.get(), crl.get()) != 1)
                fail("CRL " + path + ": cannot add to trust store");
            crls.push_back(std::move(crl));
            ++loaded;
        }
        ERR_clear_error();
        if (loaded == 0) throw TlsConfigError("CRL " + path + ": no PEM CRL in file");
    }
    if (!policy.crl_files.empty()) {
        unsigned long flags = X509_V_FLAG_CRL_CHECK;
        if (policy.crl_scope == CrlScope::chain) flags |= X509_V_FLAG_CRL_CHECK_ALL;
        X509_STORE_set_flags(store.get(), flags);
    }
    // CRLs from a hashed trust directory are checked too, so always.
    install_crl_check_cache(store.get());
    return store;
}

// Chooses the SNI group for the name the client asked for.
static int switch_context_for_sni(SSL* ssl, int*, void* arg) {
    const char* requested = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (requested == nullptr) return SSL_TLSEXT_ERR_OK;
    const auto* groups =
        static_cast<const std::vector<std::unique_ptr<ServerTlsContext::SniGroup>>*>(arg);
    const std::string host = lowercase(requested);
    for (const auto& group : *groups) {
        for (const auto& pattern : group->names) {
            if (!name_matches(pattern, host)) continue;
            if (SSL_get_SSL_CTX(ssl) != group->ctx.get()) SSL_set_SSL_CTX(ssl, group->ctx.get());
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;  // unknown name: the default (first) group answers
}

namespace {

int context_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

const ServerTlsContext& context_of(SSL* ssl) {
    return *static_cast<const ServerTlsContext*>(
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), context_index()));
}

// The OCSP response kept for the certificate OpenSSL chose, when the client
// asked for one (status_request, TLS 1.2 and 1.3 alike) and it is still
// fresh: past its nextUpdate a response is never sent.
int staple_ocsp_response(SSL* ssl, void* arg) {
    const auto& group = *static_cast<const ServerTlsContext::SniGroup*>(arg);
    const X509* leaf = SSL_get_certificate(ssl);
    for (const auto& staple : group.staples) {
        if (staple.leaf != leaf) continue;
        if (std::time(nullptr) >= staple.next_update) return SSL_TLSEXT_ERR_NOACK;
        auto* copy = static_cast<unsigned char*>(
            OPENSSL_memdup(staple.response.data(), staple.response.size()));
        if (copy == nullptr) return SSL_TLSEXT_ERR_NOACK;
        SSL_set_tlsext_status_ocsp_resp(ssl, copy, static_cast<long>(staple.response.size()));
        if (auto* events = context_of(ssl).options().events) events->ocsp_stapled();
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

// The response the fetcher kept for `leaf`, when it still passes every check.
std::optional<ServerTlsContext::SniGroup::Staple> kept_staple(const std::string& dir,
                                                              const X509* leaf, X509* issuer) {
    auto der = read_ocsp_response(ocsp_response_path(dir, const_cast<X509*>(leaf)));
    if (der.empty()) return std::nullopt;
    const auto answer =
        check_ocsp_response(der, const_cast<X509*>(leaf), issuer, std::time(nullptr));
    if (!answer.problem.empty()) return std::nullopt;
    return ServerTlsContext::SniGroup::Staple{leaf, std::move(der), answer.next_update};
}

// Fetched once per process: an implicit fetch per ticket would take
// OpenSSL 3.0's global name-lookup lock on every handshake.
const EVP_CIPHER* ticket_cipher() {
    static const std::unique_ptr<EVP_CIPHER, decltype(&EVP_CIPHER_free)> cipher(
        EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr), &EVP_CIPHER_free);
    return cipher.get();
}

bool set_ticket_mac_key(EVP_MAC_CTX* mac, const TicketKey& key) {
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(
                               OSSL_MAC_PARAM_KEY, const_cast<std::uint8_t*>(key.hmac_key.data()),
                               key.hmac_key.size()),
                           OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    return EVP_MAC_CTX_set_params(mac, params) == 1;
}

// RFC 5077 layout as OpenSSL's default: key name, AES-256-CBC, HMAC-SHA256.
// Returns 2 for the previous key so OpenSSL re-issues under the current one.
int ticket_key_callback(SSL* ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                        EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt) {
    const auto& self = context_of(ssl);
    const TicketKeyring& ring = *self.options().tickets;
    if (encrypt) {
        if (ring.empty()) return 0;  // no key yet: issue no ticket
        const TicketKey& key = ring.current();
        std::memcpy(name, key.name.data(), key.name.size());
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher())) != 1) return -1;
        if (EVP_EncryptInit_ex(cipher, ticket_cipher(), nullptr, key.aes_key.data(), iv) != 1)
            return -1;
        return set_ticket_mac_key(mac, key) ? 1 : -1;
    }
    TicketKeyring::Match match;
    const TicketKey* key = ring.find(std::span<const std::uint8_t, 16>(name, 16), match);
    if (self.options().events) self.options().events->ticket_decrypted(match);
    if (key == nullptr) return 0;  // unknown or retired key: full handshake
    if (EVP_DecryptInit_ex(cipher, ticket_cipher(), nullptr, key->aes_key.data(), iv) != 1)
        return -1;
    if (!set_ticket_mac_key(mac, *key)) return -1;
    return match == TicketKeyring::Match::current ? 1 : 2;
}

void report(const ServerTlsContext& self, LocalSessionEvent event) {
    if (self.options().events) self.options().events->local_session_cache(event);
}

std::int64_t expiry_of(const SSL_SESSION* session) {
    return std::int64_t{SSL_SESSION_get_time_ex(session)} + SSL_SESSION_get_timeout(session);
}

// Only what OpenSSL will resume here (another listener's ticket has another
// ID context), as for the sessions local_sessions keeps.
void keep_ticket_session(SSL* ssl, SSL_SESSION* session) {
    const auto& self = context_of(ssl);
    LocalSessionCache* kept = self.ticket_sessions();
    if (kept != nullptr && SSL_SESSION_get_protocol_version(session) == SSL_version(ssl) &&
        self.owns_id_context(session) &&
        kept->store(session, expiry_of(session), std::time(nullptr))) {
        report(self, LocalSessionEvent::eviction);
    }
}

// A TLS 1.2 ClientHello whose ticket's session this worker already decoded
// (ticket_sessions) resumes by its session ID: with SSL_OP_NO_TICKET for this
// connection OpenSSL skips the ticket and asks get_trusted_cached_session,
// which re-checks the session as any other. Only under the current key: a
// ticket under the previous one is decrypted, so that it is renewed. The
// client sees the resumption it asked for: its session ID echoed, no new
// ticket, as when OpenSSL accepts a ticket it does not renew.
int resume_kept_ticket_session(SSL* ssl, int*, void*) {
    const auto& self = context_of(ssl);
    LocalSessionCache* kept = self.ticket_sessions();
    const unsigned char* ticket = nullptr;
    std::size_t ticket_length = 0;
    const unsigned char* versions = nullptr;
    std::size_t versions_length = 0;
    // A client offering TLS 1.3 is answered in TLS 1.3, where this does not apply.
    if (kept == nullptr || kept->size() == 0 ||
        SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_session_ticket, &ticket, &ticket_length) != 1 ||
        ticket_length < 16 ||
        SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &versions,
                                  &versions_length) == 1) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    const unsigned char* id = nullptr;
    const std::size_t id_length = SSL_client_hello_get0_session_id(ssl, &id);
    TicketKeyring::Match match = TicketKeyring::Match::unknown;
    self.options().tickets->find(std::span<const std::uint8_t, 16>(ticket, 16), match);
    if (id_length == 0 || match != TicketKeyring::Match::current ||
        kept->find({id, id_length}, std::time(nullptr)) == nullptr) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    SSL_set_options(ssl, SSL_OP_NO_TICKET);
    return SSL_CLIENT_HELLO_SUCCESS;
}

// OpenSSL looks a TLS 1.3 ticket up one way per SSL, chosen by
// SSL_OP_NO_TICKET. In stateful mode a ticket that is not a 32-byte session ID
// was issued stateless (by an appliance sharing ticket_key_file, or here
// before the mode changed), so that connection decrypts it instead, and
// check_ticket_session puts the option back before its next ticket is issued:
// the client moves to a stateful ticket without a full handshake.
int route_stateless_ticket(SSL* ssl, int*, void*) {
    const unsigned char* psk = nullptr;
    std::size_t length = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &psk, &length) != 1)
        return SSL_CLIENT_HELLO_SUCCESS;
    // RFC 8446 4.2.11: identities<7..2^16-1>, the first identity<1..2^16-1>.
    if (length >= 4 && ((std::size_t{psk[2]} << 8) | psk[3]) != SSL_MAX_SSL_SESSION_ID_LENGTH)
        SSL_clear_options(ssl, SSL_OP_NO_TICKET);
    return SSL_CLIENT_HELLO_SUCCESS;
}

SSL_TICKET_RETURN check_ticket_session(SSL* ssl, SSL_SESSION* session, const unsigned char*, size_t,
                                       SSL_TICKET_STATUS status, void*) {
    if (context_of(ssl).options().stateful_tickets) SSL_set_options(ssl, SSL_OP_NO_TICKET);
    switch (status) {
        case SSL_TICKET_SUCCESS:
        case SSL_TICKET_SUCCESS_RENEW:
            if (!context_of(ssl).session_still_trusted(session))
                return SSL_TICKET_RETURN_IGNORE_RENEW;
            if (status == SSL_TICKET_SUCCESS && SSL_version(ssl) != TLS1_3_VERSION)
                keep_ticket_session(ssl, session);
            // TLS 1.3 clients treat tickets as single-use: every resumption
            // must hand out a fresh one, or the next visit is a full handshake.
            return status == SSL_TICKET_SUCCESS && SSL_version(ssl) != TLS1_3_VERSION
                       ? SSL_TICKET_RETURN_USE
                       : SSL_TICKET_RETURN_USE_RENEW;
        case SSL_TICKET_EMPTY:
        case SSL_TICKET_NO_DECRYPT:
            return SSL_TICKET_RETURN_IGNORE_RENEW;
        default:
            return SSL_TICKET_RETURN_IGNORE;
    }
}

std::span<const std::uint8_t> session_id(const SSL_SESSION* session) {
    unsigned int length = 0;
    const unsigned char* id = SSL_SESSION_get_id(session, &length);
    return {id, length};
}

// Session-ID resumption (and stateful TLS 1.3 tickets) get the same re-checks
// as stateless tickets, whichever cache the session comes from.
SSL_SESSION* get_trusted_cached_session(SSL* ssl, const unsigned char* id, int id_length,
                                        int* copy) {
    const auto& self = context_of(ssl);
    LocalSessionCache* local = self.local_sessions();
    const std::int64_t now = std::time(nullptr);
    const std::span<const std::uint8_t> key(
        id, id_length > 0 ? static_cast<std::size_t>(id_length) : 0);
    if (LocalSessionCache* kept = self.ticket_sessions();
        kept != nullptr && (SSL_get_options(ssl) & SSL_OP_NO_TICKET) != 0) {
        SSL_clear_options(ssl, SSL_OP_NO_TICKET);  // set for this lookup only
        SSL_SESSION* session = kept->find(key, now);
        if (session != nullptr) {
            if (!self.session_still_trusted(session)) {
                kept->remove(key);
                *copy = 0;
                return nullptr;
            }
            report(self, LocalSessionEvent::hit);
            *copy = 1;  // OpenSSL takes a reference of its own; the cache keeps its one
            return session;
        }
    }
    if (local != nullptr) {
        SSL_SESSION* session = local->find(key, now);
        // Whatever any worker removed from the shared cache (a fatal alert,
        // an unclean close, a timeout) ends here too.
        if (session != nullptr && !self.options().session_cache->contains(key, now)) {
            local->remove(key);
            session = nullptr;
        }
        if (session != nullptr) {
            if (!self.session_still_trusted(session)) {
                local->remove(key);
                *copy = 0;
                return nullptr;
            }
            report(self, LocalSessionEvent::hit);
            if (SSL_SESSION_get_protocol_version(session) != TLS1_3_VERSION) {
                *copy = 1;  // OpenSSL takes a reference of its own; the cache keeps its one
                return session;
            }
            // A TLS 1.3 ticket is used once: the resumption issues the next
            // one, so this slot is better spent on another session.
            SSL_SESSION_up_ref(session);
            local->remove(key);
            *copy = 0;  // OpenSSL gets the reference taken here
            return session;
        }
        report(self, LocalSessionEvent::miss);
    }
    SSL_SESSION* session = get_cached_session(ssl, id, id_length, copy);
    if (session != nullptr && !self.session_still_trusted(session)) {
        SSL_SESSION_free(session);
        return nullptr;
    }
    // A TLS 1.2 client offers the same ID again next time, so keep the
    // decoded copy, if OpenSSL will take it here (the shared cache serves
    // every listener: another listener's session has another ID context); a
    // TLS 1.3 resumption issues a new ticket, stored when made.
    if (session != nullptr && local != nullptr &&
        SSL_SESSION_get_protocol_version(session) == SSL_version(ssl) &&
        SSL_version(ssl) != TLS1_3_VERSION && self.owns_id_context(session) &&
        local->store(session, expiry_of(session), now)) {
        report(self, LocalSessionEvent::eviction);
    }
    return session;
}

int store_new_session_locally(SSL* ssl, SSL_SESSION* session) {
    store_new_session(ssl, session);
    const auto& self = context_of(ssl);
    if (LocalSessionCache* local = self.local_sessions();
        local != nullptr && looked_up_by_id(session, SSL_get_options(ssl)) &&
        local->store(session, expiry_of(session), std::time(nullptr))) {
        report(self, LocalSessionEvent::eviction);
    }
    return 0;  // the local cache took its own reference
}

void remove_session_everywhere(SSL_CTX* ctx, SSL_SESSION* session) {
    remove_cached_session(ctx, session);
    const auto* self =
        static_cast<const ServerTlsContext*>(SSL_CTX_get_ex_data(ctx, context_index()));
    if (self != nullptr && self->local_sessions() != nullptr)
        self->local_sessions()->remove(session_id(session));
    if (self != nullptr && self->ticket_sessions() != nullptr)
        self->ticket_sessions()->remove(session_id(session));
}

}  // namespace

bool ServerTlsContext::owns_id_context(const SSL_SESSION* session) const {
    unsigned int length = 0;
    const unsigned char* context = SSL_SESSION_get0_id_context(session, &length);
    return length == session_context_.size() &&
           std::equal(context, context + length, session_context_.begin());
}

bool ServerTlsContext::session_still_trusted(SSL_SESSION* session) const {
    X509* client = SSL_SESSION_get0_peer(session);
    if (client == nullptr) return true;  // no client certificate: nothing to re-check
    if (X509_cmp_time(X509_get0_notAfter(client), nullptr) < 0) {
        if (options_.events) options_.events->resumption_refused(ResumptionRefusal::expired);
        return false;
    }
    if (revokes(client)) {
        if (options_.events) options_.events->resumption_refused(ResumptionRefusal::revoked);
        return false;
    }
    // Under the hard policy a session resumes on a current OCSP answer only:
    // one issued by a worker or appliance that has since been told of a
    // revocation this worker has not heard of goes through a full handshake,
    // whose check asks the shared cache and the responder.
    if (policy_.ocsp != OcspCheck::off && policy_.ocsp_failure == OcspFailure::hard &&
        options_.ocsp != nullptr &&
        !options_.ocsp->has_current_answer(client, std::time(nullptr))) {
        if (options_.events) options_.events->resumption_refused(ResumptionRefusal::ocsp_unchecked);
        return false;
    }
    return true;
}

bool ServerTlsContext::revokes(X509* certificate) const {
    const X509_NAME* issuer = X509_get_issuer_name(certificate);
    for (const auto& crl : crls_) {
        if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), issuer) != 0) continue;
        X509_REVOKED* entry = nullptr;
        if (X509_CRL_get0_by_cert(crl.get(), &entry, certificate) == 1) return true;
    }
    if (policy_.ocsp == OcspCheck::off || options_.ocsp == nullptr) return false;
    // With "chain", a session (which keeps no chain) is refused when an
    // issuer its certificate was answered under has been revoked since.
    return policy_.ocsp == OcspCheck::chain ? options_.ocsp->known_revoked_along_chain(certificate)
                                            : options_.ocsp->known_revoked(certificate);
}

ServerTlsContext::ServerTlsContext(const TlsPolicy& policy, KeySource& keys,
                                   ServerTlsOptions options)
    : policy_(policy), options_(options), alpn_wire_(alpn_wire_format(policy.alpn)) {
    if (policy.certificates.empty()) throw TlsConfigError("no server certificate configured");
    const auto store =
        policy.client_auth == ClientAuth::none ? nullptr : build_trust_store(policy, crls_);
    if (store && policy.verified_chain_cache_entries > 0 && policy.trust_dir.empty()) {
        chain_cache_ = std::make_unique<VerifiedChainCache>(
            store.get(), policy.verified_chain_cache_entries, options_.events);
    }
    if (options_.stateful_tickets && options_.session_cache == nullptr)
        throw TlsConfigError("stateful tickets need a session cache to look them up in");
    if (options_.session_cache != nullptr && options_.local_session_entries > 0)
        local_sessions_ = std::make_unique<LocalSessionCache>(options_.local_session_entries);
    if (local_sessions_ && options_.tickets != nullptr && !options_.stateful_tickets)
        ticket_sessions_ = std::make_unique<LocalSessionCache>(options_.local_session_entries);
    session_context_ = session_context_of(policy);
    const auto& session_context = session_context_;
    const int min_version =
        policy.min_version == TlsVersion::tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    const int max_version =
        policy.max_version == TlsVersion::tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;

    auto new_context = [&]() {
        UniqueSslCtx ctx(SSL_CTX_new(TLS_server_method()));
        if (!ctx) fail("cannot create SSL_CTX");
        SSL_CTX_set_min_proto_version(ctx.get(), min_version);
        SSL_CTX_set_max_proto_version(ctx.get(), max_version);
        SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                           SSL_OP_NO_COMPRESSION | SSL_OP_SINGLE_ECDH_USE);
        // RELEASE_BUFFERS: an idle connection keeps no 34 KiB of record
        // buffers (docs/performance.md has its cost per handshake).
        // NO_AUTO_CHAIN: send exactly the configured chain, never certificates
        // OpenSSL would borrow from the client trust store.
        SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE |
                                        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                        SSL_MODE_NO_AUTO_CHAIN | SSL_MODE_RELEASE_BUFFERS);
        const std::string ciphers = policy.ciphers.empty() ? default_tls12_ciphers : policy.ciphers;
        if (SSL_CTX_set_cipher_list(ctx.get(), ciphers.c_str()) != 1)
            fail("ciphers \"" + ciphers + "\" rejected");
        if (!policy.ciphersuites.empty() &&
            SSL_CTX_set_ciphersuites(ctx.get(), policy.ciphersuites.c_str()) != 1) {
            fail("ciphersuites \"" + policy.ciphersuites + "\" rejected");
        }
        const std::string groups = policy.groups.empty() ? default_groups : policy.groups;
        if (SSL_CTX_set1_groups_list(ctx.get(), groups.c_str()) != 1)
            fail("groups \"" + groups + "\" rejected");
        // One TLS 1.3 ticket per handshake, not OpenSSL's default two: in
        // OpenSSL 3.0 each ticket re-decodes the session and the client's
        // certificates (~1.6M instructions per ticket, measured with callgrind).
        SSL_CTX_set_num_tickets(ctx.get(), 1);
        SSL_CTX_set_timeout(ctx.get(), policy.session_lifetime_s);
        if (policy.allow_psk_ke) SSL_CTX_set_options(ctx.get(), SSL_OP_ALLOW_NO_DHE_KEX);
        SSL_CTX_set_session_id_context(ctx.get(), session_context.data(),
                                       static_cast<unsigned int>(session_context.size()));
        SSL_CTX_set_ex_data(ctx.get(), context_index(), this);
        if (options_.tickets != nullptr)
            SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx.get(), ticket_key_callback);
        SSL_CTX_set_session_ticket_cb(ctx.get(), nullptr, check_ticket_session, nullptr);
        if (options_.stateful_tickets) {
            SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
            if (options_.tickets != nullptr)
                SSL_CTX_set_client_hello_cb(ctx.get(), route_stateless_ticket, nullptr);
        } else if (ticket_sessions_) {
            SSL_CTX_set_client_hello_cb(ctx.get(), resume_kept_ticket_session, nullptr);
        }
        if (options_.session_cache != nullptr) {
            attach_session_cache(ctx.get(), *options_.session_cache);
            SSL_CTX_sess_set_get_cb(ctx.get(), get_trusted_cached_session);
            if (local_sessions_) {
                SSL_CTX_sess_set_new_cb(ctx.get(), store_new_session_locally);
                SSL_CTX_sess_set_remove_cb(ctx.get(), remove_session_everywhere);
            }
        }
        if (store) {
            const int mode = policy.client_auth == ClientAuth::require
                                 ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                 : SSL_VERIFY_PEER;
            SSL_CTX_set_verify(ctx.get(), mode, verify_client_certificate);
            SSL_CTX_set_verify_depth(ctx.get(), policy.verify_depth);
            SSL_CTX_set1_cert_store(ctx.get(), store.get());
            if (chain_cache_) {
                SSL_CTX_set_cert_verify_callback(ctx.get(), VerifiedChainCache::verify_callback,
                                                 chain_cache_.get());
            }
            if (!policy.trust_file.empty()) {
                // The CA names in the CertificateRequest let clients pick the right certificate.
                STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(policy.trust_file.c_str());
                if (names) SSL_CTX_set_client_CA_list(ctx.get(), names);
                ERR_clear_error();
            }
        } else {
            SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
        }
        if (!alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(ctx.get(), select_alpn, &alpn_wire_);
        SSL_CTX_set_tlsext_servername_callback(ctx.get(), switch_context_for_sni);
        SSL_CTX_set_tlsext_servername_arg(ctx.get(), &groups_);
        return ctx;
    };

    bool asynchronous_keys = false;
    for (const auto& spec : policy.certificates) {
        auto chain = read_certificates(spec.chain_file);
        const auto names = names_of(spec, chain.front().get());
        auto group = std::find_if(groups_.begin(), groups_.end(),
                                  [&](const auto& g) { return g->names == names; });
        if (group == groups_.end()) {
            groups_.push_back(std::make_unique<SniGroup>(SniGroup{names, new_context(), {}, {}}));
            group = std::prev(groups_.end());
        }
        SSL_CTX* ctx = (*group)->ctx.get();
        auto key = keys.load(spec.key);
        const int key_type = EVP_PKEY_get_base_id(key.get());
        if (!(*group)->key_types.insert(key_type).second) {
            throw TlsConfigError(
                "certificate chain " + spec.chain_file +
                ": another certificate with the same key type already serves the same names");
        }
        if (SSL_CTX_use_certificate(ctx, chain.front().get()) != 1)
            fail("certificate chain " + spec.chain_file + ": leaf rejected");
        for (std::size_t i = 1; i < chain.size(); ++i) {
            if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1)
                fail("certificate chain " + spec.chain_file + ": intermediate rejected");
        }
        if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
            fail("key " + spec.key + " does not match certificate " + spec.chain_file);
        }
        asynchronous_keys |= keys.asynchronous(spec.key);
        if (!policy.ocsp_staple_dir.empty() && chain.size() > 1) {
            SSL_CTX_set_tlsext_status_cb(ctx, staple_ocsp_response);
            SSL_CTX_set_tlsext_status_arg(ctx, group->get());
            if (auto staple = kept_staple(policy.ocsp_staple_dir, SSL_CTX_get0_certificate(ctx),
                                          chain[1].get())) {
                (*group)->staples.push_back(std::move(*staple));
            }
        }
    }
    // The mode is copied into each SSL at SSL_new (SNI switches keep it), so
    // every group gets it when any key may pause. PEM-only listeners skip the
    // async job switch per handshake.
    // An OCSP lookup pauses the handshake the way an HSM signature does.
    if (policy.ocsp != OcspCheck::off &&
        (options_.ocsp == nullptr || options_.completions == nullptr))
        throw TlsConfigError(
            "tls.ocsp is on, and this worker started with no listener using it: turning OCSP "
            "checks on takes a restart");
    if (asynchronous_keys || policy.ocsp != OcspCheck::off)
        for (auto& group : groups_) SSL_CTX_set_mode(group->ctx.get(), SSL_MODE_ASYNC);
}

ServerTlsContext::~ServerTlsContext() = default;

UniqueSsl ServerTlsContext::new_session() const {
    UniqueSsl ssl(SSL_new(groups_.front()->ctx.get()));
    if (!ssl) fail("SSL_new");
    return ssl;
}

}  // namespace portcullis::crypto
