// Makes the binary seed inputs of the committed corpora (tests/fuzz/make-corpus runs it):
//
//   fuzz_seeds decoder OUTDIR CAPTURE...   frames of captures in fuzz_decoder's format: a link
//                                          type byte, then up to 8 frames (2-byte length, bytes)
//   fuzz_seeds protocol OUTDIR             one encoded message of every type (fuzz_protocol)
#include <pcap/pcap.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "fuzz_decoder_dlts.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace {

void write(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

int decoder_seeds(const std::string& outdir, int argc, char** argv) {
  int written = 0;
  for (int i = 0; i < argc; ++i) {
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* p = pcap_open_offline(argv[i], err);
    if (!p) {
      std::fprintf(stderr, "skip %s: %s\n", argv[i], err);
      continue;
    }
    const int dlt = pcap_datalink(p);
    std::size_t idx = fuzz::kDltCount;
    for (std::size_t k = 0; k < fuzz::kDltCount; ++k)
      if (fuzz::kDlts[k] == dlt) idx = k;
    if (idx == fuzz::kDltCount) {
      std::fprintf(stderr, "skip %s: link type %d not fuzzed\n", argv[i], dlt);
      pcap_close(p);
      continue;
    }
    std::string base = argv[i];
    base = base.substr(base.find_last_of('/') + 1);
    pcap_pkthdr* h = nullptr;
    const std::uint8_t* d = nullptr;
    std::string seed(1, static_cast<char>(idx));
    int frames = 0, seeds = 0;
    auto flush = [&] {
      if (frames == 0) return;
      write(outdir + "/" + base + "-" + std::to_string(seeds++), seed);
      ++written;
      seed.assign(1, static_cast<char>(idx));
      frames = 0;
    };
    while (pcap_next_ex(p, &h, &d) == 1 && seeds < 4) {
      const std::size_t len = std::min<std::size_t>(h->caplen, 1500);
      seed.push_back(static_cast<char>(len));
      seed.push_back(static_cast<char>(len >> 8));
      seed.append(reinterpret_cast<const char*>(d), len);
      if (++frames == 8) flush();
    }
    flush();
    pcap_close(p);
  }
  std::printf("decoder: %d seeds\n", written);
  return written > 0 ? 0 : 1;
}

int protocol_seeds(const std::string& outdir) {
  using namespace ipfixweb;
  namespace p = ipfixweb::proto;
  p::TaskSpec spec;
  spec.inputs = {"/data/input/a.pcap", "/data/input/b.pcapng.zst"};
  spec.output = "/data/output/a.ipfix";
  spec.analysis = {"tcp", "dns"};
  spec.filter = "tcp port 80";
  p::TaskSpec extract = spec;
  extract.kind = std::string(p::kKindExtract);
  extract.flow = "tcp 10.0.0.1:1234 <-> 10.0.0.2:80 vlan 5 ms 1700000000123-1700000000456";
  extract.filter.clear();
  p::Submit s{7,   R"({"pcap_files":["a.pcap"],"output_path":"a.ipfix"})", spec, "key-1", "fp", 3,
              true};
  int n = 0;
  auto put = [&](std::string_view type, const auto& body) {
    write(outdir + "/" + std::string(type) + "-" + std::to_string(n++), p::encode(type, body));
  };
  put(p::type::kSubmit, s);
  p::Submit se = s;
  se.spec = extract;
  put(p::type::kSubmit, se);
  put(p::type::kSubmitBatch, p::SubmitBatch{8, {s, se}});
  p::SubmitReply r;
  r.req_id = 7;
  r.accepted = true;
  r.task_id = "0190f5e4-7f6a-7c3e-9a1b-2b3c4d5e6f70";
  r.state = TaskState::Queued;
  put(p::type::kSubmitReply, r);
  p::SubmitReply refused;
  refused.code = Refusal::Capacity;
  refused.reason = "full";
  refused.retry_after = 1.5;
  put(p::type::kSubmitBatchReply, p::SubmitBatchReply{8, {r, refused}});
  put(p::type::kPing, p::Ping{9});
  p::Pong pong;
  pong.req_id = 9;
  pong.workers = 2;
  pong.duration_counts = {1, 2, 3};
  pong.worker_list = {p::WorkerStatus{"w1", "host", 42, 4, 1, 0.5}};
  put(p::type::kPong, pong);
  put(p::type::kCancel, p::Cancel{10, r.task_id});
  put(p::type::kCancelReply, p::CancelReply{10, CancelResult::Cancelling, TaskState::Running});
  p::Ready ready;
  ready.worker_id = "w1";
  ready.slots = 4;
  ready.running = {r.task_id};
  ready.grants = {"grant"};
  ready.incarnation = "inc";
  put(p::type::kReady, ready);
  put(p::type::kHeartbeat, p::Heartbeat{3});
  p::Task t;
  t.task_id = r.task_id;
  t.attempt = 2;
  t.spec = spec;
  t.timeout = 60;
  t.grant = "grant";
  t.rerun = true;
  put(p::type::kTask, t);
  put(p::type::kStarted, p::Started{r.task_id});
  put(p::type::kProgress, p::ProgressMsg{r.task_id, 0.5, 1000});
  p::Done d;
  d.task_id = r.task_id;
  d.state = Outcome::Succeeded;
  d.summary = R"({"packets":1})";
  d.packets = 1;
  d.grant = "grant";
  put(p::type::kDone, d);
  put(p::type::kAbort, p::Abort{r.task_id, "cancelled"});
  put(p::type::kBye, p::Bye{"shutting down"});
  std::printf("protocol: %d seeds\n", n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "decoder")
    return decoder_seeds(argv[2], argc - 3, argv + 3);
  if (argc == 3 && std::string(argv[1]) == "protocol") return protocol_seeds(argv[2]);
  std::fprintf(stderr, "usage: %s decoder OUTDIR CAPTURE... | protocol OUTDIR\n", argv[0]);
  return 2;
}
