// The glibc tunables a worker's heap runs with, set by re-executing the
// process once at start (glibc reads GLIBC_TUNABLES only when a process
// starts, and no mallopt() reaches these).
//
// glibc.malloc.tcache_count: the per-thread cache keeps 7 free blocks of each
// small size by default. A TLS handshake allocates and frees hundreds of
// small blocks in bursts, so most of them overflow the cache into the
// fastbins and bins, and every large request (a record buffer) first
// consolidates those fastbins. With 256 a size, OpenSSL's allocations of one
// handshake are served from the cache: 2% fewer instructions and 3-4% less
// CPU time per TLS 1.3 handshake (docs/performance.md, "Allocators"). The
// cost is what the cache may hold per thread: at most 256 blocks of each of
// its 64 sizes (16 to 1032 bytes), 8.4 MiB if every size filled, against
// 0.23 MiB at 7; in practice the few sizes a handshake uses.
//
// An operator's own glibc.malloc.tcache_count in GLIBC_TUNABLES wins.
#pragma once

#include <limits.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace portcullis::base {

inline constexpr std::string_view kTcacheCountTunable = "glibc.malloc.tcache_count";
inline constexpr std::string_view kWorkerTcacheCount = "256";

// What GLIBC_TUNABLES should be, given its current value; empty when it
// already names the cache's count.
inline std::string with_worker_tunables(std::string_view current) {
    if (current.find(std::string(kTcacheCountTunable) + "=") != std::string_view::npos) return {};
    std::string tunable = std::string(kTcacheCountTunable) + "=" + std::string(kWorkerTcacheCount);
    return current.empty() ? tunable : std::string(current) + ":" + tunable;
}

// Re-executes this program with the worker's tunables added to
// GLIBC_TUNABLES, unless it already names them. Returns when there is
// nothing to do, or when exec failed (the environment is then as it was and
// the process runs on glibc's defaults, and says so on stderr). Valgrind cannot follow the exec, so
// under it, and in a secure-execution start, the process runs with the
// GLIBC_TUNABLES it was given.
inline void reexec_with_worker_tunables(char** argv) {
    // A set-user-ID or file-capability start (AT_SECURE) has glibc erase
    // the tunable again, and each exec would ask for another.
    if (::getauxval(AT_SECURE) != 0) return;
    const char* preload = std::getenv("LD_PRELOAD");
    if (preload != nullptr && std::string_view(preload).find("vgpreload") != std::string_view::npos)
        return;
    const char* current = std::getenv("GLIBC_TUNABLES");
    const std::string wanted = with_worker_tunables(current ? current : "");
    if (wanted.empty()) return;
    // The kernel names a process after the path it was executed by, so the
    // binary's own path, not /proc/self/exe (which would name it "exe").
    char self[PATH_MAX];
    const ssize_t length = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) return;
    self[length] = '\0';
    const std::string before = current ? current : "";
    if (::setenv("GLIBC_TUNABLES", wanted.c_str(), 1) != 0) return;
    ::execv(self, argv);
    const int error = errno;
    if (current != nullptr)
        ::setenv("GLIBC_TUNABLES", before.c_str(), 1);
    else
        ::unsetenv("GLIBC_TUNABLES");
    std::fprintf(stderr, "%s: running with glibc's heap defaults: re-executing %s failed: %s\n",
                 argv[0], self, std::strerror(error));
}

}  // namespace portcullis::base
