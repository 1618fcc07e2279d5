#include "dataplane/socket_address.hpp"

#include <gtest/gtest.h>

namespace portcullis::dataplane {
namespace {

TEST(SocketAddress, ParsesNumericForms) {
    struct Case {
        const char* text;
        int family;
        const char* host;
        int port;
        const char* printed;
    };
    for (const auto& c :
         {Case{"192.0.2.1:443", AF_INET, "192.0.2.1", 443, "192.0.2.1:443"},
          Case{"*:8443", AF_INET, "0.0.0.0", 8443, "0.0.0.0:8443"},
          Case{"[2001:db8::1]:443", AF_INET6, "2001:db8::1", 443, "[2001:db8::1]:443"},
          Case{"[::]:1", AF_INET6, "::", 1, "[::]:1"},
          Case{"127.0.0.1:65535", AF_INET, "127.0.0.1", 65535, "127.0.0.1:65535"}}) {
        const auto a = SocketAddress::parse(c.text);
        ASSERT_TRUE(a) << c.text;
        EXPECT_EQ(a->family(), c.family) << c.text;
        EXPECT_EQ(a->host(), c.host) << c.text;
        EXPECT_EQ(a->port(), c.port) << c.text;
        EXPECT_EQ(a->to_string(), c.printed) << c.text;
    }
}

TEST(SocketAddress, KnowsTheWildcards) {
    for (const char* text : {"*:443", "0.0.0.0:443", "[::]:443"})
        EXPECT_TRUE(SocketAddress::parse(text)->is_wildcard()) << text;
    for (const char* text : {"127.0.0.1:443", "192.0.2.1:443", "[::1]:443", "[::ffff:0.0.0.0]:443"})
        EXPECT_FALSE(SocketAddress::parse(text)->is_wildcard()) << text;
    EXPECT_FALSE(SocketAddress{}.is_wildcard()) << "no address at all is not a wildcard";
}

TEST(SocketAddress, RejectsEverythingElse) {
    for (const char* text :
         {"", "443", "192.0.2.1", "192.0.2.1:", "192.0.2.1:0", "192.0.2.1:65536", "192.0.2.1:44x",
          "localhost:443", "2001:db8::1:443", "[2001:db8::1]", "[2001:db8::1]443", "[nope]:443",
          "256.0.0.1:443", "[192.0.2.1]:443", " 192.0.2.1:443"}) {
        EXPECT_FALSE(SocketAddress::parse(text)) << "accepted '" << text << "'";
    }
}

}  // namespace
}  // namespace portcullis::dataplane
