// Issue 11: one definition of a task and one vocabulary. Every other place that spells a field
// or a name (the wire, the stored JSON, the SQL CHECK, the OpenAPI document, the docs tables)
// is derived from task_spec.hpp / vocabulary.hpp or checked against them here.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/openapi.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/spec_json.hpp"
#include "ipfixweb/shared/store.hpp"
#include "ipfixweb/worker/engine_options.hpp"

using namespace ipfixweb;
using nlohmann::json;

namespace {

std::string read_doc(const std::string& relative) {
  std::ifstream in(std::string(IPFIXWEB_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in) << relative;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The line of a markdown table whose first cell starts with `first_cell`.
std::string table_row(const std::string& doc, const std::string& first_cell) {
  std::stringstream ss(doc);
  std::string line;
  while (std::getline(ss, line))
    if (line.rfind("| " + first_cell + " ", 0) == 0) return line;
  return {};
}

template <class E>
std::string backticked_list(const char* separator = ", ") {
  std::string out;
  for (auto n : all_names<E>()) {
    if (n.empty()) continue;
    if (!out.empty()) out += separator;
    out += "`" + std::string(n) + "`";
  }
  return out;
}

// A spec with every field away from its default.
proto::TaskSpec unusual_spec() {
  proto::TaskSpec s;
  s.inputs = {"/in/a.pcap", "/in/b c.pcapng"};
  s.output = "/out/x.ipfix";
  s.dpi = false;
  s.analysis = {"dns", "tls"};
  s.idle_timeout = 12.5;
  s.active_timeout = 60;
  s.filter = "tcp port 443";
  s.uniflow = true;
  s.max_flows = 4096;
  return s;
}

void expect_same(const proto::TaskSpec& a, const proto::TaskSpec& b) {
  int compared = 0;
  proto::for_each_field(proto::kTaskSpecFields, [&](const auto& f) {
    EXPECT_EQ(a.*f.member, b.*f.member) << f.info.key;
    ++compared;
  });
  EXPECT_EQ(compared, static_cast<int>(proto::kTaskSpecFieldCount));
}

// What TaskSpec looked like on the wire before its fields were defined once (7 fields).
struct OldTaskSpec {
  std::vector<std::string> inputs{"/in/old.pcap"};
  std::string output = "/out/old.ipfix";
  bool dpi = false;
  std::vector<std::string> analysis{"udp"};
  double idle_timeout = 30;
  double active_timeout = 90;
  std::string filter = "udp";
  MSGPACK_DEFINE_MAP(inputs, output, dpi, analysis, idle_timeout, active_timeout, filter)
};

template <class T, class U>
T msgpack_round(const U& value) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, value);
  auto h = msgpack::unpack(buf.data(), buf.size());
  return h.get().as<T>();
}

// The docs/api.md row of a request field, from its definition.
template <class Owner, class T>
std::string docs_row(const proto::Field<Owner, T>& f) {
  const auto& i = f.info;
  std::string name = "`" + std::string(i.request_key) + "`";
  if (!i.alias.empty()) name += " (or `" + std::string(i.alias) + "`)";
  std::string def;
  if (i.required) {
    def = "required";
  } else {
    json d = Owner{}.*f.member;
    def = d.is_string() && d.get<std::string>().empty() ? "none" : "`" + d.dump() + "`";
  }
  std::string meaning(i.meaning);
  if (!i.allowed.empty()) {
    meaning += ": ";
    for (std::size_t k = 0; k < i.allowed.size(); ++k)
      meaning += (k ? ", `" : "`") + std::string(i.allowed[k]) + "`";
  }
  return "| " + name + " | " + std::string(i.type_text) + " | " + def + " | " + meaning + " |";
}

}  // namespace

TEST(TaskSpec, EveryFieldRoundTripsThroughMsgpackAndTheStoredJson) {
  const auto s = unusual_spec();
  expect_same(msgpack_round<proto::TaskSpec>(s), s);
  expect_same(proto::spec_from_json(json::parse(proto::spec_to_json_text(s))), s);
}

TEST(TaskSpec, TheStoredJsonIsWhatNlohmannWritesForIt) {
  const auto s = unusual_spec();
  json j = json::object();
  proto::for_each_field(proto::kTaskSpecFields,
                        [&](const auto& f) { j[std::string(f.info.key)] = s.*f.member; });
  EXPECT_EQ(proto::spec_to_json_text(s), j.dump());
}

TEST(TaskSpec, OlderPeersAndRowsWithoutNewerFieldsGetTheDefaults) {
  // A spec from an older api or broker: the fields it lacks take their defaults.
  const auto from_old = msgpack_round<proto::TaskSpec>(OldTaskSpec{});
  EXPECT_EQ(from_old.inputs, std::vector<std::string>{"/in/old.pcap"});
  EXPECT_EQ(from_old.idle_timeout, 30);
  EXPECT_FALSE(from_old.uniflow);
  EXPECT_EQ(from_old.max_flows, proto::TaskSpec::kDefaultMaxFlows);
  // An older worker reads what it knows of a newer spec and ignores the rest.
  const auto old = msgpack_round<OldTaskSpec>(unusual_spec());
  EXPECT_EQ(old.filter, "tcp port 443");
  // A row stored before a field existed.
  const auto row = proto::spec_from_json(json::parse(
      R"({"active_timeout":1800.0,"analysis":[],"dpi":true,"filter":"","idle_timeout":300.0,)"
      R"("inputs":["/in/a.pcap"],"output":"/out/a.ipfix"})"));
  EXPECT_EQ(row.max_flows, proto::TaskSpec::kDefaultMaxFlows);
  EXPECT_FALSE(row.uniflow);
  EXPECT_THROW(proto::spec_from_json(json::parse(R"({"inputs":["/a"]})")), json::exception);
}

TEST(TaskSpec, APathThatIsNotUtf8IsRefusedRatherThanAltered) {
  auto s = unusual_spec();
  s.inputs.push_back("/in/\xff.pcap");
  EXPECT_THROW(proto::spec_to_json_text(s), json::exception);
}

TEST(TaskSpec, TheDocsRequestTableIsTheDefinitions) {
  const std::string doc = read_doc("docs/api.md");
  std::string expected;
  auto check = [&](const auto& f) {
    const std::string row = docs_row(f);
    expected += row + "\n";
    EXPECT_EQ(table_row(doc, "`" + std::string(f.info.request_key) + "`"), row);
  };
  proto::for_each_field(proto::kTaskSpecFields, check);
  proto::for_each_field(proto::kRequestExtraFields, check);
  if (HasFailure()) std::cout << "docs/api.md request table rows:\n" << expected;
}

TEST(TaskSpec, TheOpenApiRequestSchemaIsTheDefinitions) {
  const json doc = api::openapi_description();
  const json& schema = doc["components"]["schemas"]["TaskRequest"];
  std::set<std::string> described, defined, required;
  for (auto& [k, v] : schema["properties"].items()) described.insert(k);
  auto add = [&](const auto& f) {
    defined.insert(std::string(f.info.request_key));
    if (!f.info.alias.empty()) defined.insert(std::string(f.info.alias));
    if (f.info.required) required.insert(std::string(f.info.request_key));
  };
  proto::for_each_field(proto::kTaskSpecFields, add);
  proto::for_each_field(proto::kRequestExtraFields, add);
  EXPECT_EQ(described, defined);
  EXPECT_EQ(schema["required"].get<std::set<std::string>>(), required);
  EXPECT_EQ(schema["properties"]["idle_timeout"]["default"], proto::TaskSpec::kDefaultIdleTimeout);
  EXPECT_EQ(schema["properties"]["idle_timeout"]["exclusiveMinimum"], true);  // 3.0, not 3.1
  EXPECT_EQ(schema["properties"]["max_flows"]["maximum"], 16777216);
}

TEST(Vocabulary, TheSchemaChecksExactlyTheTaskStates) {
  auto store = TaskStore::open_writer(":memory:");
  auto& st = store.db();
  db::Statement q(st, "SELECT sql FROM sqlite_master WHERE name = 'tasks'");
  ASSERT_TRUE(q.step());
  std::string check;
  for (auto n : all_names<TaskState>())
    check += (check.empty() ? "'" : ",'") + std::string(n) + "'";
  EXPECT_NE(q.col_text(0).find("CHECK (state IN (" + check + "))"), std::string::npos)
      << q.col_text(0);
}

TEST(Vocabulary, TheOpenApiTaskStatesAreTheEnum) {
  const json doc = api::openapi_description();
  json names = json::array();
  for (auto n : all_names<TaskState>()) names.push_back(n);
  EXPECT_EQ(doc["components"]["schemas"]["Task"]["properties"]["state"]["enum"], names);
}

TEST(Vocabulary, TheDocsListEveryNameOfEveryEnum) {
  const std::string protocol = read_doc("docs/protocol.md");
  EXPECT_NE(
      table_row(protocol, "`submit_reply`").find("`code` (" + backticked_list<Refusal>() + ")"),
      std::string::npos);
  EXPECT_NE(table_row(protocol, "`cancel_reply`")
                .find("`result` (" + backticked_list<CancelResult>() + ")"),
            std::string::npos);
  EXPECT_NE(table_row(protocol, "`done`").find("`state` (" + backticked_list<Outcome>() + ")"),
            std::string::npos);
  EXPECT_NE(table_row(read_doc("docs/schema.md"), "`state`").find(backticked_list<TaskState>()),
            std::string::npos);
  const std::string api = read_doc("docs/api.md");
  const auto states = api.find("States: ");
  ASSERT_NE(states, std::string::npos);
  for (auto n : all_names<TaskState>())
    EXPECT_NE(api.substr(states, api.find('\n', states) - states).find("`" + std::string(n) + "`"),
              std::string::npos)
        << "docs/api.md's States: line lacks " << n;
}

// Every key of every message body appears in its row of docs/protocol.md.
TEST(Vocabulary, TheDocsListEveryFieldOfEveryMessage) {
  const std::string protocol = read_doc("docs/protocol.md");
  auto check = [&](std::string_view type, const auto& body) {
    const std::string wire = proto::encode(type, body);
    auto h = msgpack::unpack(wire.data(), wire.size());
    const msgpack::object& map = h.get().via.array.ptr[2];
    const std::string row = table_row(protocol, "`" + std::string(type) + "`");
    ASSERT_FALSE(row.empty()) << type << " has no row in docs/protocol.md";
    for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
      const std::string key = map.via.map.ptr[i].key.as<std::string>();
      EXPECT_NE(row.find("`" + key + "`"), std::string::npos)
          << "docs/protocol.md: `" << type << "` does not list `" << key << "`";
    }
  };
  namespace t = proto::type;
  check(t::kSubmit, proto::Submit{});
  check(t::kSubmitReply, proto::SubmitReply{});
  check(t::kSubmitBatch, proto::SubmitBatch{});
  check(t::kSubmitBatchReply, proto::SubmitBatchReply{});
  check(t::kPing, proto::Ping{});
  check(t::kPong, proto::Pong{});
  check(t::kCancel, proto::Cancel{});
  check(t::kCancelReply, proto::CancelReply{});
  check(t::kReady, proto::Ready{});
  check(t::kHeartbeat, proto::Heartbeat{});
  check(t::kTask, proto::Task{});
  check(t::kProgress, proto::ProgressMsg{});
  check(t::kDone, proto::Done{});
  check(t::kAbort, proto::Abort{});
  check(t::kBye, proto::Bye{});
  check("TaskSpec", proto::TaskSpec{});
}

// The engine (which stands alone, for pcap2ipfix) keeps defaults of its own: they are the
// task's, so a task that sets nothing converts like pcap2ipfix with no options.
TEST(TaskSpec, TheDefaultsAreTheEngines) {
  const engine::Options mapped = worker::to_engine_options(proto::TaskSpec{});
  const engine::Options engine_defaults;
  EXPECT_EQ(mapped.dpi, engine_defaults.dpi);
  EXPECT_EQ(mapped.idle_timeout_s, engine_defaults.idle_timeout_s);
  EXPECT_EQ(mapped.active_timeout_s, engine_defaults.active_timeout_s);
  EXPECT_EQ(mapped.bpf_filter, engine_defaults.bpf_filter);
  EXPECT_EQ(mapped.biflow, engine_defaults.biflow);
  EXPECT_EQ(mapped.max_flows, engine_defaults.max_flows);
  EXPECT_EQ(mapped.analysis, engine_defaults.analysis);
}
