// The HTTP server's connection loop on its own (no model, no library): many
// keep-alive clients on few workers, idle timeouts, the per-address and
// total limits, and a shutdown while connections are busy.
#include "server/connection_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace gqa {
namespace {

using std::chrono::milliseconds;

// A listening loopback socket and an accept thread feeding a ConnectionLoop
// whose requests answer 200 with their target as the body.
class LoopServer {
 public:
  LoopServer(const ConnectionLimits& limits, milliseconds serve_delay = milliseconds(0)) : delay_(serve_delay) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    EXPECT_EQ(::listen(listen_fd_, 1024), 0);
    loop_ = std::make_unique<ConnectionLoop>(
        limits, 100, [this](HttpConnection& conn, size_t* left) { return Serve(conn, left); },
        [this](HttpConnection& conn, const std::string& message) {
          ++refused_;
          const std::string answer = absl::StrCat("HTTP/1.1 429 Too Many Requests\r\nContent-Length: ", message.size(),
                                                  "\r\nConnection: close\r\n\r\n", message);
          conn.WriteAll(answer.data(), answer.size());
        },
        [this] { return stopping_.load(); });
    accept_ = std::thread([this] {
      for (;;) {
        pollfd p{listen_fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) {
          if (stopping_) return;
          continue;
        }
        const int fd = ::accept(listen_fd_, nullptr, nullptr);
        if (fd < 0) continue;
        loop_->Add(fd);
      }
    });
  }
  ~LoopServer() { Stop(); }
  void Stop() {
    if (!accept_.joinable()) return;
    stopping_ = true;
    accept_.join();
    loop_->Shutdown();
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  ConnectionLoop& loop() { return *loop_; }
  int refused() const { return refused_.load(); }
  int served() const { return served_.load(); }

 private:
  bool Serve(HttpConnection& conn, size_t* left) {
    for (;;) {
      const HttpConnection::Arrival a = conn.Poll();
      if (a == HttpConnection::Arrival::kClosed) return false;
      if (a == HttpConnection::Arrival::kNothing) return true;
      if (*left == 0) return false;
      --*left;
      FramedRequest req;
      FramingError err;
      if (!conn.ReadRequest(FramingLimits{}, &req, &err)) return false;
      if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
      const std::string answer =
          absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", req.target.size(), "\r\n\r\n", req.target);
      // Counted before the write: a client that has read its answer must
      // find it counted.
      ++served_;
      if (!conn.WriteAll(answer.data(), answer.size())) return false;
    }
  }

  milliseconds delay_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> refused_{0}, served_{0};
  std::unique_ptr<ConnectionLoop> loop_;
  std::thread accept_;
};

// A client connection with blocking helpers.
class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Client() { ::close(fd_); }
  bool connected() const { return connected_; }
  // One request; the body of its answer ("" if none came within `timeout`).
  std::string Get(const std::string& target, milliseconds timeout = milliseconds(10000)) {
    const std::string req = absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: t\r\n\r\n");
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return "";
    return ReadAnswer(timeout);
  }
  std::string ReadAnswer(milliseconds timeout) {
    std::string got;
    const auto end = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    for (;;) {
      const size_t head = got.find("\r\n\r\n");
      if (head != std::string::npos) {
        const size_t cl = got.find("Content-Length: ");
        const size_t len = cl == std::string::npos ? 0 : std::stoul(got.substr(cl + 16));
        if (got.size() >= head + 4 + len) return got.substr(head + 4, len);
      }
      const auto left = std::chrono::duration_cast<milliseconds>(end - std::chrono::steady_clock::now()).count();
      if (left <= 0) return "";
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return "";
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return "";
      got.append(buf, static_cast<size_t>(n));
    }
  }
  // True once the server has closed (or reset) the connection within `timeout`.
  bool ClosedByServer(milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_PEEK) <= 0;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

TEST(ConnectionLoopTest, ManyKeepAliveClientsOnFewWorkers) {
  LoopServer server(ConnectionLimits{});
  constexpr int kClients = 48, kRequests = 25;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<Client>(server.port()));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < kRequests; ++r) {
        const std::string target = absl::StrCat("/c", i, "/r", r);
        if (clients[i]->Get(target) != target) ++wrong;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(server.served(), kClients * kRequests);
  for (int i = 0; i < 200 && server.loop().stats().busy > 0; ++i) std::this_thread::sleep_for(milliseconds(5));
  const ConnectionLoop::Stats st = server.loop().stats();
  EXPECT_EQ(st.open, kClients);
  EXPECT_EQ(st.busy, 0);
  EXPECT_LE(st.workers, kClients);
}

TEST(ConnectionLoopTest, IdleConnectionsAreClosed) {
  ConnectionLimits limits;
  limits.idle_timeout = milliseconds(300);
  LoopServer server(limits);
  Client silent(server.port());
  Client used(server.port());
  EXPECT_EQ(used.Get("/x"), "/x");
  EXPECT_TRUE(silent.ClosedByServer(milliseconds(3000)));
  EXPECT_TRUE(used.ClosedByServer(milliseconds(3000)));
  for (int i = 0; i < 200 && server.loop().stats().open > 0; ++i) std::this_thread::sleep_for(milliseconds(5));
  EXPECT_EQ(server.loop().stats().open, 0);
}

TEST(ConnectionLoopTest, PerAddressLimitRefusesAndRecovers) {
  ConnectionLimits limits;
  limits.max_per_ip = 2;
  limits.limit_loopback = true;
  LoopServer server(limits);
  auto a = std::make_unique<Client>(server.port());
  Client b(server.port());
  EXPECT_EQ(a->Get("/a"), "/a");
  EXPECT_EQ(b.Get("/b"), "/b");
  {
    Client c(server.port());
    const std::string body = c.Get("/c");
    EXPECT_NE(body.find("too many connections from 127.0.0.1"), std::string::npos) << body;
  }
  EXPECT_EQ(server.refused(), 1);
  a.reset();
  for (int i = 0; i < 200 && server.loop().stats().open > 1; ++i) std::this_thread::sleep_for(milliseconds(5));
  Client d(server.port());
  EXPECT_EQ(d.Get("/d"), "/d");
  EXPECT_EQ(server.refused(), 1);
}

TEST(ConnectionLoopTest, BeyondMaxConnectionsClientsWaitTheirTurn) {
  ConnectionLimits limits;
  limits.max_connections = 2;
  LoopServer server(limits);
  auto a = std::make_unique<Client>(server.port());
  Client b(server.port());
  EXPECT_EQ(a->Get("/a"), "/a");
  EXPECT_EQ(b.Get("/b"), "/b");
  Client c(server.port());  // accepted by the kernel, not yet by the loop
  EXPECT_EQ(c.Get("/c", milliseconds(300)), "");
  a.reset();
  EXPECT_EQ(c.ReadAnswer(milliseconds(5000)), "/c");
  EXPECT_EQ(server.refused(), 0);
}

TEST(ConnectionLoopTest, ShutdownWaitsForBusyConnections) {
  LoopServer server(ConnectionLimits{}, milliseconds(300));
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<std::thread> threads;
  std::atomic<int> answered{0};
  for (int i = 0; i < 8; ++i) clients.push_back(std::make_unique<Client>(server.port()));
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (clients[i]->Get("/slow") == "/slow") ++answered;
    });
  }
  for (int i = 0; i < 200 && server.loop().stats().busy < 8; ++i) std::this_thread::sleep_for(milliseconds(2));
  Client idle(server.port());
  server.Stop();  // returns once the busy ones are answered
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(answered.load(), 8);
  EXPECT_EQ(server.loop().stats().open, 0);
  EXPECT_EQ(server.loop().stats().workers, 0);
  EXPECT_TRUE(idle.ClosedByServer(milliseconds(1000)));
}

}  // namespace
}  // namespace gqa
