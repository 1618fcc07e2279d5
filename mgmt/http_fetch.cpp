#include "mgmt/http_fetch.hpp"

#include <fcntl.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include "base/unique_fd.hpp"

namespace portcullis::mgmt {
namespace {

constexpr auto retry_after_failure = std::chrono::seconds(30);

struct SplitUrl {
    std::string origin;  // http://host[:port]
    std::string path;
};

SplitUrl split(const std::string& url) {
    const auto slash = url.find('/', 7);
    if (slash == std::string::npos) return {url, "/"};
    return {url.substr(0, slash), url.substr(slash)};
}

httplib::Client client_for(const std::string& origin, std::chrono::milliseconds timeout) {
    httplib::Client client(origin);
    client.set_connection_timeout(timeout);
    client.set_read_timeout(timeout);
    return client;
}

HttpAnswer answer_of(const httplib::Result& result) {
    HttpAnswer answer;
    if (!result) {
        answer.error = "no answer: " + httplib::to_string(result.error());
        return answer;
    }
    answer.status = result->status;
    answer.body = result->body;
    answer.last_modified = result->get_header_value("Last-Modified");
    return answer;
}

}  // namespace

HttpAnswer http_get(const std::string& url, std::chrono::milliseconds timeout,
                    const std::string& if_modified_since) {
    const auto [origin, path] = split(url);
    auto client = client_for(origin, timeout);
    httplib::Headers headers;
    if (!if_modified_since.empty()) headers.emplace("If-Modified-Since", if_modified_since);
    return answer_of(client.Get(path, headers));
}

HttpAnswer http_post(const std::string& url, std::chrono::milliseconds timeout,
                     const std::string& content_type, std::string_view body) {
    const auto [origin, path] = split(url);
    auto client = client_for(origin, timeout);
    return answer_of(client.Post(path, body.data(), body.size(), content_type));
}

bool write_file_atomically(const std::string& path, std::string_view bytes, std::string& error) {
    // Workers that fetched the same OCSP answer may write it at once: each
    // writer has a temporary file of its own, and the last rename wins whole.
    const std::string temporary =
        path + ".tmp." + std::to_string(::getpid()) + "." +
        std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!out.flush()) {
            error = "cannot write " + temporary;
            return false;
        }
    }
    const base::UniqueFd fd(::open(temporary.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0 || ::chmod(temporary.c_str(), 0644) != 0 ||
        ::rename(temporary.c_str(), path.c_str()) != 0) {
        error = "cannot put " + path + " in place: " + std::strerror(errno);
        ::unlink(temporary.c_str());
        return false;
    }
    return true;
}

FetchClock::time_point refresh_due(FetchClock::time_point now, int refresh_s,
                                   std::int64_t next_update) {
    auto due = now + std::chrono::seconds(refresh_s);
    const std::int64_t unix_now = FetchClock::to_time_t(now);
    if (next_update > unix_now) {
        const auto halfway = now + std::chrono::seconds((next_update - unix_now) / 2);
        due = std::min(due, std::max(halfway, now + std::chrono::seconds(1)));
    }
    return due;
}

FetchClock::time_point retry_due(FetchClock::time_point now, int refresh_s) {
    return now +
           std::min<std::chrono::seconds>(retry_after_failure, std::chrono::seconds(refresh_s));
}

void publish(const FetchStatus& status, FetchStats* counters) {
    if (counters == nullptr) return;
    auto& c = *counters;
    c.fetches_ok.set(status.fetches_ok);
    c.fetches_failed.set(status.fetches_failed);
    c.updates.set(status.updates);
    c.last_attempt_unix.set(static_cast<std::uint64_t>(status.last_attempt));
    c.last_success_unix.set(static_cast<std::uint64_t>(status.last_success));
    c.this_update_unix.set(static_cast<std::uint64_t>(status.this_update));
    c.next_update_unix.set(static_cast<std::uint64_t>(status.next_update));
    c.last_failed.set(!status.last_result.empty() && status.last_result != "ok" &&
                              status.last_result != "not modified"
                          ? 1
                          : 0);
}

}  // namespace portcullis::mgmt
