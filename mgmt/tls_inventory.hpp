// The certificates and CRLs a configuration serves with, and when each stops
// being valid: read by the admin process for /status and the expiry metrics,
// so operators renew before clients fail.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mgmt/config.hpp"

namespace portcullis::mgmt {

struct CertificateInfo {
    std::string file;
    std::string subject;
    std::int64_t not_after_unix = 0;
};

struct CrlInfo {
    std::string file;
    std::string issuer;
    std::int64_t last_update_unix = 0;
    std::int64_t next_update_unix = 0;  // 0 = the CRL carries no nextUpdate
};

struct ListenerInventory {
    std::string name;
    std::vector<CertificateInfo> certificates;  // server leaf certificates
    std::vector<CrlInfo> crls;
    std::vector<std::string> problems;  // files that could not be read now
};

std::vector<ListenerInventory> read_tls_inventory(const Config& config);

}  // namespace portcullis::mgmt
