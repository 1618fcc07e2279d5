#include "crypto/key_completion_queue.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "base/os_error.hpp"

namespace portcullis::crypto {

KeyCompletionQueue::KeyCompletionQueue() : event_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (!event_) throw base::os_error("eventfd for key operation completions");
}

void KeyCompletionQueue::paused(std::shared_ptr<PendingKeyOperation> operation) {
    paused_ = std::move(operation);
}

void KeyCompletionQueue::completed(std::shared_ptr<PendingKeyOperation> operation) {
    {
        std::lock_guard lock(mutex_);
        done_.push_back(std::move(operation));
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(event_.get(), &one, sizeof one);
}

std::vector<std::shared_ptr<PendingKeyOperation>> KeyCompletionQueue::drain() {
    std::uint64_t count = 0;
    [[maybe_unused]] const auto n = ::read(event_.get(), &count, sizeof count);
    std::vector<std::shared_ptr<PendingKeyOperation>> done;
    std::lock_guard lock(mutex_);
    done.swap(done_);
    return done;
}

}  // namespace portcullis::crypto
