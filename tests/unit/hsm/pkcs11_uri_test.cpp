// RFC 7512 key URIs as operators write them, and the ones that must be refused.
#include "hsm/pkcs11_uri.hpp"

#include <gtest/gtest.h>

namespace portcullis::hsm {
namespace {

TEST(Pkcs11Uri, ParsesTokenObjectIdAndType) {
    const auto uri =
        Pkcs11Uri::parse("pkcs11:token=edge%20one;object=server-ec;id=%01%a2;type=private");
    EXPECT_EQ(uri.token, "edge one");
    EXPECT_EQ(uri.object, "server-ec");
    EXPECT_EQ(uri.id, (std::vector<std::uint8_t>{0x01, 0xa2}));
    EXPECT_EQ(uri.type, "private");
    EXPECT_EQ(uri.to_string(), "pkcs11:token=edge%20one;object=server-ec;id=%01%a2;type=private");
}

TEST(Pkcs11Uri, CanonicalFormIsStableAcrossAttributeOrder) {
    EXPECT_EQ(Pkcs11Uri::parse("pkcs11:object=k;token=t").to_string(),
              Pkcs11Uri::parse("pkcs11:token=t;type=private;object=k").to_string());
}

TEST(Pkcs11Uri, ToleratesInformationalAttributes) {
    const auto uri = Pkcs11Uri::parse(
        "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=1234;token=edge;"
        "object=k;slot-id=7");
    EXPECT_EQ(uri.token, "edge");
    ASSERT_TRUE(uri.slot_id.has_value());
    EXPECT_EQ(*uri.slot_id, 7u);
}

TEST(Pkcs11Uri, RefusesWhatCannotNameAServerKey) {
    const char* bad[] = {
        "file:/etc/key.pem",                         // not pkcs11
        "pkcs11:token=edge",                         // no object or id
        "pkcs11:object=k;type=cert",                 // not a private key
        "pkcs11:object=k;colour=blue",               // unknown attribute
        "pkcs11:object=k%zz",                        // bad escape
        "pkcs11:object=k;slot-id=seven",             // not a number
        "pkcs11:object=k;pin-value=1234",            // PIN in the path
        "pkcs11:object=k?pin-value=1234",            // PIN in the query
        "pkcs11:object=k?pin-source=file:/etc/pin",  // PIN source in the query
    };
    for (const char* text : bad) EXPECT_THROW(Pkcs11Uri::parse(text), Pkcs11UriError) << text;
}

TEST(Pkcs11Uri, PinErrorsDoNotEchoThePin) {
    try {
        Pkcs11Uri::parse("pkcs11:object=k;pin-value=s3cr3t-pin");
        FAIL() << "accepted a PIN";
    } catch (const Pkcs11UriError& e) {
        EXPECT_EQ(std::string(e.what()).find("s3cr3t-pin"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace portcullis::hsm
