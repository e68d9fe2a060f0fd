// The OpenAPI 3 description served at /openapi.json. A test checks it
// against the routes the server really answers.
#pragma once

#include <string>

namespace ipfixweb::api {

const std::string& openapi_document();

}  // namespace ipfixweb::api
