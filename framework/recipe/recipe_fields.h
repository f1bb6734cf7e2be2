// The one table of recipe keys, and what each entry knows how to do.
//
// Internal to framework/recipe/. Every recipe key is one row of the table in
// recipe_fields.cpp: its section and name, where it lives in `Recipe`, which values it
// accepts and a one-line description. Parsing a YAML file, applying `--set`, writing the
// resolved recipe back to YAML, re-checking a recipe built in code and generating
// docs/recipes.md all walk this same table, so adding a key is one line and none of
// those can forget it.
#pragma once
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "framework/recipe/recipe.h"

namespace tessera::recipe_detail {

// Where a field lives inside one Recipe: a pointer to it, typed, so that the code that
// parses and prints a value can dispatch on the C++ type with std::visit.
// Keys with a fixed set of words are enums (to_string / from_string in recipe.h); they
// read, print and document as strings.
using Slot = std::variant<int*, int64_t*, uint64_t*, double*, bool*, std::string*, Precision*,
                          Device*, GradReduce*, CommBackend*, PipelineSchedule*,
                          AttentionEngine*>;
using ConstSlot = std::variant<const int*, const int64_t*, const uint64_t*, const double*,
                               const bool*, const std::string*, const Precision*,
                               const Device*, const GradReduce*, const CommBackend*,
                               const PipelineSchedule*, const AttentionEngine*>;

// Which values a single field accepts (cross-field constraints are in validate_recipe).
struct Rule {
  // Numeric bounds, for integer and floating-point fields.
  std::optional<double> min, max;
  bool min_exclusive = false, max_exclusive = false;
  // String fields: the allowed words. Empty = any string.
  std::vector<std::string> choices;
  // With choices: any other non-empty string is a path (checkpoint.resume: none|auto|PATH).
  bool or_path = false;
  bool non_empty = false;  // string fields: "" is not allowed
};

struct Field {
  std::string section;  // "train"
  std::string key;      // "steps"
  Slot (*slot)(Recipe&);
  ConstSlot (*const_slot)(const Recipe&);
  Rule rule;
  std::string doc;  // one line, for docs/recipes.md

  std::string name() const { return section + "." + key; }  // "train.steps"
};

struct Section {
  std::string name;  // "train"
  std::string doc;   // one line
};

// The sections in the order they are written and documented.
const std::vector<Section>& sections();
// Every field, grouped by section in the order of sections().
const std::vector<Field>& fields();

const Section* find_section(const std::string& name);
const Field* find_field(const std::string& section, const std::string& key);

// "an integer >= 1", "one of fp32, bf16, fp16", "true or false", ...
std::string expectation(const Field& field);
// The short form for the docs' "allowed" column: ">= 1", "fp32, bf16, fp16", ...
std::string allowed_values(const Field& field);
// "integer", "number", "boolean" or "string".
std::string type_name(const Field& field);

// The field's current value in `recipe`, as YAML scalar text that set_field reads back
// to the same value ("6e-05", "true", "data/*.bin").
std::string value_text(const Field& field, const Recipe& recipe);

// Parses `text` (a YAML scalar's text; is_null when YAML had no value at all) into the
// field, checking its type and Rule. Returns an empty string on success, else what went
// wrong without the location ("expected an integer >= 1, got 0"); the recipe is then
// unchanged.
std::string set_field(const Field& field, Recipe& recipe, const std::string& text,
                      bool is_null);

// Checks the field's current value against its Rule: empty string if it holds, else the
// same kind of message as set_field. For recipes built in code rather than parsed.
std::string check_field(const Field& field, const Recipe& recipe);

// " (known keys in train: steps, global_batch, ...); did you mean 'steps'?" for an
// unknown key in a known section, and the same for an unknown section.
std::string unknown_key_hint(const std::string& section, const std::string& key);
std::string unknown_section_hint(const std::string& section);

}  // namespace tessera::recipe_detail
