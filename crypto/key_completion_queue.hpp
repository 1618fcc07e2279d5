// Where a session thread hands a finished signature back to the worker that
// asked for it: a mutex-guarded list and an eventfd the worker polls (its
// epoll today, a DPDK lcore's poll loop later). One lock per finished
// signature, never per packet.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "base/unique_fd.hpp"

namespace portcullis::hsm {

struct SignOperation;

class CompletionQueue {
  public:
    CompletionQueue();
    int fd() const { return event_.get(); }
    void push(std::shared_ptr<SignOperation> op);
    // Everything finished since the last call; clears the eventfd.
    std::vector<std::shared_ptr<SignOperation>> drain();

  private:
    base::UniqueFd event_;
    std::mutex mutex_;
    std::vector<std::shared_ptr<SignOperation>> done_;
};

}  // namespace portcullis::hsm
