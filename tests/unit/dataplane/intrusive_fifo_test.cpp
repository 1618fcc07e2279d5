// The worker's starved list: oldest first, an object listed once however
// often it is pushed, removal from anywhere, and a removed or popped object
// free to be listed again.
#include "base/intrusive_fifo.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace portcullis::base {
namespace {

struct Item {
    int id = 0;
    FifoLink<Item> fifo_link;
};

std::vector<int> drain(IntrusiveFifo<Item>& fifo) {
    std::vector<int> ids;
    while (Item* item = fifo.pop_front()) ids.push_back(item->id);
    return ids;
}

TEST(IntrusiveFifo, OldestFirstAndListedOnce) {
    std::vector<Item> items(4);
    for (int i = 0; i < 4; ++i) items[i].id = i;
    IntrusiveFifo<Item> fifo;
    EXPECT_TRUE(fifo.empty());
    EXPECT_EQ(fifo.pop_front(), nullptr);
    for (auto& item : items) fifo.push_back(item);
    fifo.push_back(items[1]);  // already listed: keeps its place
    EXPECT_EQ(fifo.size(), 4u);
    EXPECT_TRUE(fifo.contains(items[2]));
    EXPECT_EQ(drain(fifo), (std::vector<int>{0, 1, 2, 3}));
    EXPECT_TRUE(fifo.empty());
    EXPECT_FALSE(fifo.contains(items[2]));
}

TEST(IntrusiveFifo, RemovesFromTheFrontTheMiddleAndTheBack) {
    std::vector<Item> items(5);
    for (int i = 0; i < 5; ++i) items[i].id = i;
    IntrusiveFifo<Item> fifo;
    for (auto& item : items) fifo.push_back(item);
    fifo.remove(items[2]);
    fifo.remove(items[0]);
    fifo.remove(items[4]);
    fifo.remove(items[4]);  // not listed: nothing
    EXPECT_EQ(fifo.size(), 2u);
    fifo.push_back(items[0]);  // removed, listed again at the back
    EXPECT_EQ(drain(fifo), (std::vector<int>{1, 3, 0}));
}

TEST(IntrusiveFifo, ThePoppedGoesToTheBackWhenPushedAgain) {
    std::vector<Item> items(3);
    for (int i = 0; i < 3; ++i) items[i].id = i;
    IntrusiveFifo<Item> fifo;
    for (auto& item : items) fifo.push_back(item);
    Item* first = fifo.pop_front();
    ASSERT_EQ(first, &items[0]);
    fifo.push_back(*first);  // refused again: waits behind the others
    EXPECT_EQ(drain(fifo), (std::vector<int>{1, 2, 0}));
}

}  // namespace
}  // namespace portcullis::base
