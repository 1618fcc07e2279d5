// A PKCS#11 module for tests and benchmarks that behaves like a network HSM:
// it forwards every call to SoftHSM2 and adds, on C_Sign, configurable
// latency and jitter, a cap on concurrent operations, and injected errors
// (by rate, or the next N calls), and can make whole tokens disappear.
//
// Controlled by the file named in PORTCULLIS_TEST_PKCS11_CONTROL, re-read
// when its modification time changes, one "key = value" per line:
//   latency_ms = 2          added to every C_Sign
//   jitter_ms = 1           plus uniform 0..jitter
//   max_concurrent = 8      C_Sign calls beyond this wait for a free place
//   error_rate = 0.01       fraction of C_Sign calls that fail with `error`
//   fail_next = 3           the next 3 C_Sign calls fail with `error` (per process)
//   error = CKR_DEVICE_ERROR   (or a number)
//   down_tokens = edge-a    tokens that answer CKR_DEVICE_REMOVED / CKR_TOKEN_NOT_PRESENT
// The real module is PORTCULLIS_TEST_PKCS11_REAL (default SoftHSM2's).
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Control {
    double latency_ms = 0;
    double jitter_ms = 0;
    int max_concurrent = 0;  // 0 = no cap
    double error_rate = 0;
    long fail_next = 0;
    CK_RV error = CKR_DEVICE_ERROR;
    std::set<std::string> down_tokens;
};

std::mutex mutex;
std::condition_variable slot_free;
int running = 0;
Control control;
timespec control_mtime{};
CK_FUNCTION_LIST* real = nullptr;
CK_FUNCTION_LIST wrapped;
std::map<CK_SESSION_HANDLE, std::string> session_token;  // session -> token label

CK_RV parse_rv(const std::string& text) {
    static const std::map<std::string, CK_RV> names = {
        {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
        {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
        {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
        {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
        {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
        {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
        {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
        {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
        {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY}};
    const auto it = names.find(text);
    return it != names.end() ? it->second : std::strtoul(text.c_str(), nullptr, 0);
}

std::string trim(std::string s) {
    const auto a = s.find_first_not_of(" \t\r");
    const auto b = s.find_last_not_of(" \t\r");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// Called with `mutex` held.
void refresh_control() {
    const char* path = std::getenv("PORTCULLIS_TEST_PKCS11_CONTROL");
    if (path == nullptr) return;
    struct stat st {};
    if (::stat(path, &st) != 0) {
        control = Control{};
        control_mtime = {};
        return;
    }
    if (st.st_mtim.tv_sec == control_mtime.tv_sec && st.st_mtim.tv_nsec == control_mtime.tv_nsec)
        return;
    control_mtime = st.st_mtim;
    Control fresh;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        const auto eq = line.find('=');
        if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
        const auto key = trim(line.substr(0, eq));
        const auto value = trim(line.substr(eq + 1));
        if (key == "latency_ms") fresh.latency_ms = std::atof(value.c_str());
        if (key == "jitter_ms") fresh.jitter_ms = std::atof(value.c_str());
        if (key == "max_concurrent") fresh.max_concurrent = std::atoi(value.c_str());
        if (key == "error_rate") fresh.error_rate = std::atof(value.c_str());
        if (key == "fail_next") fresh.fail_next = std::atol(value.c_str());
        if (key == "error") fresh.error = parse_rv(value);
        if (key == "down_tokens") {
            std::istringstream list(value);
            std::string token;
            while (std::getline(list, token, ',')) {
                token = trim(token);
                if (!token.empty()) fresh.down_tokens.insert(token);
            }
        }
    }
    control = fresh;
}

std::string label_of_slot(CK_SLOT_ID slot) {
    CK_TOKEN_INFO info{};
    if (real->C_GetTokenInfo(slot, &info) != CKR_OK) return {};
    std::string label(reinterpret_cast<const char*>(info.label), sizeof info.label);
    const auto end = label.find_last_not_of(' ');
    return end == std::string::npos ? std::string() : label.substr(0, end + 1);
}

bool session_down(CK_SESSION_HANDLE session) {
    std::lock_guard lock(mutex);
    refresh_control();
    const auto it = session_token.find(session);
    return it != session_token.end() && control.down_tokens.count(it->second) > 0;
}

CK_RV wrap_open_session(CK_SLOT_ID slot, CK_FLAGS flags, void* app, CK_NOTIFY notify,
                        CK_SESSION_HANDLE_PTR session) {
    const auto label = label_of_slot(slot);
    {
        std::lock_guard lock(mutex);
        refresh_control();
        if (control.down_tokens.count(label)) return CKR_TOKEN_NOT_PRESENT;
    }
    const CK_RV rv = real->C_OpenSession(slot, flags, app, notify, session);
    if (rv == CKR_OK) {
        std::lock_guard lock(mutex);
        session_token[*session] = label;
    }
    return rv;
}

CK_RV wrap_close_session(CK_SESSION_HANDLE session) {
    {
        std::lock_guard lock(mutex);
        session_token.erase(session);
    }
    return real->C_CloseSession(session);
}

CK_RV wrap_login(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len) {
    if (session_down(session)) return CKR_DEVICE_REMOVED;
    return real->C_Login(session, user, pin, len);
}

CK_RV wrap_sign_init(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
    if (session_down(session)) return CKR_DEVICE_REMOVED;
    return real->C_SignInit(session, mechanism, key);
}

CK_RV wrap_sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
                CK_BYTE_PTR signature, CK_ULONG_PTR signature_len) {
    double delay_ms = 0;
    CK_RV injected = CKR_OK;
    {
        std::unique_lock lock(mutex);
        refresh_control();
        const auto it = session_token.find(session);
        if (it != session_token.end() && control.down_tokens.count(it->second))
            return CKR_DEVICE_REMOVED;
        thread_local std::mt19937 random(std::random_device{}());
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        if (control.fail_next > 0) {
            --control.fail_next;
            injected = control.error;
        } else if (control.error_rate > 0 && unit(random) < control.error_rate) {
            injected = control.error;
        }
        delay_ms = control.latency_ms + control.jitter_ms * unit(random);
        if (control.max_concurrent > 0)
            slot_free.wait(lock, [] { return running < control.max_concurrent; });
        ++running;
    }
    if (delay_ms > 0)
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(delay_ms));
    const CK_RV rv = injected != CKR_OK
                         ? injected
                         : real->C_Sign(session, data, data_len, signature, signature_len);
    if (injected != CKR_OK) {
        // Ends the operation the way a failed C_Sign does.
        CK_ULONG discard = 0;
        real->C_Sign(session, data, data_len, nullptr, &discard);
        std::vector<CK_BYTE> scratch(discard);
        real->C_Sign(session, data, data_len, scratch.data(), &discard);
    }
    {
        std::lock_guard lock(mutex);
        --running;
    }
    slot_free.notify_one();
    return rv;
}

bool load_real() {
    if (real != nullptr) return true;
    const char* path = std::getenv("PORTCULLIS_TEST_PKCS11_REAL");
    void* library =
        ::dlopen(path ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) return false;
    auto get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(library, "C_GetFunctionList"));
    if (get == nullptr || get(&real) != CKR_OK) return false;
    wrapped = *real;
    wrapped.C_OpenSession = wrap_open_session;
    wrapped.C_CloseSession = wrap_close_session;
    wrapped.C_Login = wrap_login;
    wrapped.C_SignInit = wrap_sign_init;
    wrapped.C_Sign = wrap_sign;
    return true;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) CK_RV C_GetFunctionList(
    CK_FUNCTION_LIST_PTR_PTR list) {
    if (list == nullptr) return CKR_ARGUMENTS_BAD;
    if (!load_real()) return CKR_GENERAL_ERROR;
    *list = &wrapped;
    return CKR_OK;
}
