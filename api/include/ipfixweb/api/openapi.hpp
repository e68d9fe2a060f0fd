// The OpenAPI 3.0 document served at /openapi.json (docs/api.md, "The API description").
//
// Every operation is described in openapi.cpp: its summary, parameters, request body and
// answers, with examples. What the domain defines is not copied there but taken from the
// definitions the code itself uses: the task request from kTaskSpecFields (task_spec.hpp),
// states and cancel results from vocabulary.hpp, the flow record's fields, /top's dimensions
// and metrics and /timeseries's dimensions from the flow store's schema (flows/schema.hpp), the
// drop folder's outcomes (drop_folder.hpp), the capture formats (capture/format.hpp), the page's
// files (ui_routes.hpp), the limits of the list routes.
//
// The document the api serves adds what its router knows of each route (openapi_document):
// which routes need a token (security, 401), which need more than the read role (403), and
// the answers the HTTP server itself gives on every route (400, 413, 431, 503 when full, 500
// when a handler fails).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/http.hpp"

namespace ipfixweb::api {

// The description of every operation, without what the router adds.
nlohmann::json openapi_description();

// The served document for these routes (the router's). Throws std::logic_error naming each
// registered route that is not described and each described operation that is not registered:
// the api does not start with a description that differs from what it serves.
std::string openapi_document(const std::vector<const http::Route*>& routes);

// Registered routes that the document leaves out on purpose: "GET /ui/" (the same as
// "GET /ui"; OpenAPI linters refuse a path with a trailing slash).
bool undescribed_alias(const std::string& method, const std::string& path);

}  // namespace ipfixweb::api
