#include "mgmt/shared_stats.hpp"

#include <fmt/format.h>
#include <sys/mman.h>

#include <memory>
#include <system_error>

namespace portcullis::mgmt {

namespace {

template <typename T>
T* map_slots(std::size_t slots) {
    void* memory = ::mmap(nullptr, sizeof(T) * slots, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        throw std::system_error(errno, std::generic_category(), "mmap shared stats");
    T* first = static_cast<T*>(memory);
    for (std::size_t i = 0; i < slots; ++i) std::construct_at(&first[i]);
    return first;
}

template <typename T>
void unmap_slots(T* first, std::size_t slots) {
    std::destroy_n(first, slots);
    ::munmap(first, sizeof(T) * slots);
}

}  // namespace

SharedStats::SharedStats(std::size_t slots)
    : slots_(map_slots<dataplane::WorkerStats>(slots)), count_(slots) {
    try {
        hsm_slots_ = map_slots<hsm::HsmStats>(slots);
    } catch (...) {
        unmap_slots(slots_, count_);
        throw;
    }
    try {
        crl_slots_ = map_slots<FetchStats>(max_crl_sources + max_staple_sources);
    } catch (...) {
        unmap_slots(hsm_slots_, count_);
        unmap_slots(slots_, count_);
        throw;
    }
}

SharedStats::~SharedStats() {
    unmap_slots(crl_slots_, max_crl_sources + max_staple_sources);
    unmap_slots(hsm_slots_, count_);
    unmap_slots(slots_, count_);
}

std::string SharedStats::summary() const {
    using L = dataplane::ListenerStats;
    auto sum = [this](auto member) {
        std::uint64_t total = 0;
        for (std::size_t i = 0; i < count_; ++i)
            for (const auto& l : slots_[i].listeners) total += (l.*member).get();
        return total;
    };
    std::string rejected;
    std::uint64_t rejected_total = 0;
    for (int r = 1; r < crypto::reject_reason_count; ++r) {
        std::uint64_t n = 0;
        for (std::size_t i = 0; i < count_; ++i)
            for (const auto& l : slots_[i].listeners)
                n += l.handshakes_rejected[static_cast<std::size_t>(r)].get();
        if (n == 0) continue;
        rejected_total += n;
        rejected += fmt::format(" rejected.{}={}",
                                crypto::to_string(static_cast<crypto::RejectReason>(r)), n);
    }
    std::uint64_t restarts = 0;
    for (std::size_t i = 0; i < count_; ++i) restarts += slots_[i].restarts.get();
    return fmt::format(
        "accepted={} refused={} active={} handshakes_full={} handshakes_resumed={} "
        "handshakes_abandoned={} "
        "rejected_total={}{} "
        "upstream_connect_failures={} upstream_unavailable={} bytes_from_clients={} "
        "bytes_to_clients={} "
        "worker_restarts={}",
        sum(&L::connections_accepted), sum(&L::connections_refused), sum(&L::connections_active),
        sum(&L::handshakes_full), sum(&L::handshakes_resumed), sum(&L::handshakes_abandoned),
        rejected_total, rejected, sum(&L::upstream_connect_failures), sum(&L::upstream_unavailable),
        sum(&L::bytes_from_clients), sum(&L::bytes_to_clients), restarts);
}

}  // namespace portcullis::mgmt
