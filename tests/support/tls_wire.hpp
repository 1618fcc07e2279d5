// The wire between an in-memory OpenSSL client (an SSL over two BIO_s_mem)
// and the server's TLS core, for unit tests that drive a handshake without a
// socket. Each call moves everything waiting in one direction and says
// whether anything moved; the caller decides when the exchange is over.
#pragma once

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "crypto/tls_connection.hpp"

namespace portcullis::testing {

// What the client wrote, into the server's inbound queue (which must have room).
inline bool client_to_server(SSL* client, crypto::TlsConnection& server) {
    bool moved = false;
    char buffer[16384];
    int n;
    while ((n = BIO_read(SSL_get_wbio(client), buffer, sizeof buffer)) > 0) {
        std::size_t copied = 0;
        while (copied < static_cast<std::size_t>(n)) {
            auto space = server.inbound_space();
            if (space.empty()) {
                ADD_FAILURE() << "the server's inbound queue is full";
                return moved;
            }
            const auto chunk = std::min(space.size(), static_cast<std::size_t>(n) - copied);
            std::memcpy(space.data(), buffer + copied, chunk);
            server.commit_inbound(chunk);
            copied += chunk;
        }
        moved = true;
    }
    return moved;
}

// What the server wrote, into the client's read BIO.
inline bool server_to_client(crypto::TlsConnection& server, SSL* client) {
    bool moved = false;
    for (auto out = server.outbound(); !out.empty(); out = server.outbound()) {
        BIO_write(SSL_get_rbio(client), out.data(), static_cast<int>(out.size()));
        server.consume_outbound(out.size());
        moved = true;
    }
    return moved;
}

}  // namespace portcullis::testing
