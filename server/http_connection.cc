#include "server/http_connection.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace gqa {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// RFC 9110 token characters (method and header names).
bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c)) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) == std::string_view::npos) return false;
  }
  return true;
}

// Field values: visible characters, spaces, tabs and obs-text; no other controls.
bool IsFieldValue(absl::string_view s) {
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

std::string Seconds(milliseconds d) { return absl::StrCat(d.count() / 1000.0, " s"); }

// Polls one descriptor for at most `ms` milliseconds; the revents, 0 on timeout, -1 on error.
int PollOne(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  const int n = ::poll(&p, 1, ms);
  if (n < 0) return errno == EINTR ? 0 : -1;
  return n == 0 ? 0 : p.revents;
}

}  // namespace

HttpConnection::Fill HttpConnection::More(Clock::time_point deadline) {
  char chunk[64 << 10];
  for (;;) {
    if (stopping_ && stopping_()) return Fill::kError;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out_ = true;
      return Fill::kTimeout;
    }
    const int ev = PollOne(fd_, POLLIN, static_cast<int>(std::min<int64_t>(left, 100)));
    if (ev < 0) return Fill::kError;
    if (ev == 0) continue;
    const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buf_.append(chunk, static_cast<size_t>(n));
      return Fill::kData;
    }
    if (n == 0) return Fill::kClosed;
    if (errno != EINTR && errno != EAGAIN) return Fill::kError;
  }
}

bool HttpConnection::WaitForRequest(milliseconds idle) {
  if (pos_ < buf_.size()) return true;
  buf_.clear();
  pos_ = 0;
  return More(Clock::now() + idle) == Fill::kData;
}

HttpConnection::Arrival HttpConnection::Poll() {
  if (pos_ < buf_.size()) return Arrival::kRequest;
  buf_.clear();
  pos_ = 0;
  const int ev = PollOne(fd_, POLLIN, 0);
  if (ev < 0 || (ev & (POLLERR | POLLNVAL))) return Arrival::kClosed;
  if (ev == 0) return Arrival::kNothing;
  char chunk[16 << 10];
  const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), MSG_DONTWAIT);
  if (n > 0) {
    buf_.append(chunk, static_cast<size_t>(n));
    return Arrival::kRequest;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return Arrival::kNothing;
  return Arrival::kClosed;
}

bool HttpConnection::PeerClosed() const {
  const int ev = PollOne(fd_, POLLRDHUP, 0);
  return ev < 0 || (ev & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

bool HttpConnection::ReadLine(Clock::time_point deadline, size_t max, int too_long_status, std::string* line,
                              FramingError* error, const char* what) {
  size_t scanned = pos_;
  for (;;) {
    const size_t nl = buf_.find('\n', scanned);
    if (nl != std::string::npos) {
      size_t end = nl;
      if (end > pos_ && buf_[end - 1] == '\r') --end;
      if (end - pos_ > max) {
        *error = {too_long_status, absl::StrCat("the ", what, " is longer than ", max, " bytes")};
        return false;
      }
      line->assign(buf_, pos_, end - pos_);
      pos_ = nl + 1;
      if (line->find('\r') != std::string::npos) {
        *error = {400, absl::StrCat("the ", what, " holds a bare CR")};
        return false;
      }
      return true;
    }
    if (buf_.size() - pos_ > max + 1) {
      *error = {too_long_status, absl::StrCat("the ", what, " is longer than ", max, " bytes")};
      return false;
    }
    scanned = buf_.size();
    if (More(deadline) != Fill::kData) {
      *error = {};  // the caller tells a timeout from a close
      return false;
    }
  }
}

bool HttpConnection::ReadBody(Clock::time_point deadline, size_t length, std::string* out, FramingError* error) {
  while (length > 0) {
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
      if (More(deadline) != Fill::kData) {
        *error = {};
        return false;
      }
    }
    const size_t take = std::min(length, buf_.size() - pos_);
    out->append(buf_, pos_, take);
    pos_ += take;
    length -= take;
  }
  return true;
}

bool HttpConnection::ReadChunked(Clock::time_point deadline, const FramingLimits& limits, std::string* out,
                                 FramingError* error) {
  std::string line;
  for (;;) {
    if (!ReadLine(deadline, 1024, 400, &line, error, "chunk size line")) return false;
    // A view of `line` itself: a view of line.substr() would dangle.
    absl::string_view size_text = absl::string_view(line).substr(0, line.find(';'));
    size_text = absl::StripTrailingAsciiWhitespace(size_text);
    uint64_t size = 0;
    if (size_text.empty() || size_text.size() > 16 || !absl::SimpleHexAtoi(size_text, &size) ||
        !absl::ascii_isxdigit(static_cast<unsigned char>(size_text[0]))) {
      *error = {400, "malformed chunk size in a chunked body"};
      return false;
    }
    if (size == 0) break;
    if (size > limits.max_body_bytes - out->size()) {
      *error = {413, absl::StrCat("the request body is larger than ", limits.max_body_bytes, " bytes")};
      return false;
    }
    if (!ReadBody(deadline, static_cast<size_t>(size), out, error)) return false;
    if (!ReadLine(deadline, 0, 400, &line, error, "chunk terminator")) {
      if (error->status == 400) error->message = "a chunk of a chunked body is not followed by CRLF";
      return false;
    }
  }
  // Trailer fields are read and dropped.
  size_t trailer_bytes = 0;
  for (;;) {
    if (!ReadLine(deadline, limits.max_header_line_bytes, 431, &line, error, "trailer line")) return false;
    if (line.empty()) return true;
    trailer_bytes += line.size();
    if (trailer_bytes > limits.max_head_bytes) {
      *error = {431, "the chunked body's trailer is too large"};
      return false;
    }
  }
}

bool HttpConnection::ReadRequest(const FramingLimits& limits, FramedRequest* out, FramingError* error) {
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  timed_out_ = false;
  const Clock::time_point head_deadline = Clock::now() + limits.header_timeout;
  auto head_timeout = [&] {
    if (error->status == 0 && timed_out_) {
      *error = {408, absl::StrCat("the request's headers did not arrive within ", Seconds(limits.header_timeout))};
    }
  };
  std::string line;
  // Empty lines before a request are ignored (RFC 9112 2.2).
  for (int i = 0; line.empty(); ++i) {
    if (i == 4 || !ReadLine(head_deadline, limits.max_request_line_bytes, 414, &line, error, "request line")) {
      if (i == 4) *error = {400, "no request line"};
      if (error->status == 414) error->message = absl::StrCat("the request target is longer than ",
                                                               limits.max_request_line_bytes, " bytes");
      head_timeout();
      return false;
    }
  }
  const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3 || !IsToken(parts[0]) || parts[1].empty() || !IsFieldValue(parts[1])) {
    *error = {400, "malformed request line (expected 'METHOD target HTTP/1.1')"};
    return false;
  }
  out->method = std::string(parts[0]);
  out->target = std::string(parts[1]);
  out->version = std::string(parts[2]);
  if (out->version != "HTTP/1.1" && out->version != "HTTP/1.0") {
    if (absl::StartsWith(out->version, "HTTP/")) {
      *error = {505, absl::StrCat(out->version, " is not supported (HTTP/1.1 and HTTP/1.0 are)")};
    } else {
      *error = {400, "malformed request line (expected 'METHOD target HTTP/1.1')"};
    }
    return false;
  }

  std::string headers;
  size_t head_bytes = line.size();
  std::vector<uint64_t> lengths;
  std::vector<std::string> codings;
  bool expect_continue = false;
  for (;;) {
    if (!ReadLine(head_deadline, limits.max_header_line_bytes, 431, &line, error, "header line")) {
      head_timeout();
      return false;
    }
    if (line.empty()) break;
    head_bytes += line.size() + 2;
    if (head_bytes > limits.max_head_bytes) {
      *error = {431, absl::StrCat("the request's headers are larger than ", limits.max_head_bytes, " bytes")};
      return false;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      *error = {400, "folded header lines are not accepted"};
      return false;
    }
    const size_t colon = line.find(':');
    if (colon == std::string::npos) {
      *error = {400, "a header line has no colon"};
      return false;
    }
    const absl::string_view name = absl::string_view(line).substr(0, colon);
    const absl::string_view value = absl::StripAsciiWhitespace(absl::string_view(line).substr(colon + 1));
    if (!IsToken(name)) {
      *error = {400, "a header name is empty or holds characters a header name cannot"};
      return false;
    }
    if (!IsFieldValue(value)) {
      *error = {400, absl::StrCat("the '", name, "' header holds control characters")};
      return false;
    }
    if (absl::EqualsIgnoreCase(name, "Content-Length")) {
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        v = absl::StripAsciiWhitespace(v);
        uint64_t n = 0;
        if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), absl::ascii_isdigit) ||
            !absl::SimpleAtoi(v, &n)) {
          *error = {400, "malformed Content-Length"};
          return false;
        }
        lengths.push_back(n);
      }
      continue;
    }
    if (absl::EqualsIgnoreCase(name, "Transfer-Encoding")) {
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        codings.push_back(absl::AsciiStrToLower(absl::StripAsciiWhitespace(v)));
      }
      continue;
    }
    if (absl::EqualsIgnoreCase(name, "Expect")) {
      expect_continue = expect_continue || absl::EqualsIgnoreCase(value, "100-continue");
      continue;
    }
    if (absl::EqualsIgnoreCase(name, "Content-Encoding") && !value.empty() &&
        !absl::EqualsIgnoreCase(value, "identity")) {
      *error = {415, absl::StrCat("Content-Encoding '", value, "' is not accepted: send the body uncompressed")};
      return false;
    }
    absl::StrAppend(&headers, name, ": ", value, "\r\n");
  }

  for (uint64_t n : lengths) {
    if (n != lengths[0]) {
      *error = {400, "conflicting Content-Length headers"};
      return false;
    }
  }
  if (!codings.empty() && !lengths.empty()) {
    *error = {400, "both Transfer-Encoding and Content-Length are set"};
    return false;
  }
  if (!codings.empty() && (codings.size() != 1 || codings[0] != "chunked")) {
    *error = {501, "only the 'chunked' transfer coding is supported"};
    return false;
  }
  const bool chunked = !codings.empty();
  const uint64_t length = lengths.empty() ? 0 : lengths[0];
  if (length > limits.max_body_bytes) {
    *error = {413, absl::StrCat("the request body is larger than ", limits.max_body_bytes, " bytes")};
    return false;
  }
  if (expect_continue && (chunked || length > 0)) {
    static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!WriteAll(kContinue, sizeof(kContinue) - 1)) {
      *error = {0, ""};
      return false;
    }
  }
  std::string body;
  const Clock::time_point body_deadline = Clock::now() + limits.body_timeout;
  const bool ok = chunked ? ReadChunked(body_deadline, limits, &body, error)
                          : ReadBody(body_deadline, static_cast<size_t>(length), &body, error);
  if (!ok) {
    if (error->status == 0 && timed_out_) {
      *error = {408, absl::StrCat("the request body did not arrive within ", Seconds(limits.body_timeout))};
    }
    return false;
  }
  out->canonical = absl::StrCat(out->method, " ", out->target, " ", out->version, "\r\n", headers,
                                "Content-Length: ", body.size(), "\r\n\r\n", body);
  return true;
}

bool HttpConnection::WriteAll(const char* data, size_t size) {
  while (size > 0) {
    const int ev = PollOne(fd_, POLLOUT, static_cast<int>(write_timeout_.count()));
    if (ev <= 0 || (ev & (POLLERR | POLLNVAL))) return false;
    const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool HttpConnection::Alive() const {
  const int ev = PollOne(fd_, POLLIN, 0);
  if (ev < 0 || (ev & (POLLERR | POLLNVAL))) return false;
  if (ev == 0) return true;
  char c;
  const ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR));
}

void HttpConnection::Linger(milliseconds linger) {
  ::shutdown(fd_, SHUT_WR);
  const Clock::time_point end = Clock::now() + linger;
  char scratch[64 << 10];
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(end - Clock::now()).count();
    if (left <= 0) return;
    const int ev = PollOne(fd_, POLLIN, static_cast<int>(left));
    if (ev <= 0) return;
    if (::recv(fd_, scratch, sizeof(scratch), 0) <= 0) return;
  }
}

ssize_t CanonicalStream::read(char* ptr, size_t size) {
  const size_t n = std::min(size, request_.size() - offset_);
  std::memcpy(ptr, request_.data() + offset_, n);
  offset_ += n;
  return static_cast<ssize_t>(n);
}

ssize_t CanonicalStream::write(const char* ptr, size_t size) {
  return conn_.WriteAll(ptr, size) ? static_cast<ssize_t>(size) : -1;
}

namespace {
void Address(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ip.clear();
  port = 0;
  if (rc != 0) return;
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
    port = ntohs(a->sin6_port);
  }
  ip = text;
}
}  // namespace

void CanonicalStream::get_remote_ip_and_port(std::string& ip, int& port) const { Address(conn_.fd(), true, ip, port); }
void CanonicalStream::get_local_ip_and_port(std::string& ip, int& port) const { Address(conn_.fd(), false, ip, port); }

const char* StatusText(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

}  // namespace gqa
