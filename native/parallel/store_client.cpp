#include "store_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace lt {
namespace {

// The wire format (src/parallel/store.ts writes the same): a request is op (u8), key length (u32
// LE), key, and for SET and ADD a value length (u32 LE) and value. SET answers one byte, GET the
// value's length and bytes once the key exists, ADD the counter's new value (i64 LE).
constexpr uint8_t kSet = 1, kGet = 2, kAdd = 3;

using Clock = std::chrono::steady_clock;

int connect_once(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) throw std::runtime_error("rendezvous: cannot resolve MASTER_ADDR " + host + ": " + gai_strerror(rc));
  int fd = -1;
  for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

void put_u32(std::vector<char>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

StoreClient::StoreClient(const std::string& host, int port, std::chrono::milliseconds timeout)
    : where_(host + ":" + std::to_string(port)), timeout_(timeout) {
  const auto deadline = Clock::now() + timeout;
  while ((fd_ = connect_once(host, port)) < 0) {
    if (Clock::now() >= deadline)
      throw std::runtime_error("rendezvous: no store answered at " + where_ + " within " +
                               std::to_string(timeout.count() / 1000) +
                               " s (is MASTER_ADDR right, and rank 0 running?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

StoreClient::~StoreClient() {
  if (fd_ >= 0) close(fd_);
}

void StoreClient::request(uint8_t op, const std::string& key, const std::vector<char>& value) {
  std::vector<char> msg{static_cast<char>(op)};
  put_u32(msg, static_cast<uint32_t>(key.size()));
  msg.insert(msg.end(), key.begin(), key.end());
  if (op != kGet) {
    put_u32(msg, static_cast<uint32_t>(value.size()));
    msg.insert(msg.end(), value.begin(), value.end());
  }
  for (size_t done = 0; done < msg.size();) {
    const ssize_t n = send(fd_, msg.data() + done, msg.size() - done, MSG_NOSIGNAL);
    if (n <= 0) throw std::runtime_error("rendezvous: the store at " + where_ + " went away (" + strerror(errno) + ")");
    done += static_cast<size_t>(n);
  }
}

void StoreClient::read_exact(void* dst, size_t n, const std::string& waiting_for) {
  const auto deadline = Clock::now() + timeout_;
  char* out = static_cast<char*>(dst);
  for (size_t done = 0; done < n;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd_, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) == 0)
      throw std::runtime_error("rendezvous: timed out after " + std::to_string(timeout_.count() / 1000) +
                               " s waiting for " + waiting_for + " from the store at " + where_);
    const ssize_t got = recv(fd_, out + done, n - done, 0);
    if (got <= 0) throw std::runtime_error("rendezvous: the store at " + where_ + " closed the connection");
    done += static_cast<size_t>(got);
  }
}

void StoreClient::set(const std::string& key, const std::vector<char>& value) {
  request(kSet, key, value);
  uint8_t ok = 0;
  read_exact(&ok, 1, "the store to take '" + key + "'");
}

std::vector<char> StoreClient::get(const std::string& key) {
  request(kGet, key, {});
  uint8_t len[4];
  read_exact(len, 4, "key '" + key + "'");
  const uint32_t n = len[0] | (len[1] << 8) | (len[2] << 16) | (static_cast<uint32_t>(len[3]) << 24);
  std::vector<char> value(n);
  if (n) read_exact(value.data(), n, "key '" + key + "'");
  return value;
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  std::vector<char> value(8);
  for (int i = 0; i < 8; ++i) value[i] = static_cast<char>((static_cast<uint64_t>(delta) >> (8 * i)) & 0xff);
  request(kAdd, key, value);
  uint8_t out[8];
  read_exact(out, 8, "counter '" + key + "'");
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | out[i];
  return static_cast<int64_t>(v);
}

}  // namespace lt
