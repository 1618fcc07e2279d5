// The one way a failed system call becomes an exception: errno and what was
// being attempted, as std::system_error. Call it right after the failing call,
// before anything can overwrite errno.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>

namespace portcullis::base {

inline std::system_error os_error(const std::string& what) {
    return {errno, std::generic_category(), what};
}

}  // namespace portcullis::base
