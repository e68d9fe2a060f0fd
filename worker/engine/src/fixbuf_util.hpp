// What the IPFIX exporter and the IPFIX file ingest share about libfixbuf: the private
// enterprise numbers of the elements both sides name, RAII owners of libfixbuf's handles, and
// taking the message out of a GError.
#pragma once

#include <fixbuf/public.h>

#include <cstdint>
#include <string>

namespace ipfixweb::engine::fixbuf {

constexpr std::uint32_t kReversePen = 29305;  // RFC 5103 reverse elements
constexpr std::uint32_t kNtopPen = 35632;     // ntop (nProbe, nDPI) elements, named by tshark
constexpr std::uint32_t kCertPen = 6871;      // CERT (YAF)
// Community ID has no IANA element and no nProbe one: it goes under RFC 5612's enterprise number
// for documentation, which no vendor uses, so it cannot be mistaken for another vendor's element
// (docs/ipfix-elements.md). To move when the project has an enterprise number of its own.
constexpr std::uint32_t kCommunityIdPen = 32473;
constexpr std::uint16_t kCommunityIdNum = 1;

struct FbufDeleter {
  void operator()(fBuf_t* b) const noexcept { fBufFree(b); }
};
struct SessionDeleter {
  void operator()(fbSession_t* s) const noexcept { fbSessionFree(s); }
};
struct TemplateDeleter {
  void operator()(fbTemplate_t* t) const noexcept { fbTemplateFreeUnused(t); }
};

// The error's message (or a generic one), and the error cleared.
inline std::string take_error(GError*& err) {
  std::string msg = err && err->message ? err->message : "unknown libfixbuf error";
  if (err) g_clear_error(&err);
  return msg;
}

}  // namespace ipfixweb::engine::fixbuf
