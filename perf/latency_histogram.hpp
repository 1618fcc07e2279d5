// Log-linear latency histogram (16 sub-buckets per power of two: <= 6.25%
// error), fixed size, no allocation per sample; one per thread, merged at the end.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace portcullis::perf {

class LatencyHistogram {
  public:
    void record(std::uint64_t micros) {
        ++counts_[index_of(micros)];
        ++total_;
        if (micros > max_) max_ = micros;
    }

    void merge(const LatencyHistogram& other) {
        for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
        total_ += other.total_;
        if (other.max_ > max_) max_ = other.max_;
    }

    std::uint64_t total() const { return total_; }
    std::uint64_t max() const { return max_; }

    // Upper bound of the bucket holding the q-quantile (0 < q <= 1).
    std::uint64_t quantile(double q) const {
        if (total_ == 0) return 0;
        const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_) + 0.999999);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            seen += counts_[i];
            if (seen >= rank) return upper_bound_of(i) < max_ ? upper_bound_of(i) : max_;
        }
        return max_;
    }

  private:
    static constexpr int sub_bits = 4;
    static constexpr std::size_t bucket_count = (64 - sub_bits + 1) << sub_bits;

    static std::size_t index_of(std::uint64_t v) {
        if (v < (1u << sub_bits)) return static_cast<std::size_t>(v);
        const int top = 63 - std::countl_zero(v);  // >= sub_bits
        const int shift = top - sub_bits;
        const auto sub = (v >> shift) & ((1u << sub_bits) - 1);
        return (static_cast<std::size_t>(shift + 1) << sub_bits) + sub;
    }

    static std::uint64_t upper_bound_of(std::size_t index) {
        if (index < (1u << sub_bits)) return index;
        const std::size_t shift = (index >> sub_bits) - 1;
        const std::uint64_t sub = index & ((1u << sub_bits) - 1);
        return (((1ull << sub_bits) | sub) + 1) << shift;
    }

    std::array<std::uint64_t, bucket_count> counts_{};
    std::uint64_t total_ = 0;
    std::uint64_t max_ = 0;
};

}  // namespace portcullis::perf
