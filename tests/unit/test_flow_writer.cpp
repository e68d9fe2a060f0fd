// The flow store as flows::Writer writes it (format version 2), on a generated store: the
// pre-aggregated top table equals a GROUP BY over the flows, /top's query reads it, and the
// exports rendered from the packed rows equal the exports rendered column by column.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "ipfixweb/flows/export.hpp"
#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/store.hpp"
#include "ipfixweb/flows/writer.hpp"
#include "ipfixweb/shared/json_escape.hpp"

namespace fl = ipfixweb::flows;

namespace {

// Deterministic pseudo-random numbers.
struct Lcg {
  std::uint64_t s = 0x12345678;
  std::uint64_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s >> 33;
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }
};

// A writer of the store at `path` that does not fsync (tests only).
fl::WriterConfig unsynced(const std::string& path) {
  fl::WriterConfig cfg;
  cfg.name = path;
  cfg.sync = false;
  cfg.sync_dir = false;
  return cfg;
}

// A store of `rows` generated flows with many ties (values from small ranges), NULL keys,
// IPv6 and IPv4-mapped IPv6 addresses, texts that need escaping or are not UTF-8.
std::string write_store(const std::filesystem::path& dir, int rows, bool indexes_last = false,
                        std::uint32_t page_size = 4096) {
  const std::string path = (dir / ((indexes_last ? "gen-indexed-last" : "gen") +
                                   std::to_string(page_size) + ".flows.sqlite"))
                               .string();
  fl::WriterConfig cfg = unsynced(path);
  cfg.indexes_last = indexes_last;
  cfg.page_size = page_size;
  fl::Writer w(cfg);
  Lcg g;
  const char* apps[] = {"TLS.YouTube", "DNS", "Unknown", "HTTP", "QUIC", "", "TLS", "NTP"};
  std::vector<std::string> names;
  for (int i = 0; i < 1500; ++i) names.push_back("host" + std::to_string(i) + ".example");
  names.push_back("caf\xc3\xa9.example");  // UTF-8
  names.push_back("bad\xe9name");          // not UTF-8
  names.push_back("a,\"quoted\"\nname");   // CSV and JSON escapes
  for (int i = 0; i < rows; ++i) {
    fl::FlowRow r;
    r.start_ms = 1'700'000'000'000ull + g.below(100'000);
    r.end_ms = r.start_ms + g.below(5000);
    if (i == 7) r.end_ms = r.start_ms - 3;  // out of order: a negative duration
    const std::uint64_t kind = g.below(20);
    r.ip_version = kind == 0 || kind == 1 ? 6 : 4;
    const auto v4 = [&](std::uint32_t a) {
      const std::uint8_t b[4] = {static_cast<std::uint8_t>(a >> 24),
                                 static_cast<std::uint8_t>(a >> 16),
                                 static_cast<std::uint8_t>(a >> 8), static_cast<std::uint8_t>(a)};
      return fl::v4_key(b);
    };
    const auto src_n = static_cast<std::uint32_t>(g.below(3000));
    const auto dst_n = static_cast<std::uint32_t>(g.below(40));
    r.src = v4(0x0A000000u + src_n * 37);
    r.dst = v4(0xC0A80000u + dst_n);
    if (kind == 0) {  // IPv6
      r.src = {};
      r.src[0] = 0x20;
      r.src[1] = 0x01;
      r.src[15] = static_cast<std::uint8_t>(src_n % 7);
    }  // kind 1: an IPv4-mapped address in an IPv6 record (its own text, its own group)
    r.proto = static_cast<std::uint8_t>(std::array{6, 17, 17, 1, 58, 132, 200, 3}[g.below(8)]);
    r.sport = static_cast<std::uint16_t>(g.below(65536));
    r.dport = static_cast<std::uint16_t>(std::array{53, 80, 443, 8080, 5001, 0}[g.below(6)] +
                                         g.below(3) * 1000);
    r.vlan = static_cast<std::uint16_t>(g.below(3));
    r.fwd_packets = 1 + g.below(4);
    r.fwd_bytes = 40 * r.fwd_packets + g.below(3) * 10;
    r.has_rev = g.below(3) != 0;
    r.rev_packets = g.below(3);
    r.rev_bytes = r.rev_packets * 50;
    r.has_flags = g.below(10) != 0;
    r.tcp_flags = static_cast<std::uint16_t>(g.below(64));
    r.rev_tcp_flags = static_cast<std::uint16_t>(g.below(64));
    r.icmp_type_code = static_cast<std::uint16_t>(g.below(2) * 771);
    r.tos = static_cast<std::uint8_t>(g.below(2) * 32);
    r.end_reason = static_cast<std::uint8_t>(g.below(6));
    r.has_app = g.below(5) != 0;
    r.app_id = static_cast<std::uint16_t>(g.below(300));
    r.app = apps[g.below(8)];
    r.server_name = g.below(2) ? std::string_view(names[g.below(names.size())]) : "";
    r.ja3c = g.below(3) == 0 ? "e7d705a3286e19ea42f587b344ee6865" : "";
    r.community_id = g.below(10) ? "1:LQU9qZlK+B5F3KDmev6m5PMibrg=" : "";
    r.risk = g.below(4) == 0 ? (1ull << 40) + g.below(8) : 0;
    r.risk_score = static_cast<std::uint32_t>(g.below(200));
    r.risks = r.risk ? "Known Proto on Non Std Port,TLS (probably) Not Carrying HTTPS" : "";
    w.add(r);
    w.series().count_record(r.start_ms, r.has_app ? r.app : "", r.proto);
  }
  w.commit();
  return path;
}

// Every row of a statement as text: each value's type letter and text.
std::vector<std::string> rows_of(sqlite3* db, const std::string& sql,
                                 const std::vector<fl::SqlValue>& binds) {
  std::vector<std::string> out;
  const auto r = fl::run_query(db, sql, binds, [&](sqlite3_stmt* s) {
    std::string row;
    for (int i = 0; i < sqlite3_column_count(s); ++i) {
      const int t = sqlite3_column_type(s, i);
      row += "NIFTB"[t == SQLITE_NULL      ? 0
                     : t == SQLITE_INTEGER ? 1
                     : t == SQLITE_FLOAT   ? 2
                     : t == SQLITE_TEXT    ? 3
                                           : 4];
      if (t != SQLITE_NULL) {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
        row.append(p, static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
      }
      row += '|';
    }
    out.push_back(row);
    return true;
  });
  EXPECT_TRUE(r.ok()) << r.message << "\n" << sql;
  return out;
}

class FlowWriter : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/flow-writer-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = write_store(dir_, 5000);
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  static std::string export_text(sqlite3* db, fl::ListQuery q, fl::Format f, bool packed) {
    if (!packed) q.packed_sql.clear();
    fl::RowExport rows(db, std::move(q), f);
    std::string all, piece;
    for (bool more = true; more;) {
      piece.clear();
      more = rows.fill(piece, 4096);
      all += piece;
    }
    return all;
  }

  static inline std::filesystem::path dir_;
  static inline std::string path_;
};

}  // namespace

// A merge builds its store's indexes after the rows (WriterConfig::indexes_last): the same
// schema, rows, series, top table and meta as a store whose indexes grew row by row.
TEST_F(FlowWriter, AStoreWhoseIndexesAreBuiltLastIsTheSameStore) {
  const std::string last = write_store(dir_, 5000, true);
  fl::Store a(path_), b(last);
  for (const std::string sql :
       {"SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name",
        "SELECT * FROM flow_rows ORDER BY rowid", "SELECT * FROM series ORDER BY 1, 2, 3",
        "SELECT * FROM top ORDER BY 1, 2, 3",
        "SELECT * FROM meta WHERE key <> 'created_at' ORDER BY key",
        "SELECT count(*) FROM flow_rows INDEXED BY flow_rows_bytes WHERE bytes > 100"}) {
    const auto want = rows_of(a.handle(), sql, {});
    EXPECT_FALSE(want.empty()) << sql;
    EXPECT_EQ(rows_of(b.handle(), sql, {}), want) << sql;
  }
}

// A store of larger pages (the engine's for large inputs) holds the same schema, rows, series,
// top table and meta, and answers a grouped /top the same.
TEST_F(FlowWriter, AStoreOfLargerPagesIsTheSameStore) {
  const std::string large = write_store(dir_, 5000, false, fl::kLargeStorePageSize);
  fl::Store a(path_), b(large);
  EXPECT_EQ(rows_of(a.handle(), "PRAGMA page_size", {}), std::vector<std::string>{"I4096|"});
  EXPECT_EQ(rows_of(b.handle(), "PRAGMA page_size", {}), std::vector<std::string>{"I16384|"});
  for (const std::string sql :
       {"SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name",
        "SELECT * FROM flow_rows ORDER BY rowid", "SELECT * FROM series ORDER BY 1, 2, 3",
        "SELECT * FROM top ORDER BY 1, 2, 3",
        "SELECT * FROM meta WHERE key <> 'created_at' ORDER BY key"}) {
    const auto want = rows_of(a.handle(), sql, {});
    EXPECT_FALSE(want.empty()) << sql;
    EXPECT_EQ(rows_of(b.handle(), sql, {}), want) << sql;
  }
  EXPECT_THROW(
      {
        fl::WriterConfig cfg = unsynced((dir_ / "odd.flows.sqlite").string());
        cfg.page_size = 3000;
        fl::Writer w(cfg);
      },
      fl::Error);
}

TEST_F(FlowWriter, TheTopTableIsTheFirstGroupsOfAGroupByOverTheFlows) {
  fl::Store store(path_);
  EXPECT_EQ(store.meta("version"), std::to_string(fl::kVersion));
  EXPECT_EQ(store.meta("top_dims"), "app,src,dst,pair,server_name,ja3,port,proto");
  EXPECT_EQ(store.meta_u64("top_k"), static_cast<std::uint64_t>(fl::kTopK));
  const std::pair<std::string, std::string> keys[] = {{"app", "app"},
                                                      {"src", "src"},
                                                      {"dst", "dst"},
                                                      {"pair", "src, dst"},
                                                      {"server_name", "server_name"},
                                                      {"ja3", "ja3c"},
                                                      {"port", "dport"},
                                                      {"proto", "proto_name"}};
  std::size_t more_than_k = 0;
  for (const auto& [dim, cols] : keys) {
    const std::string key_sql = dim == "pair" ? "key, key2" : "key";
    for (const std::string metric : {"bytes", "packets", "flows"}) {
      SCOPED_TRACE(dim + " by " + metric);
      const std::string order = metric == "bytes" ? "2" : metric == "packets" ? "3" : "4";
      const std::size_t nk = dim == "pair" ? 2 : 1;
      const std::string grouped =
          "SELECT " + cols + ", sum(bytes), sum(packets), count(*) FROM flows GROUP BY " + cols +
          " ORDER BY " + (nk == 2 ? std::to_string(std::stoi(order) + 1) : order) + " DESC, " +
          (nk == 2 ? "1, 2" : "1") + " LIMIT " + std::to_string(fl::kTopK);
      const auto want = rows_of(store.handle(), grouped, {});
      const auto got = rows_of(store.handle(),
                               "SELECT " + key_sql +
                                   ", bytes, packets, flows FROM top WHERE dim = ? AND "
                                   "metric = ? ORDER BY rank",
                               {{dim}, {metric}});
      EXPECT_EQ(got, want);
      if (want.size() == static_cast<std::size_t>(fl::kTopK)) ++more_than_k;
      // /top reads the table (n up to top_k) and answers what it answers from the flows.
      for (const char* n : {"20", "1000"}) {
        auto fast = fl::build_top({.by = dim,
                                   .metric = metric,
                                   .n = n,
                                   .top_dims = store.meta("top_dims"),
                                   .top_k = fl::kTopK});
        auto slow = fl::build_top({.by = dim, .metric = metric, .n = n});
        const auto& f = std::get<fl::TopQuery>(fast);
        const auto& s = std::get<fl::TopQuery>(slow);
        EXPECT_NE(f.sql.find("FROM top"), std::string::npos) << f.sql;
        EXPECT_EQ(f.columns, s.columns);
        EXPECT_EQ(rows_of(store.handle(), f.sql, f.binds), rows_of(store.handle(), s.sql, s.binds));
      }
    }
  }
  EXPECT_GE(more_than_k, 6u);  // src and pair have more groups than the table keeps
  // A filter, or n above top_k, groups the flows.
  auto filtered = fl::build_top(
      {.filter = "proto udp", .by = "src", .top_dims = store.meta("top_dims"), .top_k = 1000});
  EXPECT_EQ(std::get<fl::TopQuery>(filtered).sql.find("FROM top"), std::string::npos);
}

TEST_F(FlowWriter, ExportsFromPackedRowsEqualExportsReadColumnByColumn) {
  fl::Store store(path_);
  const fl::ListParams listings[] = {
      {.unbounded = true},
      {.filter = "proto udp or app ~ \"tls\"", .sort = "-bytes,src", .unbounded = true},
      {.fields = "src,dst,bytes,start_time,end_time,proto_name,app,server_name,duration,risks",
       .sort = "-start_ms",
       .limit = "777",
       .unbounded = true},
      {.fields = "id", .unbounded = true},
  };
  for (const auto& p : listings) {
    for (const auto f : {fl::Format::Ndjson, fl::Format::Csv}) {
      SCOPED_TRACE(std::string(p.filter) + " / " + std::string(p.fields) + " / " +
                   std::string(p.sort) + (f == fl::Format::Csv ? " csv" : " ndjson"));
      const auto q = std::get<fl::ListQuery>(fl::build_list(p));
      const std::string packed = export_text(store.handle(), q, f, true);
      const std::string columns = export_text(store.handle(), q, f, false);
      EXPECT_GT(packed.size(), 1000u);
      EXPECT_EQ(packed, columns);
    }
  }
}

TEST_F(FlowWriter, AnExportStoppedEarlyEndsItsReaderThread) {
  fl::Store store(path_);
  for (int i = 0; i < 20; ++i) {
    fl::RowExport rows(store.handle(), std::get<fl::ListQuery>(fl::build_list({.unbounded = true})),
                       fl::Format::Ndjson);
    std::string piece;
    EXPECT_TRUE(rows.fill(piece, 100));
    EXPECT_FALSE(piece.empty());
  }  // destroyed with rows left to read
}

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  std::string out;
  if (!f) return out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  std::fclose(f);
  return out;
}

bool temporary_left(const std::filesystem::path& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) return true;
  return false;
}

// One flow, then commit; `meanwhile` runs between the writer's making and its commit.
void write_one(const std::string& path, const std::function<void()>& meanwhile) {
  fl::Writer w(unsynced(path));
  fl::FlowRow r;
  r.start_ms = r.end_ms = 1'700'000'000'000ull;
  r.ip_version = 4;
  r.proto = 17;
  r.fwd_packets = 1;
  r.fwd_bytes = 60;
  w.add(r);
  meanwhile();
  w.commit();
}

}  // namespace

// The store's own part of "a run given up for lost does not replace the output of the run
// that succeeded" (found by review: a later run's store could be replaced between the IPFIX
// file's check and the store's rename): a name that was free is taken by a hard link, which
// fails when another writer got there first; a name that held a file is renamed over only
// while it still holds that file.
TEST(FlowWriterPublication, AStoreDoesNotReplaceAFileAnotherWriterPutUnderItsName) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("ipfixweb-writer-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto other = [&](const std::filesystem::path& p) {
    return [p] {
      const auto tmp = p.string() + ".other";
      std::FILE* f = std::fopen(tmp.c_str(), "wb");
      std::fputs("another writer's store", f);
      std::fclose(f);
      std::filesystem::rename(tmp, p);
    };
  };
  // Free at the start, taken meanwhile.
  const auto free_name = dir / "free.flows.sqlite";
  EXPECT_THROW(write_one(free_name.string(), other(free_name)), fl::Replaced);
  EXPECT_EQ(slurp(free_name), "another writer's store");
  // Held a file at the start (an overwrite), replaced meanwhile.
  const auto held = dir / "held.flows.sqlite";
  other(held)();
  EXPECT_THROW(write_one(held.string(), other(held)), fl::Replaced);
  EXPECT_EQ(slurp(held), "another writer's store");
  // Held a file that stays: replaced by the store, as an overwrite does.
  write_one(held.string(), [] {});
  EXPECT_EQ(slurp(held).rfind("SQLite format 3", 0), 0u);
  // Free, and free at the end: the store.
  const auto fresh = dir / "fresh.flows.sqlite";
  write_one(fresh.string(), [] {});
  EXPECT_EQ(slurp(fresh).rfind("SQLite format 3", 0), 0u);
  EXPECT_FALSE(temporary_left(dir));
  std::filesystem::remove_all(dir);
}

// The series as the engine builds them (buckets per record while it is metered, summed when
// it ends; the bucket size doubles as the span grows, here from 1 ms to 8 s, with packets
// before the first one seen too): the cells equal a plain sum of every packet and record at
// the final bucket size.
TEST(SeriesBuilder, CellsSummedAsRecordsEndEqualPlainSumsAtTheFinalBucketSize) {
  fl::SeriesBuilder series;
  Lcg g;
  constexpr int kFlows = 40;
  std::vector<fl::RecordBuckets> live(kFlows);
  std::vector<std::uint64_t> start(kFlows, 0);
  std::vector<std::uint8_t> proto(kFlows);
  std::vector<std::string> app(kFlows);
  const char* apps[] = {"TLS", "DNS", "", "QUIC"};
  struct Packet {
    std::uint64_t ts, bytes;
    int flow;
  };
  std::map<std::tuple<int, std::string, std::uint64_t>, std::array<std::uint64_t, 3>> want;
  std::uint64_t t = 5'000'000'000'000ull;
  for (int f = 0; f < kFlows; ++f) {
    proto[f] = static_cast<std::uint8_t>(std::array{6, 17, 1}[g.below(3)]);
    app[f] = apps[g.below(4)];
  }
  std::vector<std::tuple<int, std::string, std::uint8_t, std::vector<Packet>>> records;
  std::vector<std::vector<Packet>> of(kFlows);
  for (int i = 0; i < 20000; ++i) {
    // Mostly forward in time, by growing steps (the span reaches about 3.5 hours), now and
    // then a packet from before the first one.
    t += g.below(1 + static_cast<std::uint64_t>(i) / 8);
    const std::uint64_t ts = i % 997 == 500 ? 5'000'000'000'000ull - g.below(100'000) : t;
    const int f = static_cast<int>(g.below(kFlows));
    const std::uint64_t bytes = 40 + g.below(1400);
    series.on_packet(live[f], ts, bytes);
    if (of[f].empty()) start[f] = ts;
    of[f].push_back({ts, bytes, f});
    if (g.below(50) == 0) {  // the record ends; its slot starts another one
      series.count_record(start[f], app[f], proto[f]);
      series.on_flow(live[f], app[f], proto[f]);
      records.emplace_back(f, app[f], proto[f], std::move(of[f]));
      of[f].clear();
      app[f] = apps[g.below(4)];
    }
  }
  for (int f = 0; f < kFlows; ++f) {
    if (of[f].empty()) continue;
    series.count_record(start[f], app[f], proto[f]);
    series.on_flow(live[f], app[f], proto[f]);
    records.emplace_back(f, app[f], proto[f], std::move(of[f]));
  }
  const std::uint64_t res = series.bucket_ms();
  EXPECT_GE(res, 4096u);  // twelve or more doublings
  // The smallest size that holds the span in kMaxBuckets buckets.
  std::uint64_t lo = UINT64_MAX, hi = 0;
  for (const auto& rec : records)
    for (const auto& x : std::get<3>(rec)) {
      lo = std::min(lo, x.ts);
      hi = std::max(hi, x.ts);
    }
  EXPECT_LE(hi / res - lo / res + 1, fl::kMaxBuckets);
  EXPECT_GT(hi / (res / 2) - lo / (res / 2) + 1, fl::kMaxBuckets);
  for (const auto& rec : records) {
    const std::string& a = std::get<1>(rec);
    const std::uint8_t p = std::get<2>(rec);
    const std::vector<Packet>& pk = std::get<3>(rec);
    const auto add = [&](int dim, const std::string& key) {
      if (dim == fl::SeriesBuilder::kApp && a.empty()) return;
      want[{dim, key, pk.front().ts / res * res}][2] += 1;
      for (const auto& x : pk) {
        auto& c = want[{dim, key, x.ts / res * res}];
        c[0] += 1;
        c[1] += x.bytes;
      }
    };
    add(fl::SeriesBuilder::kProto, fl::proto_name(p));
    add(fl::SeriesBuilder::kApp, a);
  }
  std::map<std::tuple<int, std::string, std::uint64_t>, std::array<std::uint64_t, 3>> got;
  series.for_each([&](fl::SeriesBuilder::Dim dim, const std::string& key, std::uint64_t b,
                      const fl::SeriesBuilder::Cell& c) {
    got[{dim, key, b}] = {c.packets, c.bytes, c.flows};
  });
  EXPECT_GT(want.size(), 100u);
  EXPECT_EQ(got, want);
}

// A row with every number at its largest, IPv6 addresses and long texts is stored and read
// back as it was written (the packed form is written into room made for its largest size).
TEST(FlowWriterRows, ARowWithEveryValueAtItsLargestIsStoredAsItWasWritten) {
  char tmpl[] = "/tmp/flow-writer-max-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/max.flows.sqlite";
  const std::string app(300, 'a'), server(5000, 's'), ja3(200, 'j'), cid(100, 'c'),
      risks(3000, 'r');
  {
    fl::Writer w(unsynced(path));
    fl::FlowRow r;
    r.start_ms = 0;
    r.end_ms = UINT64_MAX;  // the largest zigzag duration
    r.ip_version = 6;
    r.src.fill(0xFF);
    r.dst.fill(0xFE);
    r.proto = 255;
    r.sport = r.dport = r.vlan = UINT16_MAX;
    r.fwd_packets = r.fwd_bytes = r.rev_packets = r.rev_bytes = UINT64_MAX / 4;
    r.has_rev = r.has_flags = r.has_app = true;
    r.tcp_flags = r.rev_tcp_flags = r.icmp_type_code = r.rev_icmp_type_code = UINT16_MAX;
    r.tos = r.rev_tos = 255;
    r.end_reason = 255;
    r.app_id = UINT16_MAX;
    r.risk = UINT64_MAX;
    r.risk_score = UINT32_MAX;
    r.app = app;
    r.server_name = server;
    r.ja3c = ja3;
    r.community_id = cid;
    r.risks = risks;
    for (int i = 0; i < 3; ++i) w.add(r);
    w.commit();
  }
  fl::Store store(path);
  const auto q = std::get<fl::ListQuery>(fl::build_list({.unbounded = true}));
  fl::RowExport rows(store.handle(), q, fl::Format::Ndjson);
  std::string all;
  for (bool more = true; more;) more = rows.fill(all, 1 << 20);
  const std::string want_prefix = "{\"id\":1,";
  EXPECT_EQ(all.compare(0, want_prefix.size(), want_prefix), 0) << all.substr(0, 200);
  for (const std::string& part : std::vector<std::string>{
           "\"src\":\"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\"", "\"sport\":65535",
           "\"fwd_bytes\":" + std::to_string(UINT64_MAX / 4),
           "\"risk\":" + std::to_string(static_cast<std::int64_t>(UINT64_MAX)),
           "\"risk_score\":4294967295", "\"app\":\"" + app + "\"",
           "\"server_name\":\"" + server + "\"", "\"risks\":\"" + risks + "\"",
           "\"community_id\":\"" + cid + "\"", "\"ja3c\":\"" + ja3 + "\""}) {
    EXPECT_NE(all.find(part), std::string::npos) << part.substr(0, 80);
  }
  EXPECT_EQ(std::count(all.begin(), all.end(), '\n'), 3);
  std::filesystem::remove_all(tmpl);
}

// Review finding: a name that is not UTF-8 (a server name off the wire, or from an ingested
// IPFIX file) was written to CSV exports raw, under "text/csv; charset=utf-8", while NDJSON
// exports give each byte above 0x7F as the character of that code point (docs/flow-store.md).
// Both exports are now UTF-8 alike.
TEST(FlowWriterRows, ANameThatIsNotUtf8IsExportedAsUtf8InCsvAsInNdjson) {
  char tmpl[] = "/tmp/flow-writer-latin1-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/l1.flows.sqlite";
  {
    fl::Writer w(unsynced(path));
    fl::FlowRow r;
    r.start_ms = 1;
    r.end_ms = 2;
    r.ip_version = 4;
    r.proto = 17;
    r.fwd_packets = 1;
    r.fwd_bytes = 60;
    r.server_name =
        "hi\xff"
        "by\"te,";
    w.add(r);
    w.commit();
  }
  fl::Store store(path);
  const auto q =
      std::get<fl::ListQuery>(fl::build_list({.fields = "server_name", .unbounded = true}));
  std::string csv, ndjson;
  fl::RowExport c(store.handle(), q, fl::Format::Csv);
  for (bool more = true; more;) more = c.fill(csv, 1 << 20);
  fl::RowExport n(store.handle(), q, fl::Format::Ndjson);
  for (bool more = true; more;) more = n.fill(ndjson, 1 << 20);
  EXPECT_TRUE(ipfixweb::is_valid_utf8(csv)) << csv;
  EXPECT_NE(csv.find("\"hi\xc3\xbf"
                     "by\"\"te,\""),
            std::string::npos)
      << csv;
  EXPECT_NE(ndjson.find("\"hi\xc3\xbf"
                        "by\\\"te,\""),
            std::string::npos)
      << ndjson;
  std::filesystem::remove_all(tmpl);
}

// A store starts as the bytes of an empty store made once per process: its schema is what the
// schema's SQL makes, and the file is sound.
TEST_F(FlowWriter, AStoreStartsWithTheSchemaItsSqlMakes) {
  sqlite3* mem = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &mem), SQLITE_OK);
  const std::string sql = fl::create_tables_sql() + fl::create_indexes_sql();
  ASSERT_EQ(sqlite3_exec(mem, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  const std::string master = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name";
  const auto want = rows_of(mem, master, {});
  sqlite3_close(mem);
  fl::Store store(path_);
  EXPECT_EQ(rows_of(store.handle(), master, {}), want);
  EXPECT_EQ(rows_of(store.handle(), "PRAGMA integrity_check", {}),
            std::vector<std::string>{"Tok|"});
  EXPECT_EQ(rows_of(store.handle(), "PRAGMA page_size", {}), std::vector<std::string>{"I4096|"});
}

namespace {

// A /top answer in rows_of's form.
std::vector<std::string> rows_of_groups(const std::vector<fl::TopGroup>& groups) {
  std::vector<std::string> out;
  for (const auto& g : groups) {
    std::string row;
    for (const auto& k : g.keys) {
      if (std::holds_alternative<std::monostate>(k)) row += "N|";
      if (const auto* i = std::get_if<std::int64_t>(&k)) row += "I" + std::to_string(*i) + "|";
      if (const auto* s = std::get_if<std::string>(&k)) row += "T" + *s + "|";
      if (std::holds_alternative<double>(k)) row += "F?|";
    }
    for (auto v : {g.bytes, g.packets, g.flows}) row += "I" + std::to_string(v) + "|";
    out.push_back(row);
  }
  return out;
}

// A grouping over up to `threads` connections to the store at `path`, one per 1000 flows at
// least (small stores are spread too), reporting what it did to `plan`.
fl::GroupRun spread_over(int threads, const std::string& path, fl::GroupRun::Plan* plan) {
  fl::GroupRun run;
  run.threads = threads;
  run.open = [path] { return std::make_unique<fl::Store>(path); };
  run.rows_per_thread = 1000;
  run.plan = plan;
  return run;
}

// A generated store of 3000 flows, in a directory of its own, then changed by `sql`: a store
// another tool might have written.
class EditedStore {
 public:
  explicit EditedStore(const char* sql) {
    char tmpl[] = "/tmp/flow-grouping-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    path_ = write_store(dir_, 3000);
    sqlite3* db = nullptr;
    const bool ok = sqlite3_open(path_.c_str(), &db) == SQLITE_OK &&
                    sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
    const std::string error = db ? sqlite3_errmsg(db) : "no connection";
    sqlite3_close(db);
    if (!ok) throw std::runtime_error("editing the store: " + error);
  }
  ~EditedStore() { std::filesystem::remove_all(dir_); }
  EditedStore(const EditedStore&) = delete;
  EditedStore& operator=(const EditedStore&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

}  // namespace

// /top over a filter groups the flows by a hash aggregation (flows::run_top) in place of
// SQLite's GROUP BY: on one connection or several (each over a range of flow ids), with every
// group in the first table or spilled into partitions, it answers the GROUP BY's groups,
// totals and order, ties broken by the key as SQLite orders it (NULL first, texts as bytes,
// IPv6 and IPv4 addresses as texts).
TEST_F(FlowWriter, TopGroupedByHashEqualsTheGroupByOnAnyNumberOfConnections) {
  fl::Store store(path_);
  const std::string filters[] = {"", "proto udp", "bytes > 100 and not port 53",
                                 "app ~ \"tls\" or port 443", "bytes > 100000000000"};
  struct Shape {
    int threads;
    std::int64_t rows_per_thread;
    std::size_t local_groups;
  };
  const Shape shapes[] = {{1, 65536, 65536}, {1, 65536, 16}, {3, 1000, 65536}, {2, 1000, 4}};
  std::size_t compared = 0, spilled = 0;
  for (const auto& d : fl::kTopDimensions) {
    for (const auto metric : fl::kMetrics) {
      for (const auto& filter : filters) {
        for (const char* n : {"1", "7", "1000"}) {
          const auto built =
              fl::build_top({.filter = filter, .by = d.name, .metric = metric, .n = n});
          const auto& q = std::get<fl::TopQuery>(built);
          ASSERT_TRUE(q.grouping.has_value());
          const auto want = rows_of(store.handle(), q.sql, q.binds);
          for (const auto& shape : shapes) {
            SCOPED_TRACE(std::string(d.name) + " by " + std::string(metric) + " where '" + filter +
                         "' n " + n + ", " + std::to_string(shape.threads) + " connections, " +
                         std::to_string(shape.local_groups) + " groups in the table");
            fl::GroupRun::Plan plan;
            std::vector<fl::TopGroup> got;
            fl::GroupRun run = spread_over(shape.threads, path_, &plan);
            run.rows_per_thread = shape.rows_per_thread;
            run.local_groups = shape.local_groups;
            const auto o = fl::run_top(store.handle(), q, run, got);
            ASSERT_TRUE(o.ok()) << o.message;
            EXPECT_TRUE(plan.grouped);
            // A range of bytes is read from its index on one connection (ranges of flow ids
            // would cost that index: FlowWriter.TopOverAnIndexedRangeKeepsTheIndex).
            EXPECT_EQ(plan.threads, filter.starts_with("bytes >") ? 1 : shape.threads);
            EXPECT_EQ(rows_of_groups(got), want);
            ++compared;
            spilled += plan.spilled;
          }
        }
      }
    }
  }
  EXPECT_EQ(compared, fl::kTopDimensions.size() * 3 * 5 * 3 * 4);
  EXPECT_GT(spilled, compared / 3);
}

// Past its memory limit the grouping gives way to SQLite's GROUP BY (which spills to
// temporary files): the same answer, grouped by SQL.
TEST_F(FlowWriter, TopGroupsBeyondTheMemoryLimitAreLeftToTheGroupBy) {
  fl::Store store(path_);
  const auto q =
      std::get<fl::TopQuery>(fl::build_top({.filter = "bytes > 0", .by = "pair", .n = "50"}));
  fl::GroupRun::Plan plan;
  std::vector<fl::TopGroup> got;
  fl::GroupRun run;
  run.memory_limit = 4096;
  run.plan = &plan;
  ASSERT_TRUE(fl::run_top(store.handle(), q, run, got).ok());
  EXPECT_FALSE(plan.grouped);
  EXPECT_EQ(rows_of_groups(got), rows_of(store.handle(), q.sql, q.binds));
  EXPECT_EQ(got.size(), 50u);
  // With room, the same store is grouped by hash.
  run.memory_limit = fl::GroupRun{}.memory_limit;
  ASSERT_TRUE(fl::run_top(store.handle(), q, run, got).ok());
  EXPECT_TRUE(plan.grouped);
  EXPECT_EQ(rows_of_groups(got), rows_of(store.handle(), q.sql, q.binds));
}

// Found in review: the ranges of flow ids that spread a grouping over connections made SQLite
// scan every row of each range instead of reading a selective index (an indexed range such as
// `bytes > N` or a time window cannot be combined with a range of ids): 149 ms instead of
// 0.1 ms on a million flows. Such a filter is read through its index on one connection; an
// equality on an indexed column combines with the ranges and keeps them; no index, ranges.
TEST_F(FlowWriter, TopOverAnIndexedRangeKeepsTheIndex) {
  fl::Store store(path_);
  const std::pair<const char*, int> cases[] = {{"bytes > 100000", 1},
                                               {"start > 1700000000000", 1},
                                               {"bytes > 10 and bytes < 20", 1},
                                               {"dst port 53", 3},
                                               {"proto udp", 3},
                                               {"", 3}};
  for (const auto& [filter, threads] : cases) {
    SCOPED_TRACE(filter);
    const auto q = std::get<fl::TopQuery>(fl::build_top({.filter = filter, .by = "src"}));
    fl::GroupRun::Plan plan;
    const fl::GroupRun run = spread_over(3, path_, &plan);
    std::vector<fl::TopGroup> got;
    ASSERT_TRUE(fl::run_top(store.handle(), q, run, got).ok());
    EXPECT_TRUE(plan.grouped);
    EXPECT_EQ(plan.threads, threads);
    EXPECT_EQ(rows_of_groups(got), rows_of(store.handle(), q.sql, q.binds));
  }
}

// A second connection that cannot be had (EMFILE, say) leaves the answer to SQLite on the
// caller's connection, not a failed request.
TEST_F(FlowWriter, TopWithoutASecondConnectionIsAnsweredBySql) {
  fl::Store store(path_);
  const auto q = std::get<fl::TopQuery>(fl::build_top({.filter = "proto udp", .by = "src"}));
  for (const bool throws : {true, false}) {
    fl::GroupRun::Plan plan;
    fl::GroupRun run = spread_over(2, path_, &plan);
    run.open = [throws]() -> std::unique_ptr<fl::Store> {
      if (throws) throw fl::Error("cannot open the flow store: Too many open files");
      return nullptr;
    };
    std::vector<fl::TopGroup> got;
    const auto o = fl::run_top(store.handle(), q, run, got);
    ASSERT_TRUE(o.ok()) << o.message;
    EXPECT_FALSE(plan.grouped);
    EXPECT_EQ(rows_of_groups(got), rows_of(store.handle(), q.sql, q.binds));
  }
}

// Found in review: a float among the summed values (a store written by another tool) was
// truncated by the grouping, where SQLite's sum() adds it as it is: such a store is grouped by
// SQL. The same for a key that is a float.
TEST(FlowGrouping, AFloatToSumOrToGroupByIsLeftToSql) {
  const EditedStore edited("UPDATE flow_rows SET bytes = bytes + 0.5 WHERE id % 3 = 0");
  fl::Store store(edited.path());
  const auto q = std::get<fl::TopQuery>(fl::build_top({.filter = "proto udp", .by = "app"}));
  fl::GroupRun::Plan plan;
  fl::GroupRun run;
  run.plan = &plan;
  std::vector<fl::TopGroup> got;
  ASSERT_TRUE(fl::run_top(store.handle(), q, run, got).ok());
  EXPECT_FALSE(plan.grouped);
  EXPECT_FALSE(got.empty());
  EXPECT_EQ(got.size(), rows_of(store.handle(), q.sql, q.binds).size());
}

// Found in review: flow ids spread over more than 2^62 (a store another tool wrote) overflowed
// the arithmetic that cuts them into ranges, and rows went missing from the answer.
TEST(FlowGrouping, IdsSpreadOverTheWholeRangeAreAllGrouped) {
  const EditedStore edited(
      "UPDATE flow_rows SET id = -9223372036854775807 WHERE id = 1;"
      "UPDATE flow_rows SET id = 4611686018427387904, bytes = 900000000 WHERE id = 2;"
      "UPDATE flow_rows SET id = 9223372036854775807, bytes = 800000000 WHERE id = 3;");
  fl::Store store(edited.path());
  for (const char* by : {"src", "app"}) {
    SCOPED_TRACE(by);
    const auto q =
        std::get<fl::TopQuery>(fl::build_top({.filter = "proto udp or proto tcp", .by = by}));
    fl::GroupRun::Plan plan;
    std::vector<fl::TopGroup> got;
    ASSERT_TRUE(fl::run_top(store.handle(), q, spread_over(3, edited.path(), &plan), got).ok());
    EXPECT_TRUE(plan.grouped);
    EXPECT_EQ(plan.threads, 3);
    EXPECT_EQ(rows_of_groups(got), rows_of(store.handle(), q.sql, q.binds));
  }
}

// A grouping that runs out of its budget reports TimedOut, as the GROUP BY would.
TEST_F(FlowWriter, TopGroupingOutOfTimeIsTimedOut) {
  fl::Store store(path_);
  const auto q = std::get<fl::TopQuery>(fl::build_top({.filter = "bytes > 0", .by = "src"}));
  std::vector<fl::TopGroup> got;
  fl::GroupRun run;
  run.budget = std::chrono::milliseconds(0);
  const auto o = fl::run_top(store.handle(), q, run, got);
  EXPECT_EQ(o.status, fl::QueryStatus::TimedOut) << o.message;
}

// A filtered /timeseries groups the flows as /top does (keys: the series' key and the bucket)
// and answers what its GROUP BY answers, whatever the connections and spilling.
TEST_F(FlowWriter, FilteredTimeseriesGroupedByHashEqualsTheGroupBy) {
  fl::Store store(path_);
  std::size_t compared = 0, spilled = 0;
  for (const std::string by : {"app", "proto"}) {
    for (const auto metric : fl::kMetrics) {
      for (const std::string filter :
           {"proto udp", "not port 53", "app ~ \"tls\" or port 443", "bytes > 1000000000000"}) {
        for (const std::string top : {"3", "100"}) {
          fl::TimeseriesParams p{.filter = filter, .by = by, .metric = metric, .top = top};
          p.store_bucket_ms = static_cast<std::int64_t>(store.meta_u64("bucket_ms"));
          p.first_ms = static_cast<std::int64_t>(store.meta_u64("first_ms"));
          p.last_ms = static_cast<std::int64_t>(store.meta_u64("last_ms"));
          const auto q = std::get<fl::TimeseriesQuery>(fl::build_timeseries(p));
          ASSERT_TRUE(q.grouping.has_value());
          nlohmann::json want;
          ASSERT_TRUE(fl::run_timeseries(store.handle(), q, want).ok());
          for (const auto& [threads, local] : {std::pair{1, 65536}, std::pair{3, 2}}) {
            SCOPED_TRACE(by + " by " + std::string(metric) + " where '" + filter + "' top " + top +
                         ", " + std::to_string(threads) + " connections");
            fl::GroupRun::Plan plan;
            fl::GroupRun run = spread_over(threads, path_, &plan);
            run.local_groups = static_cast<std::size_t>(local);
            nlohmann::json got;
            const auto o = fl::run_timeseries(store.handle(), q, run, got);
            ASSERT_TRUE(o.ok()) << o.message;
            EXPECT_TRUE(plan.grouped);
            EXPECT_EQ(got, want);
            ++compared;
            spilled += plan.spilled;
          }
        }
      }
    }
  }
  EXPECT_EQ(compared, 2u * 3 * 4 * 2 * 2);
  EXPECT_GE(spilled, compared / 3);
}

// Found by the ipfix_ingest fuzzer (tests/fuzz/regressions/ipfix_ingest/): an IPFIX record
// from 0 to 2^64 - 1 ms made the count of buckets the span needs overflow to 0, so the bucket
// size stayed 1 ms, and the next record (0 to 1.35 * 10^19 ms) was spread over that many
// buckets until memory ran out. Any span now fits in kMaxBuckets buckets, and the spread
// records' totals are kept.
TEST(SeriesBuilder, ARecordSpanningAllOfTimeFitsInTheBucketsAndKeepsItsTotals) {
  fl::SeriesBuilder series;
  series.on_spread_record(0, UINT64_MAX, 10, 1000, "DNS", 17);
  series.on_spread_record(293277563685400ull, 293277563685400ull, 3, 300, "DNS", 17);
  series.on_spread_record(0, 13527612320720337851ull, 7, 700, "", 6);
  std::uint64_t packets = 0, bytes = 0, flows = 0;
  std::map<std::string, std::set<std::uint64_t>> buckets;
  series.for_each([&](fl::SeriesBuilder::Dim dim, const std::string& key, std::uint64_t b,
                      const fl::SeriesBuilder::Cell& c) {
    if (dim != fl::SeriesBuilder::kProto) return;
    packets += c.packets;
    bytes += c.bytes;
    flows += c.flows;
    buckets[key].insert(b);
  });
  EXPECT_EQ(packets, 20u);
  EXPECT_EQ(bytes, 2000u);
  EXPECT_EQ(flows, 3u);
  for (const auto& [key, b] : buckets) EXPECT_LE(b.size(), fl::kMaxBuckets) << key;
  EXPECT_LE(UINT64_MAX / series.bucket_ms(), fl::kMaxBuckets);
}
