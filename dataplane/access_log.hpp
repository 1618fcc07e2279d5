// The audit trail: one line per connection, appended with a single write()
// so lines from several workers never interleave. Opened by each worker
// after fork; a failed write is counted, never fatal to the connection.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/unique_fd.hpp"

namespace portcullis::dataplane {

class AccessLog {
  public:
    AccessLog() = default;
    // "" = off, "-" = stderr, otherwise a file opened for appending. Throws
    // std::system_error when the file cannot be opened.
    explicit AccessLog(const std::string& target);

    bool enabled() const { return fd_ >= 0; }
    void write(std::string_view line);  // `line` ends with '\n'
    std::uint64_t failed_writes() const { return failed_writes_; }

  private:
    base::UniqueFd owned_;
    int fd_ = -1;
    std::uint64_t failed_writes_ = 0;
};

}  // namespace portcullis::dataplane
