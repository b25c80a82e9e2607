// One HTTP/1.1 connection in front of cpp-httplib: reads each request under a
// deadline and a body limit, checks its framing (one Content-Length, known
// transfer coding, well-formed header lines) and hands the library a
// canonical copy (Content-Length only, never chunked). Requests pipelined on
// the connection are answered in order from its own buffer.
#pragma once

#include <httplib.h>

#include <chrono>
#include <functional>
#include <string>

namespace gqa {

struct FramingLimits {
  size_t max_body_bytes = 8u << 20;
  size_t max_request_line_bytes = 8192;  // method, target and version
  size_t max_header_line_bytes = 8192;
  size_t max_head_bytes = 64u << 10;     // request line and all headers
  std::chrono::milliseconds header_timeout{10000};  // from the request's first byte
  std::chrono::milliseconds body_timeout{60000};    // from the end of its headers
};

// A request whose framing was checked, rewritten for cpp-httplib.
struct FramedRequest {
  std::string method, target, version;
  std::string canonical;  // request line, headers with one Content-Length, body
};

// Why a request cannot be read. status 0: the peer closed or went silent
// between requests (no answer is due).
struct FramingError {
  int status = 0;
  std::string message;
};

class HttpConnection {
 public:
  using Clock = std::chrono::steady_clock;
  // `stopping` is polled while waiting so that a server stop is not held up.
  HttpConnection(int fd, std::function<bool()> stopping) : fd_(fd), stopping_(std::move(stopping)) {}

  // Waits up to `idle` for the first byte of the next request (at once when
  // one is already buffered). False: closed, idle too long, or stopping.
  bool WaitForRequest(std::chrono::milliseconds idle);
  // Without waiting, after the event loop saw the socket readable: whether a
  // request has begun (bytes buffered or readable now), nothing is there yet,
  // or the peer closed.
  enum class Arrival { kRequest, kNothing, kClosed };
  Arrival Poll();
  // The peer has closed or half-closed the connection, or it failed: no
  // answer written now can be read. Bytes of a pipelined next request do
  // not count.
  bool PeerClosed() const;
  // Reads one whole request. On error, what is left of the connection is
  // unusable: answer `error` and close.
  bool ReadRequest(const FramingLimits& limits, FramedRequest* out, FramingError* error);

  // Writes all of `data` within the write timeout; false if the peer is gone.
  bool WriteAll(const char* data, size_t size);
  // A connection that is still open: not closed by the peer, not failed.
  bool Alive() const;
  // Half-closes and discards what the peer still sends for up to `linger`,
  // so that a client still uploading reads the answer instead of a reset.
  void Linger(std::chrono::milliseconds linger);
  int fd() const { return fd_; }

 private:
  enum class Fill { kData, kClosed, kTimeout, kError };
  // Reads more bytes into buf_ before `deadline`.
  Fill More(Clock::time_point deadline);
  // The next line (without its CRLF or LF) at or after pos_, reading more
  // as needed; `max` bounds its length.
  bool ReadLine(Clock::time_point deadline, size_t max, int too_long_status, std::string* line, FramingError* error,
                const char* what);
  bool ReadBody(Clock::time_point deadline, size_t length, std::string* out, FramingError* error);
  bool ReadChunked(Clock::time_point deadline, const FramingLimits& limits, std::string* out, FramingError* error);

  int fd_;
  std::function<bool()> stopping_;
  std::string buf_;  // bytes read from the socket and not used yet, from pos_
  size_t pos_ = 0;
  bool timed_out_ = false;  // the last More() hit its deadline
  std::chrono::milliseconds write_timeout_{5000};
};

// What cpp-httplib reads one request from and writes its answer to.
class CanonicalStream : public httplib::Stream {
 public:
  CanonicalStream(HttpConnection& conn, const std::string& request) : conn_(conn), request_(request) {}
  bool is_readable() const override { return offset_ < request_.size(); }
  bool is_writable() const override { return conn_.Alive(); }
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return conn_.fd(); }

 private:
  HttpConnection& conn_;
  const std::string& request_;
  size_t offset_ = 0;
};

// The reason phrase of a status code.
const char* StatusText(int status);

}  // namespace gqa
