#include "mgmt/ticket_rotation.hpp"

#include <spdlog/spdlog.h>

#include <ctime>
#include <exception>
#include <utility>

namespace portcullis::mgmt {
namespace {

// Generated ticket keys kept: current + previous (one more period of decryption).
constexpr std::size_t generated_ticket_keys = 2;

std::int64_t unix_now() {
    return static_cast<std::int64_t>(::time(nullptr));
}

bool same_keys(const std::vector<crypto::TicketKey>& a, const std::vector<crypto::TicketKey>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].bytes() != b[i].bytes()) return false;
    return true;
}

}  // namespace

TicketKeyRotation::TicketKeyRotation(ControlBlock& control, const ResumptionSettings& settings)
    : control_(control), settings_(settings) {
    if (!settings_.ticket_key_file.empty()) {
        install_file_keys(crypto::read_ticket_key_file(settings_.ticket_key_file));
    } else {
        keys_ = {crypto::TicketKey::random()};
        publish_generated(false);
    }
    schedule();
}

void TicketKeyRotation::rotate() {
    schedule();
    if (!settings_.ticket_key_file.empty()) {
        try {
            install_file_keys(crypto::read_ticket_key_file(settings_.ticket_key_file));
        } catch (const std::exception& e) {
            spdlog::error("ticket key file not re-read, keeping the current keys: {}", e.what());
        }
        return;
    }
    keys_.insert(keys_.begin(), crypto::TicketKey::random());
    if (keys_.size() > generated_ticket_keys) keys_.resize(generated_ticket_keys);
    publish_generated(true);
    spdlog::debug("ticket key rotated");
}

void TicketKeyRotation::reload(const ResumptionSettings& fresh,
                               std::vector<crypto::TicketKey> file_keys) {
    const bool source_changed = fresh.ticket_key_file != settings_.ticket_key_file;
    const bool period_changed = fresh.ticket_rotation_s != settings_.ticket_rotation_s;
    settings_ = fresh;
    if (!file_keys.empty()) {
        install_file_keys(std::move(file_keys));
    } else if (source_changed) {
        keys_ = {crypto::TicketKey::random()};
        publish_generated(true);
    }
    if (period_changed || source_changed) schedule();
}

void TicketKeyRotation::schedule() {
    next_rotation_ = Clock::now() + std::chrono::seconds(settings_.ticket_rotation_s);
}

void TicketKeyRotation::install_file_keys(std::vector<crypto::TicketKey> keys) {
    if (same_keys(keys, keys_)) return;
    const bool new_current = keys_.empty() || keys.front().bytes() != keys_.front().bytes();
    if (new_current) created_ = unix_now();
    keys_ = std::move(keys);
    control_.publish_ticket_keys(keys_, created_, new_current);
    spdlog::info("ticket keys loaded from {}: {} keys", settings_.ticket_key_file, keys_.size());
}

void TicketKeyRotation::publish_generated(bool new_current) {
    created_ = unix_now();
    control_.publish_ticket_keys(keys_, created_, new_current);
}

}  // namespace portcullis::mgmt
