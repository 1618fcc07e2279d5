#include "dataplane/access_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace portcullis::dataplane {

AccessLog::AccessLog(const std::string& target) {
    if (target.empty()) return;
    if (target == "-") {
        fd_ = STDERR_FILENO;
        return;
    }
    owned_.reset(::open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!owned_)
        throw std::system_error(errno, std::generic_category(), "open access log " + target);
    fd_ = owned_.get();
}

void AccessLog::write(std::string_view line) {
    if (fd_ < 0) return;
    ssize_t n;
    do n = ::write(fd_, line.data(), line.size());
    while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(line.size())) ++failed_writes_;
}

}  // namespace portcullis::dataplane
