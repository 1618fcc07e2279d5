#include "mgmt/privileges.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <system_error>

#include "base/unique_fd.hpp"

namespace portcullis::mgmt {
namespace {

[[noreturn]] void fail(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

int last_capability() {
    std::ifstream file("/proc/sys/kernel/cap_last_cap");
    int last = CAP_LAST_CAP;
    file >> last;
    return last;
}

}  // namespace

void drop_privileges(const std::optional<RunAs>& run_as, std::string_view process) {
    if (run_as && ::geteuid() == 0) {
        // While still root (CAP_SETPCAP): no later exec could regain any capability.
        for (int cap = 0; cap <= last_capability(); ++cap) {
            if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
                fail("prctl(PR_CAPBSET_DROP)");
        }
        const pid_t parent = ::getppid();
        const gid_t gid = run_as->gid;
        if (::setgroups(1, &gid) != 0) fail("setgroups");
        if (::setresgid(gid, gid, gid) != 0) fail("setresgid " + run_as->group);
        // Leaving uid 0 clears the permitted, effective and ambient sets.
        if (::setresuid(run_as->uid, run_as->uid, run_as->uid) != 0)
            fail("setresuid " + run_as->user);
        uid_t r = 0, e = 0, s = 0;
        if (::getresuid(&r, &e, &s) != 0 || r != run_as->uid || e != run_as->uid ||
            s != run_as->uid || ::setuid(0) == 0) {
            errno = EPERM;
            fail("the switch to " + run_as->user + " did not hold");
        }
        // A change of credentials clears the parent-death signal that ties
        // the process to the supervisor (mgmt/child_process.hpp): set it again.
        if (::prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) != 0) fail("prctl(PR_SET_PDEATHSIG)");
        if (::getppid() != parent) ::raise(SIGTERM);
        spdlog::info("{} runs as {}:{} (uid {}, gid {}) without capabilities", process,
                     run_as->user, run_as->group, run_as->uid, run_as->gid);
    } else if (run_as && ::geteuid() != run_as->uid) {
        spdlog::info("{} keeps uid {}: only root can switch to workers.user {}", process,
                     ::geteuid(), run_as->user);
    }
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("prctl(PR_SET_NO_NEW_PRIVS)");
}

void prepare_access_log(const std::string& path, const std::optional<RunAs>& run_as) {
    if (path.empty() || path == "-" || !run_as || ::geteuid() != 0) return;
    base::UniqueFd file(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!file) fail("access log " + path);
    struct stat status{};
    if (::fstat(file.get(), &status) == 0 && status.st_uid == 0 &&
        ::fchown(file.get(), run_as->uid, run_as->gid) != 0)
        fail("chown of the access log " + path + " to " + run_as->user);
}

}  // namespace portcullis::mgmt
