// The client side of the rendezvous store (src/parallel/store.ts serves it on MASTER_ADDR:
// MASTER_PORT, as torch's TCPStore): set a key, get one (waiting until some process sets it),
// add to a counter. Blocking calls with a deadline, made from worker threads only.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace lt {

class StoreClient {
 public:
  // Connects, retrying until `timeout` passes (the server may start after this process).
  StoreClient(const std::string& host, int port, std::chrono::milliseconds timeout);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  void set(const std::string& key, const std::vector<char>& value);
  // Waits until the key is set, at most the timeout.
  std::vector<char> get(const std::string& key);
  int64_t add(const std::string& key, int64_t delta);
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  void request(uint8_t op, const std::string& key, const std::vector<char>& value);
  void read_exact(void* dst, size_t n, const std::string& waiting_for);

  int fd_ = -1;
  std::string where_;  // host:port, for messages
  std::chrono::milliseconds timeout_;
};

}  // namespace lt
