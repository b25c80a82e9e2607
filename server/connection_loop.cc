#include "server/connection_loop.h"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gqa {
namespace {

using Clock = std::chrono::steady_clock;

// The client's address as text ("" when it cannot be had).
std::string PeerAddress(int fd, bool* loopback) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  *loopback = false;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    const in6_addr& v6 = a->sin6_addr;
    *loopback = IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
    ::inet_ntop(AF_INET6, &v6, text, sizeof(text));
  } else {
    *loopback = addr.ss_family == AF_UNIX;
  }
  return text;
}

constexpr uint32_t kArmed = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;

}  // namespace

struct ConnectionLoop::Conn {
  Conn(int fd, std::string ip, bool counted, std::function<bool()> stopping, size_t requests)
      : fd(fd), ip(std::move(ip)), counted(counted), http(fd, std::move(stopping)), requests_left(requests) {}
  int fd;
  std::string ip;
  bool counted;  // in per_ip_
  HttpConnection http;
  size_t requests_left;
  Clock::time_point idle_deadline;
  bool busy = false;    // queued for or held by a worker
  bool queued = false;  // in queue_
};

ConnectionLoop::ConnectionLoop(const ConnectionLimits& limits, size_t requests_per_connection, ServeFn serve,
                               RefuseFn refuse, std::function<bool()> stopping)
    : limits_(limits),
      requests_per_connection_(requests_per_connection),
      serve_(std::move(serve)),
      refuse_(std::move(refuse)),
      stopping_(std::move(stopping)) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  loop_thread_ = std::thread([this] { Loop(); });
}

ConnectionLoop::~ConnectionLoop() {
  Shutdown();
  ::close(epoll_fd_);
  ::close(wake_fd_);
}

void ConnectionLoop::Add(int fd) {
  bool loopback = false;
  std::string ip = PeerAddress(fd, &loopback);
  const bool counted = limits_.max_per_ip > 0 && (limits_.limit_loopback || !loopback);
  std::unique_lock<std::mutex> lock(mu_);
  while (!shut_down_ && static_cast<int>(conns_.size()) >= limits_.max_connections && !stopping_()) {
    slot_cv_.wait_for(lock, std::chrono::milliseconds(100));
  }
  if (shut_down_ || stopping_()) {
    lock.unlock();
    ::close(fd);
    return;
  }
  if (counted) {
    auto it = per_ip_.find(ip);
    if (it != per_ip_.end() && it->second >= limits_.max_per_ip) {
      lock.unlock();
      HttpConnection http(fd, stopping_);
      refuse_(http, absl::StrCat("too many connections from ", ip, " (at most ", limits_.max_per_ip,
                                 " at once); close one or retry later"));
      // Drop what the client already sent so that closing does not reset
      // the connection before it reads the answer.
      char scratch[16 << 10];
      while (::recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0) {
      }
      ::shutdown(fd, SHUT_WR);
      ::close(fd);
      return;
    }
    ++per_ip_[ip];
  }
  Conn* c = new Conn(fd, std::move(ip), counted, stopping_, requests_per_connection_);
  c->idle_deadline = Clock::now() + limits_.idle_timeout;
  conns_.insert(c);
  epoll_event ev{};
  ev.events = kArmed;
  ev.data.ptr = c;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) CloseLocked(c);
}

void ConnectionLoop::Loop() {
  std::vector<epoll_event> events(256);
  for (;;) {
    const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 100);
    if (n < 0 && errno != EINTR) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) return;  // Shutdown
      Conn* c = static_cast<Conn*>(events[i].data.ptr);
      if (!c->busy) Dispatch(c);
    }
    // Idle connections past their deadline close (new ones that never sent
    // a byte, keep-alive ones between requests).
    const Clock::time_point now = Clock::now();
    std::vector<Conn*> expired;
    for (Conn* c : conns_) {
      if (!c->busy && now >= c->idle_deadline) expired.push_back(c);
    }
    for (Conn* c : expired) CloseLocked(c);
  }
}

void ConnectionLoop::Dispatch(Conn* c) {
  c->busy = true;
  c->queued = true;
  ++busy_;
  queue_.push_back(c);
  if (static_cast<int>(queue_.size()) > idle_workers_ && workers_ < limits_.max_connections) {
    ++workers_;
    ++idle_workers_;  // until it takes work
    std::thread([this] { Work(); }).detach();
  }
  work_cv_.notify_one();
}

void ConnectionLoop::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (queue_.empty()) {
      if (shut_down_) break;
      const bool woken = work_cv_.wait_for(lock, limits_.worker_idle, [this] { return !queue_.empty() || shut_down_; });
      if (!woken && workers_ > limits_.spare_workers) break;
      continue;
    }
    Conn* c = queue_.front();
    queue_.pop_front();
    c->queued = false;
    --idle_workers_;
    lock.unlock();
    const bool keep = serve_(c->http, &c->requests_left);
    lock.lock();
    ++idle_workers_;
    c->busy = false;
    --busy_;
    if (!keep || shut_down_ || stopping_()) {
      CloseLocked(c);
      continue;
    }
    c->idle_deadline = Clock::now() + limits_.idle_timeout;
    epoll_event ev{};
    ev.events = kArmed;
    ev.data.ptr = c;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c->fd, &ev) != 0) CloseLocked(c);
  }
  --idle_workers_;
  --workers_;
  workers_cv_.notify_all();
}

void ConnectionLoop::CloseLocked(Conn* c) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
  ::shutdown(c->fd, SHUT_RDWR);
  ::close(c->fd);
  if (c->counted) {
    auto it = per_ip_.find(c->ip);
    if (it != per_ip_.end() && --it->second <= 0) per_ip_.erase(it);
  }
  conns_.erase(c);
  delete c;
  slot_cv_.notify_all();
}

void ConnectionLoop::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  // The loop sees shut_down_ within its 100 ms poll; the wake-up makes it prompt.
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t w = ::write(wake_fd_, &one, sizeof(one));
  if (loop_thread_.joinable()) loop_thread_.join();
  std::unique_lock<std::mutex> lock(mu_);
  for (Conn* c : queue_) {
    c->busy = false;
    c->queued = false;
    --busy_;
  }
  queue_.clear();
  std::vector<Conn*> idle;
  for (Conn* c : conns_) {
    if (!c->busy) idle.push_back(c);
  }
  for (Conn* c : idle) CloseLocked(c);
  work_cv_.notify_all();
  slot_cv_.notify_all();
  workers_cv_.wait(lock, [this] { return workers_ == 0; });
}

ConnectionLoop::Stats ConnectionLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Stats{static_cast<int>(conns_.size()), busy_, workers_};
}

}  // namespace gqa
