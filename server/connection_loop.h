// The HTTP server's open connections without a thread each: one epoll thread
// waits for the next request on every idle (keep-alive or new) connection and
// hands a connection with a request to a worker thread; workers are started
// on demand and end when idle beyond a few spares. A connection holds a
// worker only while its request is read and answered (a streamed answer for
// as long as it streams). Connections are limited in all and per client
// address.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

#include "server/http_connection.h"

namespace gqa {

struct ConnectionLimits {
  // Connections open at once; further ones wait in the listen backlog.
  int max_connections = 1024;
  // Connections one client address may hold at once (0: no limit); one
  // more is answered 429 and closed. Loopback clients (a local proxy or
  // sidecar, benchmarks) are not counted unless limit_loopback.
  int max_per_ip = 64;
  bool limit_loopback = false;
  // A connection with no request for this long is closed.
  std::chrono::milliseconds idle_timeout{5000};
  // Idle workers kept; more end after worker_idle without work.
  int spare_workers = 2;
  std::chrono::milliseconds worker_idle{10000};
};

class ConnectionLoop {
 public:
  // Serves the requests a connection has (called when bytes or the end of
  // the stream are ready); `requests_left` counts down the keep-alive budget.
  // True: keep the connection and wait for its next request.
  using ServeFn = std::function<bool(HttpConnection& conn, size_t* requests_left)>;
  // Answers a connection refused for its address (it is closed after).
  using RefuseFn = std::function<void(HttpConnection& conn, const std::string& message)>;

  ConnectionLoop(const ConnectionLimits& limits, size_t requests_per_connection, ServeFn serve, RefuseFn refuse,
                 std::function<bool()> stopping);
  ~ConnectionLoop();

  // Takes an accepted socket. Waits while max_connections are open (the
  // caller is the accept loop: later clients wait in the backlog).
  void Add(int fd);
  // Closes idle connections, lets those being served finish, and waits for
  // every thread. Add refuses connections from then on.
  void Shutdown();

  struct Stats {
    int open = 0;     // connections
    int busy = 0;     // connections held by a worker
    int workers = 0;  // worker threads alive
  };
  Stats stats() const;

 private:
  struct Conn;
  void Loop();
  void Work();
  // Both with mu_ held.
  void Dispatch(Conn* c);
  void CloseLocked(Conn* c);

  const ConnectionLimits limits_;
  const size_t requests_per_connection_;
  ServeFn serve_;
  RefuseFn refuse_;
  std::function<bool()> stopping_;

  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: ends the epoll thread
  std::thread loop_thread_;

  mutable std::mutex mu_;
  std::condition_variable slot_cv_;     // a connection closed (Add may go on)
  std::condition_variable work_cv_;     // work queued or shutting down
  std::condition_variable workers_cv_;  // a worker ended
  std::unordered_set<Conn*> conns_;
  std::map<std::string, int> per_ip_;  // counted connections per address
  std::deque<Conn*> queue_;            // connections waiting for a worker
  int busy_ = 0;
  int workers_ = 0;
  int idle_workers_ = 0;
  bool shut_down_ = false;
};

}  // namespace gqa
