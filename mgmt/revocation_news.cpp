#include "mgmt/revocation_news.hpp"

#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <system_error>

namespace portcullis::mgmt {

// Atomic words: a reader may copy an entry its writer is overwriting; the
// published count, read again after the copy, tells whether that happened.
// Each word is stored with release and loaded with acquire, so a reader
// that saw a word of an overwrite also sees the count that allowed it (the
// sequence lock's ordering without fences, which ThreadSanitizer does not
// model).
struct RevocationNews::Ring {
    std::atomic<std::uint64_t> published{0};
    std::array<std::array<std::atomic<std::uint64_t>, 4>, ring_entries> entries{};
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);  // shared across processes

namespace {
// The entry after the newest may be half overwritten by the next publish.
constexpr std::uint64_t readable = RevocationNews::ring_entries - 1;
}  // namespace

RevocationNews::RevocationNews(std::size_t workers) : count_(workers) {
    void* memory = ::mmap(nullptr, sizeof(Ring) * count_, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        throw std::system_error(errno, std::generic_category(), "mmap revocation news");
    rings_ = static_cast<Ring*>(memory);
    for (std::size_t i = 0; i < count_; ++i) std::construct_at(&rings_[i]);
}

RevocationNews::~RevocationNews() {
    std::destroy_n(rings_, count_);
    ::munmap(rings_, sizeof(Ring) * count_);
}

void RevocationNews::publish(std::size_t index, const std::vector<Digest>& digests) {
    if (index >= count_) return;
    auto& ring = rings_[index];
    std::uint64_t at = ring.published.load(std::memory_order_relaxed);
    for (const auto& digest : digests) {
        auto& entry = ring.entries[at % ring_entries];
        for (std::size_t w = 0; w < entry.size(); ++w) {
            std::uint64_t word;
            std::memcpy(&word, digest.data() + w * sizeof word, sizeof word);
            entry[w].store(word, std::memory_order_release);
        }
        ring.published.store(++at, std::memory_order_release);
    }
}

RevocationNews::Reader::Reader(const RevocationNews& news) : news_(&news), next_(news.count_) {
    for (std::size_t i = 0; i < news.count_; ++i) {
        const auto published = news.rings_[i].published.load(std::memory_order_acquire);
        next_[i] = published > readable ? published - readable : 0;
    }
}

std::vector<RevocationNews::Digest> RevocationNews::Reader::poll() {
    std::vector<Digest> out;
    for (std::size_t i = 0; i < next_.size(); ++i) {
        const auto& ring = news_->rings_[i];
        const auto published = ring.published.load(std::memory_order_acquire);
        auto& next = next_[i];
        if (published == next) continue;
        if (published - next > readable) {
            const auto lost = published - next - readable;
            missed_ += lost;
            spdlog::error(
                "revocation news: {} OCSP revocations of worker {} went by unread; "
                "those partners' connections on this worker end when it checks them",
                lost, i);
            next = published - readable;
        }
        for (; next < published; ++next) {
            const auto& entry = ring.entries[next % ring_entries];
            Digest digest;
            for (std::size_t w = 0; w < entry.size(); ++w) {
                const std::uint64_t word = entry[w].load(std::memory_order_acquire);
                std::memcpy(digest.data() + w * sizeof word, &word, sizeof word);
            }
            // Perhaps overwritten while copied: the writer has come round to this entry.
            if (ring.published.load(std::memory_order_acquire) - next >= ring_entries) {
                ++missed_;
                spdlog::error(
                    "revocation news: an OCSP revocation of worker {} was overwritten "
                    "while read",
                    i);
                continue;
            }
            out.push_back(digest);
        }
    }
    return out;
}

}  // namespace portcullis::mgmt
