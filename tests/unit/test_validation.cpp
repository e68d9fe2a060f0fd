#include <gtest/gtest.h>

#include "ipfixweb/api/validation.hpp"

using namespace ipfixweb::api;
using nlohmann::json;

namespace {
std::vector<FieldError> errors_of(const json& body) {
  std::vector<FieldError> errors;
  EXPECT_FALSE(parse_task_request(body, errors)) << body.dump();
  return errors;
}
bool has_field(const std::vector<FieldError>& errs, const std::string& field) {
  for (auto& e : errs)
    if (e.field == field) return true;
  return false;
}
}  // namespace

TEST(Validation, AcceptsTheDocumentedRequest) {
  std::vector<FieldError> errors;
  auto r = parse_task_request(json::parse(R"({"pcap_files": ["sample.pcap"],
      "output_path": "sample.ipfix", "DPI": true, "analysis_list": ["tcp", "UDP", "tcp"]})"),
                              errors);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->spec.inputs, std::vector<std::string>{"sample.pcap"});
  EXPECT_EQ(r->spec.output, "sample.ipfix");
  EXPECT_TRUE(r->spec.dpi);
  EXPECT_EQ(r->spec.analysis, (std::vector<std::string>{"tcp", "udp"}));
  auto stored = json::parse(r->normalised);
  EXPECT_EQ(stored["DPI"], true);
  EXPECT_EQ(stored["idle_timeout"], 300.0);
}

// The stored text is what json::dump() wrote for it before it was written
// directly: idempotency fingerprints of stored tasks depend on it.
TEST(Validation, StoredRequestTextIsWhatNlohmannWrites) {
  for (const char* body : {R"({"pcap_files": ["sample.pcap"], "output_path": "sample.ipfix"})",
                           R"({"pcap_files": ["a b/\"q\".pcap", "caf\u00e9.pcap", "tab\t.pcap"],
               "output_path": "x/\u0001y.ipfix", "DPI": false, "analysis_list": ["TLS", "dns"],
               "priority": -7, "idle_timeout": 0.25, "active_timeout": 31536000,
               "filter": "tcp and port 443"})",
                           R"({"pcap_files": ["p"], "output_path": "o", "idle_timeout": 1e-3,
               "active_timeout": 1800.5, "priority": 100})"}) {
    std::vector<FieldError> errors;
    auto r = parse_task_request(json::parse(body), errors);
    ASSERT_TRUE(r) << body;
    json old = {{"pcap_files", r->spec.inputs},
                {"output_path", r->spec.output},
                {"DPI", r->spec.dpi},
                {"analysis_list", r->spec.analysis},
                {"priority", r->extras.priority},
                {"idle_timeout", r->spec.idle_timeout},
                {"active_timeout", r->spec.active_timeout},
                {"filter", r->spec.filter}};
    EXPECT_EQ(r->normalised, old.dump()) << body;
  }
}

TEST(Validation, DefaultsAndOptionalFields) {
  std::vector<FieldError> errors;
  auto r = parse_task_request(json::parse(R"({"pcap_files": ["a"], "output_path": "b",
      "dpi": false, "priority": 5, "idle_timeout": 30, "active_timeout": 60.5, "filter": "tcp"})"),
                              errors);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->spec.dpi);
  EXPECT_EQ(r->extras.priority, 5);
  EXPECT_EQ(r->spec.idle_timeout, 30);
  EXPECT_EQ(r->spec.active_timeout, 60.5);
  EXPECT_EQ(r->spec.filter, "tcp");
}

TEST(Validation, ReportsEveryFieldProblem) {
  auto errs = errors_of(json::parse(R"({"pcap_files": "a.pcap", "DPI": "yes",
      "analysis_list": ["tcp", "bogus", 3], "priority": 1.5, "idle_timeout": -1})"));
  EXPECT_TRUE(has_field(errs, "pcap_files"));
  EXPECT_TRUE(has_field(errs, "output_path"));
  EXPECT_TRUE(has_field(errs, "DPI"));
  EXPECT_TRUE(has_field(errs, "analysis_list[1]"));
  EXPECT_TRUE(has_field(errs, "analysis_list[2]"));
  EXPECT_TRUE(has_field(errs, "priority"));
  EXPECT_TRUE(has_field(errs, "idle_timeout"));
}

TEST(Validation, RejectsWrongShapes) {
  EXPECT_TRUE(has_field(errors_of(json::array()), ""));
  EXPECT_TRUE(has_field(errors_of(json("text")), ""));
  EXPECT_TRUE(
      has_field(errors_of(json::parse(R"({"pcap_files": [], "output_path": "x"})")), "pcap_files"));
  EXPECT_TRUE(has_field(errors_of(json::parse(R"({"pcap_files": [""], "output_path": "x"})")),
                        "pcap_files[0]"));
  EXPECT_TRUE(has_field(errors_of(json::parse(R"({"pcap_files": ["a"], "output_path": ""})")),
                        "output_path"));
  EXPECT_TRUE(has_field(errors_of(json::parse(R"({"pcap_files": [null], "output_path": 1})")),
                        "output_path"));
}

TEST(Validation, BpfFiltersAreCompiledAtSubmission) {
  std::vector<FieldError> errors;
  EXPECT_TRUE(parse_task_request(
      json::parse(R"({"pcap_files":["a"],"output_path":"b","filter":"tcp port 443 or udp"})"),
      errors));
  auto errs = errors_of(
      json::parse(R"({"pcap_files":["a"],"output_path":"b","filter":"tcp port banana"})"));
  ASSERT_TRUE(has_field(errs, "filter"));
  for (auto& e : errs) {
    if (e.field == "filter") {
      EXPECT_NE(e.message.find("BPF"), std::string::npos) << e.message;
    }
  }
}

TEST(JsonDepth, CountsNestingOfArraysAndObjectsOutsideStrings) {
  EXPECT_TRUE(json_depth_within("", 1));
  EXPECT_TRUE(json_depth_within("42", 0));
  EXPECT_TRUE(json_depth_within(R"({"a": [1, {"b": []}]})", 4));
  EXPECT_FALSE(json_depth_within(R"({"a": [1, {"b": []}]})", 3));
  EXPECT_TRUE(json_depth_within("[[]][[]][[]]", 2));  // siblings do not add up
  // Brackets inside strings, escaped quotes and backslashes do not count.
  EXPECT_TRUE(json_depth_within(R"({"a": "[[[[{{{{"})", 1));
  EXPECT_TRUE(json_depth_within(R"({"a": "\"[[[[", "b": "\\"})", 1));
  EXPECT_FALSE(json_depth_within(R"({"a": "\\", "b": [[]]})", 2));
}

TEST(JsonDepth, AMebibyteOfOpeningBracketsIsTooDeep) {
  const std::string deep(1 << 20, '[');
  EXPECT_FALSE(json_depth_within(deep, 64));
  EXPECT_TRUE(json_depth_within(std::string(64, '[') + std::string(64, ']'), 64));
  EXPECT_FALSE(json_depth_within(std::string(65, '[') + std::string(65, ']'), 64));
  // Unbalanced closers never make a body deeper.
  EXPECT_TRUE(json_depth_within(std::string(100, ']') + "[[", 2));
}

// The api's reading of a body (fuzz_task_request's finding: a NUL byte ended the text for
// nlohmann's parser, which took the part before it; Api.ErrorsAreProblemJsonWithTheRightStatus
// sends such a body to a real api).
TEST(RequestBody, IsJsonTextWholeOrNothing) {
  bool deep = false;
  auto ok = parse_json_body(R"({"a": [1, 2]})", 64, deep);
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["a"][1], 2);
  EXPECT_FALSE(deep);
  EXPECT_FALSE(parse_json_body(std::string("{\"a\": 1}\0{\"b\": 2}", 17), 64, deep));
  EXPECT_FALSE(deep);
  EXPECT_FALSE(parse_json_body(std::string("5\0", 2), 64, deep));
  EXPECT_FALSE(parse_json_body("[[[1]]]", 2, deep));
  EXPECT_TRUE(deep);
  EXPECT_FALSE(parse_json_body("{\"a\": }", 64, deep));
  EXPECT_FALSE(deep);
}

TEST(Validation, TaskKindsAreAClosedSetAndAConversionKeepsItsStoredText) {
  std::vector<FieldError> errors;
  auto plain = parse_task_request(json{{"pcap_files", {"p"}}, {"output_path", "o"}}, errors);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->spec.kind, "convert");
  auto named = parse_task_request(
      json{{"pcap_files", {"p"}}, {"output_path", "o"}, {"kind", "Convert"}}, errors);
  ASSERT_TRUE(named);
  EXPECT_EQ(named->spec.kind, "convert");
  // The default is not written: the Idempotency-Key fingerprint of a conversion is unchanged.
  EXPECT_EQ(named->normalised, plain->normalised);
  EXPECT_EQ(plain->normalised.find("kind"), std::string::npos);

  auto ingest = parse_task_request(
      json{{"pcap_files", {"x.ipfix"}}, {"output_path", "o"}, {"kind", "ingest"}}, errors);
  ASSERT_TRUE(ingest);
  EXPECT_EQ(ingest->spec.kind, "ingest");
  EXPECT_NE(ingest->normalised.find("\"kind\":\"ingest\""), std::string::npos);

  auto errs = errors_of({{"pcap_files", {"p"}}, {"output_path", "o"}, {"kind", "transcode"}});
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].field, "kind");
  EXPECT_EQ(errs[0].message,
            "unknown task kind 'transcode' (known: convert, ingest, extract, merge)");
  EXPECT_TRUE(
      has_field(errors_of({{"pcap_files", {"p"}}, {"output_path", "o"}, {"kind", 1}}), "kind"));
}

TEST(Validation, AnExtractNeedsAFlowSelectorThatParsesAndOnlyAnExtractTakesOne) {
  const json base = {{"pcap_files", {"p"}}, {"output_path", "o.pcap"}};
  std::vector<FieldError> errors;
  json ok = base;
  ok["kind"] = "extract";
  ok["flow"] = "tcp 10.0.0.1:1 <-> 10.0.0.2:2 ms 1-2";
  auto r = parse_task_request(ok, errors);
  ASSERT_TRUE(r) << (errors.empty() ? "" : errors[0].message);
  EXPECT_EQ(r->spec.flow, ok["flow"]);

  json missing = base;
  missing["kind"] = "extract";
  auto e1 = errors_of(missing);
  ASSERT_EQ(e1.size(), 1u);
  EXPECT_EQ(e1[0].field, "flow");
  EXPECT_EQ(e1[0].message, "is required for kind extract");

  json bad = ok;
  bad["flow"] = "tcp 10.0.0.1:1 <> 10.0.0.2:2";
  auto e2 = errors_of(bad);
  ASSERT_EQ(e2.size(), 1u);
  EXPECT_EQ(e2[0].field, "flow");
  EXPECT_EQ(e2[0].message,
            "not a flow selector: at 15: expected '<->' (both directions) or '->' (src to dst "
            "only)");

  // Found by fuzz_task_request: taken by the api, refused by the broker.
  json nul = ok;
  std::string with_nul = "udp [2001:db9::";
  with_nul.push_back('\0');
  nul["flow"] = with_nul + "2]:53 -> [ff02::fb]:2676";
  auto e5 = errors_of(nul);
  ASSERT_EQ(e5.size(), 1u);
  EXPECT_EQ(e5[0].field, "flow");
  EXPECT_EQ(e5[0].message, "contains a NUL byte");

  json stray = base;
  stray["flow"] = ok["flow"];
  auto e3 = errors_of(stray);
  ASSERT_EQ(e3.size(), 1u);
  EXPECT_EQ(e3[0].field, "flow");
  EXPECT_EQ(e3[0].message, "applies to kind extract only");

  json filtered = base;
  filtered["kind"] = "ingest";
  filtered["filter"] = "tcp";
  auto e4 = errors_of(filtered);
  ASSERT_EQ(e4.size(), 1u);
  EXPECT_EQ(e4[0].field, "filter");
}

// Found by fuzz_task_request: a BPF filter with a NUL byte ("tcp \u00000") was compiled by
// libpcap up to the NUL and accepted; the broker refuses NUL bytes in every string. The api
// now refuses them in every string field and list item, with the field named.
TEST(Validation, NoStringFieldMayHoldANulByte) {
  const json base = {{"pcap_files", {"p"}}, {"output_path", "o"}};
  std::string nul = "tcp ";
  nul.push_back('\0');
  nul += "0";
  json filtered = base;
  filtered["filter"] = nul;
  auto e1 = errors_of(filtered);
  ASSERT_EQ(e1.size(), 1u);
  EXPECT_EQ(e1[0].field, "filter");
  EXPECT_EQ(e1[0].message, "contains a NUL byte");
  json output = base;
  output["output_path"] = nul;
  auto e2 = errors_of(output);
  ASSERT_EQ(e2.size(), 1u);
  EXPECT_EQ(e2[0].field, "output_path");
  json inputs = base;
  inputs["pcap_files"] = {"a.pcap", nul};
  auto e3 = errors_of(inputs);
  ASSERT_EQ(e3.size(), 1u);
  EXPECT_EQ(e3[0].field, "pcap_files[1]");
  EXPECT_EQ(e3[0].message, "contains a NUL byte");
}

// A request may ask for one flow partition of a conversion; the two fields are written into the
// stored text only when given (a plain conversion's fingerprint is unchanged).
TEST(Validation, APartitionMustBeBelowPartitionsAndOfAConversion) {
  std::vector<FieldError> errors;
  const json base = {{"pcap_files", {"p"}}, {"output_path", "o"}};
  auto plain = parse_task_request(base, errors);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->normalised.find("partition"), std::string::npos);
  json part = base;
  part["partition"] = 1;
  part["partitions"] = 3;
  auto r = parse_task_request(part, errors);
  ASSERT_TRUE(r) << (errors.empty() ? "" : errors[0].message);
  EXPECT_EQ(r->spec.partition, 1u);
  EXPECT_EQ(r->spec.partitions, 3u);
  EXPECT_NE(r->normalised.find("\"partitions\":3"), std::string::npos);

  json high = part;
  high["partition"] = 3;
  auto e1 = errors_of(high);
  ASSERT_EQ(e1.size(), 1u);
  EXPECT_EQ(e1[0].field, "partition");
  EXPECT_EQ(e1[0].message, "must be less than partitions (3)");
  json ingest = part;
  ingest["kind"] = "ingest";
  auto e2 = errors_of(ingest);
  ASSERT_EQ(e2.size(), 1u);
  EXPECT_EQ(e2[0].field, "partitions");
  EXPECT_TRUE(
      has_field(errors_of(json{{"pcap_files", {"p"}}, {"output_path", "o"}, {"partitions", 0}}),
                "partitions"));
  json merge = base;
  merge["kind"] = "merge";
  merge["filter"] = "tcp";
  auto e3 = errors_of(merge);
  ASSERT_EQ(e3.size(), 1u);
  EXPECT_EQ(e3[0].field, "filter");
}

TEST(Validation, ParallelismSplitsOnlyAConversionWithoutPartitions) {
  const json base = {{"pcap_files", {"p"}}, {"output_path", "o"}};
  std::vector<FieldError> errors;
  json split = base;
  split["parallelism"] = 4;
  auto r = parse_task_request(split, errors);
  ASSERT_TRUE(r) << (errors.empty() ? "" : errors[0].message);
  EXPECT_EQ(r->extras.parallelism, 4u);
  EXPECT_NE(r->normalised.find("\"parallelism\":4"), std::string::npos);
  EXPECT_EQ(parse_task_request(base, errors)->normalised.find("parallelism"), std::string::npos)
      << "not at its default: not in the stored text (fingerprints of older requests hold)";
  json ingest = split;
  ingest["kind"] = "ingest";
  auto e1 = errors_of(ingest);
  ASSERT_EQ(e1.size(), 1u);
  EXPECT_EQ(e1[0].field, "parallelism");
  EXPECT_EQ(e1[0].message, "applies to kind convert only, not ingest");
  json both = split;
  both["partitions"] = 2;
  EXPECT_TRUE(has_field(errors_of(both), "parallelism"));
  for (int bad : {0, 65}) {
    json out_of_range = base;
    out_of_range["parallelism"] = bad;
    EXPECT_TRUE(has_field(errors_of(out_of_range), "parallelism")) << bad;
  }
}

TEST(Validation, AnAutomaticSplitTakesTheConfiguredPartsOrTheWorkersAboveItsThreshold) {
  EXPECT_EQ(auto_parallelism(10u << 30, 0, 4, 8), 1u) << "off";
  EXPECT_EQ(auto_parallelism(999, 1000, 4, 8), 1u) << "below the threshold";
  EXPECT_EQ(auto_parallelism(1000, 1000, 4, 8), 4u);
  EXPECT_EQ(auto_parallelism(1000, 1000, 0, 8), 8u) << "as many parts as workers";
  EXPECT_EQ(auto_parallelism(1000, 1000, 0, 1), 1u) << "one worker: nothing to split across";
  EXPECT_EQ(auto_parallelism(1000, 1000, 0, 0), 1u) << "no broker answer";
  EXPECT_EQ(auto_parallelism(1000, 1000, 0, 200), 64u) << "at most 64 parts";
  ParsedRequest r;
  r.spec.inputs = {"a.pcap"};
  r.spec.output = "a.ipfix";
  set_parallelism(r, 3);
  EXPECT_EQ(r.extras.parallelism, 3u);
  EXPECT_NE(r.normalised.find("\"parallelism\":3"), std::string::npos) << r.normalised;
}
