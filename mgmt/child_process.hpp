// The one way the supervisor forks a process (worker, admin, the reload's
// TLS check): in the child, before anything else runs, the child's life is
// tied to the supervisor's (PR_SET_PDEATHSIG: a supervisor killed outright
// must not leave unsupervised processes holding the ports), the
// supervisor's descriptors it must not keep are closed, and the signal mask
// the supervisor set for itself (its signals are blocked and read through a
// signalfd) is emptied. Dispositions stay as inherited: the supervisor
// installs no handlers, and SIGPIPE stays ignored as main() set it.
//
// It does not exec: the child keeps the supervisor's memory (configuration,
// shared mappings) and runs `body` in it, then exits with its code without
// running the parent's destructors or atexit handlers.
#pragma once

#include <sys/types.h>

#include <functional>
#include <vector>

#include "base/unique_fd.hpp"

namespace portcullis::mgmt {

struct ChildSetup {
    pid_t supervisor = 0;                    // the parent the child must not outlive
    std::vector<base::UniqueFd*> inherited;  // closed in the child (they are the parent's)
};

// Forks; the child runs `body` after the setup above and _exits with its
// result. Returns the child's pid, or -1 with errno set when fork fails.
pid_t fork_child(const ChildSetup& setup, const std::function<int()>& body);

}  // namespace portcullis::mgmt
