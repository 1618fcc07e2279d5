// Least privilege, read back from /proc as an auditor would: with
// workers.user set, every worker and the admin process run as that user and
// group with no supplementary groups, no capabilities in any set (bounding
// included) and no_new_privs, while the supervisor stays root; the daemon
// still serves, reloads (keys re-read through the group) and writes its
// access log. A key file other users may open is refused by --check-config.
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <sstream>
#include <thread>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

class Privileges : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0)
            GTEST_SKIP() << "SKIPPED LOUDLY: only a daemon started as root changes its user";
        nobody_ = ::getpwnam("nobody");
        nogroup_ = ::getgrnam("nogroup");
        if (nobody_ == nullptr || nogroup_ == nullptr)
            GTEST_SKIP() << "SKIPPED LOUDLY: no user nobody or group nogroup on this system";
    }
    const passwd* nobody_ = nullptr;
    const group* nogroup_ = nullptr;
};

TEST_F(Privileges, WorkersAndAdminRunUnprivilegedAndStillServeAndReload) {
    TestDeployment env;
    const int port = free_port();
    const int admin = free_port();
    const auto config =
        env.write_config("drop",
                         "[workers]\nuser = \"nobody\"\ngroup = \"nogroup\"\n\n[log]\naccess_log = "
                         "\"access.log\"\n\n[admin]\naddress = \"127.0.0.1:" +
                             std::to_string(admin) + "\"\n\n" + env.listener("edge", port));
    share_with_group(env.dir, nogroup_->gr_gid);
    Daemon daemon(config, 2);

    auto supervisor = proc_status(daemon.process().pid());
    EXPECT_EQ(supervisor["Uid"], four_ids(0));

    const auto children = daemon.worker_pids();
    ASSERT_EQ(children.size(), 3u) << "two workers and the admin process";
    const std::string none = "0000000000000000";
    for (const pid_t pid : children) {
        auto status = proc_status(pid);
        SCOPED_TRACE("process " + std::to_string(pid) + " " + status["Name"]);
        EXPECT_EQ(status["Uid"], four_ids(nobody_->pw_uid));
        EXPECT_EQ(status["Gid"], four_ids(nogroup_->gr_gid));
        EXPECT_EQ(status["Groups"], std::to_string(nogroup_->gr_gid));
        for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
            EXPECT_EQ(status[set], none) << set;
        EXPECT_EQ(status["NoNewPrivs"], "1");
    }
    EXPECT_TRUE(daemon.wait_for_log("runs as nobody:nogroup")) << daemon.log();

    const auto client = env.client("unprivileged-peer");
    EXPECT_TRUE(run_client(port, env.options_for(client)).exchanged) << daemon.log();

    // A reload re-reads the keys and reopens the access log as nobody.
    const auto reload = http_request(admin, "POST", "/reload");
    EXPECT_EQ(reload.status, 200) << reload.body << daemon.log();
    EXPECT_TRUE(run_client(port, env.options_for(client)).exchanged) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log("serving configuration generation 2")) << daemon.log();
    struct stat log_status{};
    ASSERT_EQ(::stat((env.dir / "access.log").c_str(), &log_status), 0);
    EXPECT_EQ(log_status.st_uid, nobody_->pw_uid);
    const auto access = read_file(env.dir / "access.log");
    EXPECT_NE(access.find("CN=unprivileged-peer"), std::string::npos) << access;

    // Still tied to the supervisor: a change of user clears the parent-death
    // signal, which the drop sets again.
    ASSERT_EQ(::kill(daemon.process().pid(), SIGKILL), 0);
    bool all_gone = false;
    for (int i = 0; i < 200 && !all_gone; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
        all_gone = true;
        for (const pid_t pid : children) all_gone &= ::kill(pid, 0) != 0;
    }
    EXPECT_TRUE(all_gone) << "a worker or the admin process outlived the supervisor";
}

TEST_F(Privileges, KeyFileOtherUsersCanOpenIsRefusedByTheConfigCheck) {
    TestDeployment env;
    const auto config = env.write_config("world", env.listener("edge", free_port()));
    ASSERT_EQ(::chmod((env.dir / "server-ec.key").c_str(), 0644), 0);
    const auto result =
        run(binary_from_env("PORTCULLIS_BIN") + " --check-config " + config.string());
    EXPECT_NE(result.status, 0) << result.output;
    EXPECT_NE(result.output.find(config.string() + ":"), std::string::npos) << result.output;
    EXPECT_NE(result.output.find(".key: \"" + (env.dir / "server-ec.key").string() +
                                 "\" holds a secret and other users may open it (mode 0644)"),
              std::string::npos)
        << result.output;
}

}  // namespace
}  // namespace portcullis::testing
