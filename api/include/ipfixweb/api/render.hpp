// Rendering tasks as JSON text without re-parsing what is stored: the
// request and summary columns already hold JSON and are spliced in as is.
// (Parsing and re-serialising the summary dominated status reads.)
#pragma once

#include <string>
#include <string_view>

#include "ipfixweb/shared/json_writer.hpp"
#include "ipfixweb/shared/store.hpp"

namespace ipfixweb::api {

// Appends the public JSON form of a task (docs/api.md). `output_root` is
// stripped from the stored absolute output path to show the user's path.
void append_task_json(std::string& out, const TaskRecord& t, std::string_view output_root);
// The same, as the next value of a document being written.
void write_task_json(JsonWriter& w, const TaskRecord& t, std::string_view output_root);

}  // namespace ipfixweb::api
