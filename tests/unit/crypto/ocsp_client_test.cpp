// OcspClient's memory of revocations: a revoked answer it fetched is handed
// to its owner once (to end live connections and tell the other workers); a
// revocation it is told of is kept; and a resumption may go on only on a
// current answer (has_current_answer). Lookups here block (no async job).
#include "crypto/ocsp_client.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <ctime>
#include <string>
#include <thread>

#include "tests/support/test_pki.hpp"

namespace portcullis::testing {
namespace {

using Status = OcspResponseOptions::Status;

class OcspClientMemory : public ::testing::Test {
  protected:
    crypto::OcspClient client_answering(const std::string& der) {
        crypto::OcspTransport transport;
        transport.post = [der, this](const std::string&, std::string_view,
                                     std::chrono::milliseconds) {
            ++posts;
            return crypto::OcspHttpAnswer{"", 200, der};
        };
        crypto::OcspClientSettings settings;
        settings.threads = 1;
        return crypto::OcspClient(std::move(transport), settings);
    }
    std::string answer(Status status) {
        OcspResponseOptions o;
        o.status = status;
        return ca.ocsp_response_der(leaf.cert.get(), o);
    }
    crypto::OcspVerdict check(crypto::OcspClient& client) {
        return client.check(leaf.cert.get(), ca.cert(), "", false, nullptr);
    }

    CertificateAuthority root = CertificateAuthority::root("OCSP Client Test Root");
    CertificateAuthority ca = root.intermediate("OCSP Client Test CA");
    IssuedCert leaf = ca.issue([] {
        CertOptions o;
        o.common_name = "partner";
        o.ocsp_url = "http://127.0.0.1:9/";
        return o;
    }());
    std::atomic<int> posts{0};  // counted on the lookup thread
};

TEST_F(OcspClientMemory, AFetchedRevocationIsHandedOnOnce) {
    auto client = client_answering(answer(Status::revoked));
    EXPECT_FALSE(client.has_current_answer(leaf.cert.get(), std::time(nullptr)));
    EXPECT_EQ(check(client).kind, crypto::OcspVerdict::Kind::revoked);
    crypto::OcspClient::CertDigest digest;
    ASSERT_TRUE(crypto::OcspClient::digest_of(leaf.cert.get(), digest));
    EXPECT_EQ(client.take_learned_revocations(), std::vector({digest}));
    EXPECT_TRUE(client.take_learned_revocations().empty());
    // Answered from memory now: nothing new to hand on, no second request.
    const auto again = check(client);
    EXPECT_EQ(again.kind, crypto::OcspVerdict::Kind::revoked);
    EXPECT_EQ(again.source, crypto::OcspSource::memory);
    EXPECT_TRUE(client.take_learned_revocations().empty());
    EXPECT_EQ(posts.load(), 1);
    EXPECT_TRUE(client.known_revoked(leaf.cert.get()));
    EXPECT_TRUE(client.has_current_answer(leaf.cert.get(), std::time(nullptr) + 86400))
        << "a revocation is final";
}

TEST_F(OcspClientMemory, AGoodAnswerIsCurrentUntilItsNextUpdateAndNothingToHandOn) {
    auto client = client_answering(answer(Status::good));
    EXPECT_EQ(check(client).kind, crypto::OcspVerdict::Kind::good);
    EXPECT_TRUE(client.take_learned_revocations().empty());
    const auto now = std::time(nullptr);
    EXPECT_TRUE(client.has_current_answer(leaf.cert.get(), now));
    EXPECT_FALSE(client.has_current_answer(leaf.cert.get(), now + 3601));  // nextUpdate: +3600 s
    EXPECT_FALSE(client.known_revoked(leaf.cert.get()));
}

TEST_F(OcspClientMemory, ARevocationToldByAnotherWorkerOverridesAGoodAnswer) {
    auto client = client_answering(answer(Status::good));
    EXPECT_EQ(check(client).kind, crypto::OcspVerdict::Kind::good);
    crypto::OcspClient::CertDigest digest;
    ASSERT_TRUE(crypto::OcspClient::digest_of(leaf.cert.get(), digest));
    EXPECT_TRUE(client.learn_revoked(digest));
    EXPECT_FALSE(client.learn_revoked(digest)) << "told twice, new twice";
    EXPECT_TRUE(client.known_revoked(leaf.cert.get()));
    EXPECT_TRUE(client.take_learned_revocations().empty()) << "told, not learned: not handed on";
    const auto verdict = check(client);
    EXPECT_EQ(verdict.kind, crypto::OcspVerdict::Kind::revoked);
    EXPECT_EQ(verdict.source, crypto::OcspSource::memory);
    EXPECT_EQ(posts.load(), 1);
}

TEST_F(OcspClientMemory, ARefreshAsksOnlyWithoutACurrentAnswerAndNeverWaits) {
    auto client = client_answering(answer(Status::revoked));
    client.refresh(leaf.cert.get(), ca.cert(), "", false);
    client.refresh(leaf.cert.get(), ca.cert(), "", false);  // one lookup per certificate at a time
    std::string why;
    for (int i = 0; i < 400 && !client.known_revoked(leaf.cert.get()); ++i) {
        EXPECT_EQ(client.collect_refreshes(why), 0u) << why;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_TRUE(client.known_revoked(leaf.cert.get()));
    EXPECT_EQ(posts.load(), 1);
    crypto::OcspClient::CertDigest digest;
    ASSERT_TRUE(crypto::OcspClient::digest_of(leaf.cert.get(), digest));
    EXPECT_EQ(client.take_learned_revocations(), std::vector({digest}))
        << "a refresh's revocation is handed on like a handshake's";
    client.refresh(leaf.cert.get(), ca.cert(), "", false);  // current now: nothing to ask
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(client.collect_refreshes(why), 0u);
    EXPECT_EQ(posts.load(), 1);
}

TEST_F(OcspClientMemory, AGoodAnswerArrivingAfterARevocationDoesNotUndoIt) {
    auto client = client_answering(answer(Status::good));
    client.refresh(leaf.cert.get(), ca.cert(), "", false);
    for (int i = 0; i < 400 && posts < 1; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    crypto::OcspClient::CertDigest digest;
    ASSERT_TRUE(crypto::OcspClient::digest_of(leaf.cert.get(), digest));
    EXPECT_TRUE(client.learn_revoked(digest));  // told while the lookup was out
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::string why;
    EXPECT_EQ(client.collect_refreshes(why), 0u) << why;
    EXPECT_TRUE(client.known_revoked(leaf.cert.get())) << "the late good answer won";
    EXPECT_EQ(check(client).kind, crypto::OcspVerdict::Kind::revoked);
}

TEST_F(OcspClientMemory, ARevokedIssuerIsFoundAlongTheChainItsLeafWasAnsweredUnder) {
    auto client = client_answering(answer(Status::good));
    EXPECT_EQ(check(client).kind, crypto::OcspVerdict::Kind::good);
    crypto::OcspClient::CertDigest issuer;
    ASSERT_TRUE(crypto::OcspClient::digest_of(ca.cert(), issuer));
    EXPECT_FALSE(client.known_revoked_along_chain(leaf.cert.get()));
    EXPECT_TRUE(client.learn_revoked(issuer));
    EXPECT_FALSE(client.known_revoked(leaf.cert.get()));
    EXPECT_TRUE(client.known_revoked_along_chain(leaf.cert.get()))
        << "a session under a revoked intermediate must not resume";
}

TEST_F(OcspClientMemory, AFailedRefreshIsCountedAndLeavesNoAnswer) {
    auto client = client_answering("not DER");
    client.refresh(leaf.cert.get(), ca.cert(), "", false);
    std::string why;
    std::size_t failed = 0;
    for (int i = 0; i < 400 && failed == 0; ++i) {
        failed += client.collect_refreshes(why);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(failed, 1u);
    EXPECT_NE(why.find("response refused"), std::string::npos) << why;
    EXPECT_FALSE(client.has_current_answer(leaf.cert.get(), std::time(nullptr)));
    // Not in flight any more: the next refresh asks again.
    client.refresh(leaf.cert.get(), ca.cert(), "", false);
    for (int i = 0; i < 400 && posts < 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(posts.load(), 2);
}

}  // namespace
}  // namespace portcullis::testing
