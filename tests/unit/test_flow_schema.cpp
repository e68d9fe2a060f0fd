// The flow store's one definition (shared/include/ipfixweb/flows/schema.hpp) and what is
// derived from it: the tables a new store gets, and the column table of docs/flow-store.md.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <sstream>

#include "ipfixweb/flows/schema.hpp"
#include "ipfixweb/flows/store.hpp"

namespace fl = ipfixweb::flows;

namespace {

std::string type_text(const fl::Column& c) {
  if (fl::is_computed(c))
    return c.type == fl::ColumnType::Integer ? "integer, computed" : "text, computed";
  switch (c.type) {
    case fl::ColumnType::Integer:
      return "integer";
    case fl::ColumnType::Text:
      return "text";
    case fl::ColumnType::Address:
      return "text (address)";
    case fl::ColumnType::Blob:
      return c.name.ends_with("_ip") ? "blob (16 bytes)" : "blob";
  }
  return "";
}

std::string doc_row(const fl::Column& c) {
  std::string row = "| `" + std::string(c.name) + "` | " + type_text(c) + " | ";
  row += c.exported ? "" : "not exported; ";
  row += c.indexed ? "indexed; " : "";
  row += std::string(c.meaning) + " |";
  return row;
}

}  // namespace

TEST(FlowSchema, TheDocsColumnTableIsTheDefinition) {
  std::ifstream in(std::string(IPFIXWEB_SOURCE_DIR) + "/docs/flow-store.md");
  ASSERT_TRUE(in) << "docs/flow-store.md missing";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  std::string all;
  for (const auto& c : fl::kFlowColumns) all += doc_row(c) + "\n";
  for (const auto& c : fl::kFlowColumns)
    EXPECT_NE(doc.find(doc_row(c) + "\n"), std::string::npos)
        << "docs/flow-store.md lacks the row\n"
        << doc_row(c) << "\nthe whole table:\n"
        << all;
}

TEST(FlowSchema, ANewStoreHasTheStoredTableTheViewWithEveryColumnAndItsIndexes) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, (fl::create_tables_sql() + fl::create_indexes_sql()).c_str(), nullptr,
                         nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  std::string select = "SELECT ";
  for (std::size_t i = 0; i < fl::kFlowColumns.size(); ++i)
    select += (i ? ", " : "") + std::string(fl::kFlowColumns[i].name);
  select += " FROM flows";
  sqlite3_stmt* s = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, select.c_str(), -1, &s, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_finalize(s);
  EXPECT_EQ(fl::column_index("bytes"), 17);
  EXPECT_EQ(fl::column_index("nope"), -1);
  EXPECT_EQ(fl::proto_name(6), "tcp");
  EXPECT_EQ(fl::proto_name(200), "200");
  sqlite3_close(db);
}

TEST(FlowSchema, AddressesAreWrittenAsPeopleReadThem) {
  const std::uint8_t v4[4] = {192, 168, 10, 7};
  EXPECT_EQ(fl::address_text(fl::v4_key(v4), 4), "192.168.10.7");
  const std::uint8_t zero[4] = {0, 0, 0, 0};
  EXPECT_EQ(fl::address_text(fl::v4_key(zero), 4), "0.0.0.0");
  std::array<std::uint8_t, 16> v6{};
  v6[0] = 0x20;
  v6[1] = 0x01;
  v6[2] = 0x0d;
  v6[3] = 0xb8;
  v6[15] = 1;
  EXPECT_EQ(fl::address_text(v6, 6), "2001:db8::1");
  EXPECT_TRUE(fl::is_store_name("/out/a.ipfix.flows.sqlite"));
  EXPECT_FALSE(fl::is_store_name("/out/a.ipfix"));
}

TEST(FlowSchema, RenderedTimesAndProtocolNamesAreWhatTheViewComputes) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, fl::create_tables_sql().c_str(), nullptr, nullptr, nullptr),
            SQLITE_OK);
  const long long times[] = {0,
                             1,
                             999,
                             1000,
                             86399999,
                             951782400000,
                             951868799999,
                             1430069028075,
                             4102444800123,
                             253402300798999,
                             1709208000500 /* 2024-02-29 */};
  int proto = 0;
  for (long long t : times) {
    const std::string sql =
        "INSERT INTO flow_rows(start_ms, end_ms, ip_version, proto, src, dst, src_ip, dst_ip, "
        "sport, dport, vlan, packets, bytes, fwd_packets, fwd_bytes) VALUES(" +
        std::to_string(t) + ", " + std::to_string(t + 1) + ", 4, " + std::to_string(proto) +
        ", '1.1.1.1', '2.2.2.2', x'00', x'00', 0, 0, 0, 1, 1, 1, 1)";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    proto = (proto * 7 + 17) % 256;
  }
  // The view's text (SQLite's strftime and CASE) against the renderer's from the integers.
  const std::vector<std::string> names = {"start_time", "end_time", "proto_name"};
  auto cols = *fl::select_columns(names);
  sqlite3_stmt* fast = nullptr;
  sqlite3_stmt* view = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(
                db, ("SELECT " + fl::column_list_sql(cols) + " FROM flows ORDER BY id").c_str(), -1,
                &fast, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT start_time, end_time, proto_name FROM flows ORDER BY id",
                               -1, &view, nullptr),
            SQLITE_OK);
  int rows = 0;
  while (sqlite3_step(fast) == SQLITE_ROW) {
    ASSERT_EQ(sqlite3_step(view), SQLITE_ROW);
    std::string a, b;
    fl::append_row(a, fast, cols, fl::Format::Csv);
    fl::append_row(b, view, cols, fl::Format::Csv);
    EXPECT_EQ(a, b);
    ++rows;
  }
  EXPECT_EQ(rows, static_cast<int>(std::size(times)));
  sqlite3_finalize(fast);
  sqlite3_finalize(view);
  sqlite3_close(db);
}
