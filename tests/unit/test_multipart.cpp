// The streaming multipart/form-data parser (api/multipart.hpp): the same parts whatever way
// the body is cut into pieces, bounded memory, malformed forms refused.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ipfixweb/api/multipart.hpp"

using namespace ipfixweb::api;

namespace {

struct Part {
  std::string name, filename, data;
  bool ended = false;
};

// Feeds `body` in pieces of `step` bytes; the parts seen, and whether every feed succeeded.
std::pair<std::vector<Part>, bool> parse(const std::string& boundary, const std::string& body,
                                         std::size_t step, MultipartParser* out = nullptr) {
  MultipartParser p(boundary);
  std::vector<Part> parts;
  bool ok = true;
  for (std::size_t at = 0; at < body.size() && ok; at += step) {
    ok = p.feed(std::string_view(body).substr(at, step), [&](const MultipartParser::Event& e) {
      using K = MultipartParser::Event::Kind;
      if (e.kind == K::PartStart) parts.push_back({e.name, e.filename, "", false});
      if (e.kind == K::Data) parts.back().data.append(e.data);
      if (e.kind == K::PartEnd) parts.back().ended = true;
    });
  }
  if (out) *out = p;
  return {parts, ok && p.complete()};
}

std::string form(const std::string& b, const std::string& file_content) {
  return "--" + b +
         "\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\nabc\r\n"
         "--" +
         b +
         "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".pcap\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         file_content + "\r\n--" + b + "--\r\nepilogue";
}

}  // namespace

TEST(Multipart, TheBoundaryComesFromTheContentType) {
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=----abc"), "----abc");
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"x y\""), "x y");
  EXPECT_EQ(multipart_boundary("multipart/form-data"), std::nullopt);
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=" + std::string(71, 'a')),
            std::nullopt);
}

TEST(Multipart, EveryWayOfCuttingTheBodyGivesTheSameParts) {
  // File content that holds near-boundaries: CR LF and "--" and the boundary without its CRLF.
  const std::string b = "XyZ123";
  std::string content = "\r\n-\r\n--\r\n--XyZ12\r\n--XyZ";
  content += std::string("\x00\xff binary", 9);
  content += std::string(1000, '\r');
  content += "--XyZ123 not at a line start";
  const std::string body = form(b, content);
  for (std::size_t step : {1u, 2u, 3u, 7u, 64u, 100000u}) {
    auto [parts, ok] = parse(b, body, step);
    ASSERT_TRUE(ok) << "step " << step;
    ASSERT_EQ(parts.size(), 2u) << "step " << step;
    EXPECT_EQ(parts[0].name, "sha256");
    EXPECT_EQ(parts[0].data, "abc");
    EXPECT_EQ(parts[1].name, "file");
    EXPECT_EQ(parts[1].filename, "a \"b\".pcap");
    EXPECT_EQ(parts[1].data, content) << "step " << step;
    EXPECT_TRUE(parts[0].ended && parts[1].ended);
  }
}

TEST(Multipart, MalformedFormsAreRefusedWithAReason) {
  MultipartParser p("b");
  auto [parts, ok] = parse("b", "--b\r\nNo-Colon-Here\r\n\r\nx\r\n--b--", 5, &p);
  EXPECT_FALSE(ok);
  EXPECT_FALSE(p.error().empty());
  EXPECT_FALSE(parse("b", "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", 4).second);
  EXPECT_FALSE(parse("b", std::string(70000, 'x'), 1000).second);              // no boundary
  EXPECT_FALSE(parse("b", "--b\r\n" + std::string(20000, 'h'), 1000).second);  // header too big
  // A body that stops before its closing boundary is not complete.
  EXPECT_FALSE(
      parse("b", "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nabc", 3).second);
}

// Finding of the fuzz target's property (fuzz_multipart: the same answer whatever the pieces;
// tests/fuzz/regressions/multipart/): the preamble, header and padding bounds were checked only
// while waiting for more of the body, so a form whose preamble, part header or padding after
// a boundary went beyond its bound was taken when it came in one piece and refused when it
// came in small ones. Each bound is now on where the thing ends in the body: a form is taken
// or refused the same way however it is cut, right up to the bound and just past it.
TEST(Multipart, TheBoundsDoNotDependOnHowTheBodyIsCut) {
  const std::string b = "XyZ";
  const std::string disposition = "Content-Disposition: form-data; name=\"f\"\r\n";
  const std::string rest = "\r\nx\r\n--" + b + "--\r\n";
  auto with_preamble = [&](std::size_t n) {  // the first delimiter (CR LF --XyZ) starts at n
    return std::string(n, 'p') + "\r\n--" + b + "\r\n" + disposition + rest;
  };
  auto with_header = [&](std::size_t n) {  // the header fields are n bytes (CR LF CR LF after)
    const std::string pad = "X-Pad: " + std::string(n - disposition.size() - 7, 'h');
    return "--" + b + "\r\n" + disposition + pad + "\r\n" + rest;
  };
  auto with_padding = [&](std::size_t n) {  // n spaces after the first boundary
    return "--" + b + std::string(n, ' ') + "\r\n" + disposition + rest;
  };
  struct Case {
    std::string name, body;
    bool taken;
  };
  const Case cases[] = {
      {"preamble at the bound", with_preamble(64 * 1024), true},
      {"preamble past it", with_preamble(64 * 1024 + 1), false},
      {"header at the bound", with_header(16 * 1024), true},
      {"header past it", with_header(16 * 1024 + 1), false},
      {"padding at the bound", with_padding(256), true},
      {"padding past it", with_padding(257), false},
  };
  for (const auto& c : cases) {
    for (std::size_t step : {std::size_t{7}, std::size_t{13}, std::size_t{4099}, c.body.size()}) {
      const auto [parts, ok] = parse(b, c.body, step);
      EXPECT_EQ(ok, c.taken) << c.name << ", in pieces of " << step;
      if (c.taken) {
        EXPECT_EQ(parts.size(), 1u) << c.name << ", in pieces of " << step;
      }
    }
  }
}
