// The flow store: one SQLite file per task beside its IPFIX file ("<output>.flows.sqlite"),
// written by the engine in the same pass (or by the IPFIX ingest task kind) and read by the
// api. This header is its one definition: the columns of the `flows` table (kFlowColumns,
// from which the DDL, the filter language's field names, the NDJSON/CSV exports and
// docs/flow-store.md are derived), the other tables, and FlowRow, what a writer is given.
//
// Tables (docs/flow-store.md):
//   flows   one row per IPFIX record, in the file's record order (id = 1, 2, ...): a view of
//           the stored table flow_rows with the computed columns added (times as ISO text,
//           protocol names); queries and users read `flows`
//   flow_rows  the stored columns (SQLite computes even VIRTUAL generated columns on every
//           insert, which doubled the cost of writing a row; a view computes them on reading)
//   series  packets/bytes/flows per time bucket, by application and by IP protocol
//   top     the largest groups of flows by app, src, dst, pair, server_name, ja3, port and
//           proto, for each metric (bytes, packets, flows): /top without a filter reads it
//   meta    key/value facts about the store (format, version, bucket size, span, totals)
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ipfixweb::flows {

inline constexpr std::string_view kFormat = "ipfixweb-flows";
// 2: flow_rows.packed and the top table (pre-aggregated top-N); readers of version 2 read
// version 1 stores too (exports read the columns, top-N groups the flows).
inline constexpr int kVersion = 2;
// The file name of a task's flow store, from its IPFIX output's.
inline constexpr std::string_view kStoreSuffix = ".flows.sqlite";
inline std::string store_name_for(std::string_view output) {
  return std::string(output).append(kStoreSuffix);
}
// Whether a path has a flow store's name (an output may not: it would be another task's
// store, or one a task's own flow store would then be named after).
inline bool is_store_name(std::string_view path) { return path.ends_with(kStoreSuffix); }

// How a column is stored and typed in filters and exports.
enum class ColumnType : std::uint8_t {
  Integer,  // JSON number, CSV decimal
  Text,     // JSON string, CSV quoted when needed
  Address,  // TEXT holding an IPv4/IPv6 address; filters take addresses and prefixes ("net")
  Blob,     // never exported (the 16-byte address keys that net filters use)
};

struct Column {
  std::string_view name;
  ColumnType type;
  // Stored columns: the SQL after the column name in CREATE TABLE flow_rows (a type and
  // constraints). Computed columns: "AS <expression of stored columns>", in the view only.
  std::string_view sql;
  std::string_view meaning;  // for docs/flow-store.md and the OpenAPI description
  bool exported = true;      // in NDJSON/CSV and /flows answers (false: internal keys)
  bool indexed = false;      // CREATE INDEX flow_rows_<name> (WriterConfig::indexes_last: when)
};

// clang-format off
inline constexpr std::array kFlowColumns{
  Column{"id", ColumnType::Integer, "INTEGER PRIMARY KEY",
         "record number in the IPFIX file's order, from 1 (the flow's id in the API)"},
  Column{"start_ms", ColumnType::Integer, "INTEGER NOT NULL",
         "first packet, milliseconds since 1970 (flowStartMilliseconds)", true, true},
  Column{"end_ms", ColumnType::Integer, "INTEGER NOT NULL",
         "last packet, milliseconds since 1970 (flowEndMilliseconds)"},
  Column{"start_time", ColumnType::Text,
         "AS strftime('%Y-%m-%dT%H:%M:%fZ', start_ms / 1000.0, 'unixepoch')",
         "first packet, ISO 8601 UTC"},
  Column{"end_time", ColumnType::Text,
         "AS strftime('%Y-%m-%dT%H:%M:%fZ', end_ms / 1000.0, 'unixepoch')",
         "last packet, ISO 8601 UTC"},
  Column{"duration_ms", ColumnType::Integer,
         "AS end_ms - start_ms", "end_ms - start_ms"},
  Column{"ip_version", ColumnType::Integer, "INTEGER NOT NULL", "4 or 6"},
  Column{"proto", ColumnType::Integer, "INTEGER NOT NULL",
         "IP protocol number of the metered header (protocolIdentifier)"},
  Column{"proto_name", ColumnType::Text,
         "AS CASE proto WHEN 6 THEN 'tcp' WHEN 17 THEN 'udp' WHEN 1 THEN 'icmp' "
         "WHEN 58 THEN 'icmpv6' WHEN 132 THEN 'sctp' WHEN 47 THEN 'gre' WHEN 50 THEN 'esp' "
         "WHEN 51 THEN 'ah' WHEN 2 THEN 'igmp' WHEN 89 THEN 'ospf' ELSE CAST(proto AS TEXT) END",
         "protocol name (tcp, udp, icmp, icmpv6, sctp, gre, esp, ah, igmp, ospf), else the number"},
  Column{"src", ColumnType::Address, "TEXT NOT NULL",
         "source address (the first packet's sender; sourceIPv4Address/sourceIPv6Address)"},
  Column{"dst", ColumnType::Address, "TEXT NOT NULL", "destination address"},
  Column{"src_ip", ColumnType::Blob, "BLOB NOT NULL",
         "src as 16 bytes (IPv4 as ::ffff:a.b.c.d), the key of address and net filters", false, true},
  Column{"dst_ip", ColumnType::Blob, "BLOB NOT NULL", "dst as 16 bytes", false, true},
  Column{"sport", ColumnType::Integer, "INTEGER NOT NULL",
         "source port (TCP/UDP/SCTP), else 0"},
  Column{"dport", ColumnType::Integer, "INTEGER NOT NULL", "destination port", true, true},
  Column{"vlan", ColumnType::Integer, "INTEGER NOT NULL", "outer 802.1Q VLAN id, 0 when untagged"},
  Column{"packets", ColumnType::Integer, "INTEGER NOT NULL", "packets, both directions"},
  Column{"bytes", ColumnType::Integer, "INTEGER NOT NULL",
         "IP bytes, both directions", true, true},
  Column{"fwd_packets", ColumnType::Integer, "INTEGER NOT NULL",
         "packets src to dst (packetDeltaCount)"},
  Column{"fwd_bytes", ColumnType::Integer, "INTEGER NOT NULL",
         "IP bytes src to dst (octetDeltaCount)"},
  Column{"rev_packets", ColumnType::Integer, "INTEGER",
         "packets dst to src (reversePacketDeltaCount); null in uniflow records"},
  Column{"rev_bytes", ColumnType::Integer, "INTEGER",
         "IP bytes dst to src (reverseOctetDeltaCount); null in uniflow records"},
  Column{"tcp_flags", ColumnType::Integer, "INTEGER", "OR of the TCP flags src to dst"},
  Column{"rev_tcp_flags", ColumnType::Integer, "INTEGER", "OR of the TCP flags dst to src"},
  Column{"icmp_type_code", ColumnType::Integer, "INTEGER",
         "ICMP type * 256 + code of the first packet src to dst"},
  Column{"rev_icmp_type_code", ColumnType::Integer, "INTEGER", "the same, dst to src"},
  Column{"tos", ColumnType::Integer, "INTEGER", "TOS / traffic class of the first packet src to dst"},
  Column{"rev_tos", ColumnType::Integer, "INTEGER", "the same, dst to src"},
  Column{"end_reason", ColumnType::Integer, "INTEGER",
         "flowEndReason: 1 idle, 2 active timeout, 3 end of flow, 4 end of input, 5 lack of resources"},
  Column{"app_id", ColumnType::Integer, "INTEGER",
         "nDPI protocol id (the applicationId selector); null without DPI"},
  Column{"app", ColumnType::Text, "TEXT",
         "application as nDPI names it (TLS.YouTube, DNS, Unknown); null without DPI", true, true},
  Column{"server_name", ColumnType::Text, "TEXT",
         "TLS/QUIC SNI, HTTP Host or DNS query name; null when none"},
  Column{"ja3c", ColumnType::Text, "TEXT", "JA3 client fingerprint (32 hex digits); null when none"},
  Column{"community_id", ColumnType::Text, "TEXT",
         "Community ID v1 of the 5-tuple (seed 0), e.g. 1:LQU9qZlK+B5F3KDmev6m5PMibrg="},
  Column{"risk", ColumnType::Integer, "INTEGER",
         "nDPI flow risk bitmap (bit n = ndpi_risk_enum n); 0 when none; null without DPI"},
  Column{"risk_score", ColumnType::Integer, "INTEGER",
         "nDPI risk score (ndpi_risk2score, client + server); null without DPI"},
  Column{"risks", ColumnType::Text, "TEXT",
         "the risks' names as nDPI prints them, comma-separated; null when none"},
  Column{"packed", ColumnType::Blob, "BLOB",
         "the row's numbers and addresses in one blob, which the exports decode instead of "
         "reading thirty columns (see Packed rows below)", false},
};
// clang-format on

// Whether a column is computed in the view (not stored in flow_rows).
bool is_computed(const Column& c);

// What a SELECT that renders rows names for a column: its name, except for the computed
// columns whose text the renderer makes faster than SQLite (start_time, end_time from the
// milliseconds; proto_name from the number): "start_ms", "end_ms", "proto" (no alias, which
// ORDER BY would prefer to the view's column). store.hpp's renderer turns those integers into
// the column's text.
std::string select_expression(std::string_view name);

// The index of a column by name; -1 when there is none.
int column_index(std::string_view name);

// Whether a column may hold NULL (no NOT NULL, not a primary key, not generated from
// NOT NULL columns).
bool nullable(const Column& c);

// Another name of an exported column, accepted wherever a column name is (the filter
// language, `fields`, `sort`; docs/flow-filter.md).
struct Alias {
  std::string_view name;
  std::string_view column;
};
inline constexpr std::array kAliases{
    Alias{"start", "start_ms"},  Alias{"first", "start_ms"},       Alias{"end", "end_ms"},
    Alias{"last", "end_ms"},     Alias{"duration", "duration_ms"}, Alias{"protocol", "proto"},
    Alias{"src_port", "sport"},  Alias{"dst_port", "dport"},       Alias{"pkts", "packets"},
    Alias{"application", "app"}, Alias{"sni", "server_name"},      Alias{"ja3", "ja3c"},
    Alias{"flags", "tcp_flags"}, Alias{"ipver", "ip_version"},
};

// The series table:
//   CREATE TABLE series(dim TEXT NOT NULL,        -- 'app' or 'proto'
//                       key TEXT NOT NULL,        -- application name, or proto_name
//                       bucket_ms INTEGER NOT NULL,  -- bucket start, ms since 1970
//                       packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
//                       flows INTEGER NOT NULL,   -- records that started in the bucket
//                       PRIMARY KEY(dim, key, bucket_ms)) WITHOUT ROWID
// Buckets are meta 'bucket_ms' long (a power of two milliseconds, at most kMaxBuckets over
// the span) and aligned to multiples of it since 1970. Packets and bytes count in the bucket
// of each packet's own time (pcap tasks) or spread evenly over the record's span (IPFIX
// ingest); each record's flows count once, in the bucket of its start.
inline constexpr std::uint64_t kMaxBuckets = 2048;
// meta keys: format, version, source ('pcap' | 'ipfix'), biflow (0|1), dpi (0|1),
// bucket_ms, first_ms, last_ms (the span of the records), flows, packets, bytes, created_at,
// top_k and top_dims (version 2: see the top table).

// The top table (version 2):
//   CREATE TABLE top(dim TEXT NOT NULL,     -- a /top `by`: app, src, dst, pair, ...
//                    metric TEXT NOT NULL,  -- bytes | packets | flows
//                    rank INTEGER NOT NULL, -- 1, 2, ... in the order of /top's answer
//                    key, key2,             -- the group's key(s) as `flows` holds them
//                                           -- (key2: dst of a pair; else NULL)
//                    bytes INTEGER NOT NULL, packets INTEGER NOT NULL, flows INTEGER NOT NULL,
//                    PRIMARY KEY(dim, metric, rank)) WITHOUT ROWID
// For each dimension in meta 'top_dims' (comma-separated) and each metric, the first
// min(top_k, groups) groups of
//   SELECT <keys>, sum(bytes), sum(packets), count(*) FROM flows GROUP BY <keys>
//   ORDER BY <metric> DESC, <keys>
// (keys: app; src; dst; src, dst; server_name; ja3c; dport; proto_name). A dimension with
// more distinct groups than the writer keeps in memory (kTopMaxGroups) is left out of top_dims.
inline constexpr std::int64_t kTopK = 1000;  // query.hpp's kMaxTopN
inline constexpr std::size_t kTopMaxGroups = std::size_t{1} << 22;

// A dimension of /top (its `by`) and the flows columns that key its groups.
struct TopDimension {
  std::string_view name;
  std::string_view key;
  std::string_view key2 = {};  // pair: the second key
};
// The dimensions, in the order of the top table's rows and of top_dims: the one list that
// /top's validation, its answer's keys and the OpenAPI document take.
inline constexpr std::array kTopDimensions{
    TopDimension{"app", "app"},
    TopDimension{"src", "src"},
    TopDimension{"dst", "dst"},
    TopDimension{"pair", "src", "dst"},
    TopDimension{"server_name", "server_name"},
    TopDimension{"ja3", "ja3c"},
    TopDimension{"port", "dport"},
    TopDimension{"proto", "proto_name"},
};
// Their names alone.
inline constexpr auto kTopDims = [] {
  std::array<std::string_view, kTopDimensions.size()> names{};
  for (std::size_t i = 0; i < names.size(); ++i) names[i] = kTopDimensions[i].name;
  return names;
}();
// What /top ranks by and /timeseries sums (the top table's `metric`); the first is the default.
inline constexpr std::array<std::string_view, 3> kMetrics{"bytes", "packets", "flows"};
// The series table's `dim`, /timeseries's `by`, with the flows column each stands for.
inline constexpr std::array<std::string_view, 2> kSeriesDims{"app", "proto"};

// CREATE statements of a new store (flow_rows, the flows view, series, meta), without
// indexes.
std::string create_tables_sql();
// CREATE INDEX statements. The writer creates them before the first row: its thread then keeps
// them up to date while the engine meters, which costs the conversion less than building
// them at the end, when nothing else is left to do.
std::string create_indexes_sql();

// One flow record as a writer receives it. Optional values: has_* false stores NULL.
struct FlowRow {
  std::uint64_t start_ms = 0, end_ms = 0;
  std::uint8_t ip_version = 4;
  std::uint8_t proto = 0;
  std::array<std::uint8_t, 16> src{}, dst{};  // IPv4 in the last 4 bytes (::ffff:a.b.c.d)
  std::uint16_t sport = 0, dport = 0, vlan = 0;
  std::uint64_t fwd_packets = 0, fwd_bytes = 0;
  bool has_rev = false;  // biflow: the rev_* values below are present
  std::uint64_t rev_packets = 0, rev_bytes = 0;
  bool has_flags = true;  // tcp_flags, icmp_type_code, tos (and their reverses when has_rev)
  std::uint16_t tcp_flags = 0, rev_tcp_flags = 0;
  std::uint16_t icmp_type_code = 0, rev_icmp_type_code = 0;
  std::uint8_t tos = 0, rev_tos = 0;
  std::uint8_t end_reason = 0;  // 0: unknown (NULL)
  bool has_app = false;         // DPI ran: app_id, app, risk, risk_score are present
  std::uint16_t app_id = 0;
  std::string_view app;
  std::string_view server_name;   // "" stores NULL
  std::string_view ja3c;          // "" stores NULL
  std::string_view community_id;  // "" stores NULL
  std::uint64_t risk = 0;
  std::uint32_t risk_score = 0;
  std::string_view risks;  // "" stores NULL
};

// The proto_name column's value for a protocol number (the same CASE as its SQL).
std::string proto_name(std::uint8_t proto);

// The 16-byte key of an IPv4 address given in network byte order (::ffff:a.b.c.d).
std::array<std::uint8_t, 16> v4_key(const std::uint8_t* addr);
// Readable text of a 16-byte key ("10.0.0.1" for ::ffff:10.0.0.1, else RFC 5952 IPv6).
std::string address_text(const std::array<std::uint8_t, 16>& key, std::uint8_t ip_version);

}  // namespace ipfixweb::flows
