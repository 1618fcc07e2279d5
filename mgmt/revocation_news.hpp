// The certificates one worker learned are revoked by an OCSP answer, told to
// the other workers of this appliance, so that every worker ends its live
// connections of that certificate and stops resuming its sessions (a fetched
// CRL reaches them all through the files it is kept in; an answer one worker
// fetched during a handshake would otherwise stay that worker's).
//
// One shared mapping made before fork holds a ring per worker slot: a worker
// writes only its own ring (publish), and reads every ring on its tick (a
// Reader per process): a few atomic loads when nothing is new, no lock, no
// syscall. A ring keeps the last `ring_entries - 1` revocations of its writer; a
// reader that falls further behind (a worker stopped for that long) logs how
// many it missed, and a worker started later reads what the rings still hold.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace portcullis::mgmt {

class RevocationNews {
  public:
    using Digest = std::array<unsigned char, 32>;  // SHA-256 of the certificate
    static constexpr std::size_t ring_entries = 1024;

    explicit RevocationNews(std::size_t workers);
    ~RevocationNews();
    RevocationNews(const RevocationNews&) = delete;
    RevocationNews& operator=(const RevocationNews&) = delete;

    // Worker `index`'s side; only that worker calls it.
    void publish(std::size_t index, const std::vector<Digest>& digests);

    // What the rings of all workers hold past this reader's position.
    class Reader {
      public:
        explicit Reader(const RevocationNews& news);  // starts at the oldest entry kept
        std::vector<Digest> poll();
        std::uint64_t missed() const { return missed_; }

      private:
        const RevocationNews* news_;
        std::vector<std::uint64_t> next_;  // per ring
        std::uint64_t missed_ = 0;
    };

    struct Ring;

  private:
    Ring* rings_;
    std::size_t count_;
};

}  // namespace portcullis::mgmt
