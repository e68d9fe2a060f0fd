// Engine reuse in one process: nDPI's per-module caches must not carry over between convert()
// calls, so a second conversion labels exactly like the first (and like a fresh process).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <vector>

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

// What a conversion says about labels: if a reset module carried anything over from an
// earlier capture (a cached BitTorrent peer, a STUN address, a TLS certificate), some flow's
// label and therefore these counts would change.
nlohmann::json label_view(const nlohmann::json& s) {
  return {{"by_flows", s["top_applications_by_flows"]},
          {"by_bytes", s["top_applications_by_bytes"]},
          {"distinct", s["applications_distinct"]},
          {"dpi", s["dpi_stats"]},
          {"analysis", s.value("analysis", nlohmann::json())}};
}

// The worker's task runners convert many captures with one nDPI module, reset between tasks.
// Every capture of the corpus, converted after all the others by one engine, must be labelled
// exactly as by an engine that never converted anything before.
TEST(EngineReuse, ResetModuleLabelsLikeAFreshOneOverTheCorpus) {
  const std::string pcaps = pcaps_dir();
  if (pcaps.empty()) GTEST_SKIP() << "shared pcaps not found";
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(pcaps)) {
    const auto ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".pcap" || ext == ".pcapng" || ext == ".cap"))
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GT(files.size(), 20u);
  TempDir dir;
  auto options = [&](const std::string& in) {
    Options o;
    o.inputs = {in};
    o.output = dir.file("x.ipfix");
    o.analysis = {"tcp", "udp", "icmp", "dns", "tls", "http", "quic"};
    return o;
  };
  std::map<std::string, nlohmann::json> fresh;
  for (const auto& in : files) {
    Engine e;
    try {
      fresh[in] = label_view(e.convert(options(in)));
    } catch (const EngineError& err) {
      fresh[in] = err.what();
    }
  }
  Engine reused;
  std::size_t compared = 0;
  for (int round = 0; round < 2; ++round) {  // reverse order, then forward again
    for (std::size_t i = 0; i < files.size(); ++i) {
      const auto& in = round == 0 ? files[files.size() - 1 - i] : files[i];
      nlohmann::json got;
      try {
        got = label_view(reused.convert(options(in)));
      } catch (const EngineError& err) {
        got = err.what();
      }
      EXPECT_EQ(fresh[in], got) << in << " (round " << round << ")";
      ++compared;
    }
  }
  EXPECT_EQ(compared, 2 * files.size());
  // The point of resetting: nDPI is not set up again for every conversion. (A capture that
  // creates nDPI's TINC cache forces a new module; the corpus has at most a few.)
  EXPECT_LE(reused.dpi_initialisations(), 1 + 2 * 3u);
  std::printf("[          ] %zu conversions, nDPI initialised %llu times\n", compared,
              static_cast<unsigned long long>(reused.dpi_initialisations()));
}

}  // namespace
}  // namespace ipfixweb::engine::test
