#include "mgmt/child_process.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <exception>

namespace portcullis::mgmt {
namespace {

void enter_child(const ChildSetup& setup) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    for (base::UniqueFd* fd : setup.inherited) fd->reset();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // The supervisor died between fork and prctl: nobody would send the signal.
    if (::getppid() != setup.supervisor) ::raise(SIGTERM);
}

}  // namespace

pid_t fork_child(const ChildSetup& setup, const std::function<int()>& body) {
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    enter_child(setup);
    int code = 1;
    try {
        code = body();
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
    }
    spdlog::default_logger()->flush();
    ::_exit(code);
}

}  // namespace portcullis::mgmt
