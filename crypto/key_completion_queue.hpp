// The KeyCompletionSink a worker owns: the thread that finished a key
// operation appends it to a mutex-guarded list and bumps an eventfd the worker
// polls (its epoll, or a DPDK lcore's poll loop). One lock per finished
// operation, never per packet. completed() runs on any thread; paused(),
// take_paused(), fd() and drain() on the owning worker's thread only (one
// handshake runs at a time there, so one paused slot is enough).
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "base/unique_fd.hpp"
#include "crypto/pending_key_operation.hpp"

namespace portcullis::crypto {

class KeyCompletionQueue final : public KeyCompletionSink {
  public:
    KeyCompletionQueue();
    int fd() const { return event_.get(); }
    void paused(std::shared_ptr<PendingKeyOperation> operation) override;
    void completed(std::shared_ptr<PendingKeyOperation> operation) override;
    // After handshake() returned Step::key_operation_pending: the operation it
    // paused on, or null if OpenSSL paused for another reason (no async job
    // free: simply call handshake() again).
    std::shared_ptr<PendingKeyOperation> take_paused() { return std::move(paused_); }
    // Everything finished since the last call; clears the eventfd.
    std::vector<std::shared_ptr<PendingKeyOperation>> drain();

  private:
    std::shared_ptr<PendingKeyOperation> paused_;
    base::UniqueFd event_;
    std::mutex mutex_;
    std::vector<std::shared_ptr<PendingKeyOperation>> done_;
};

}  // namespace portcullis::crypto
