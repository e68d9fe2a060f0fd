// Engine reuse in one process: nDPI's per-module caches must not carry over between convert()
// calls, so a second conversion labels exactly like the first (and like a fresh process).
#include <gtest/gtest.h>

#include <filesystem>

#include "ipfixweb/engine/engine.hpp"
#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

TEST(EngineReuse, SecondConvertLabelsLikeTheFirst) {
  const std::string pcaps = pcaps_dir();
  if (pcaps.empty()) GTEST_SKIP() << "shared pcaps not found";
  TempDir dir;
  Engine e;
  int checked = 0;
  // Captures whose labels depend on nDPI's caches (BitTorrent, STUN/Teams, Ookla, ...).
  for (const char* name : {"bittorrent.pcap", "bittorrent_utp.pcap", "stun_signal.pcapng",
                           "teams.pcap", "tls_torrent.pcapng", "skype.pcap"}) {
    const std::string in = pcaps + "/" + name;
    if (!std::filesystem::exists(in)) continue;
    Options o;
    o.inputs = {in};
    o.output = dir.file("a.ipfix");
    const auto first = e.convert(o);
    o.output = dir.file("b.ipfix");
    const auto second = e.convert(o);
    EXPECT_EQ(first["top_applications_by_flows"], second["top_applications_by_flows"]) << name;
    EXPECT_EQ(first["dpi_stats"], second["dpi_stats"]) << name;
    ++checked;
  }
  EXPECT_GT(checked, 2);
}

}  // namespace
}  // namespace ipfixweb::engine::test
